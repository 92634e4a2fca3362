"""Algorithm math as pure, registered functions; importing registers the built-in ones."""

from rftkit.algos import (  # noqa: F401
    advantages,
    hybrid,
    kl,
    losses,
    multiturn,
    objectives,
    offline,
    preference,
    process,
    schedules,
)
