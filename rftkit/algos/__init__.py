"""Algorithm math as pure, registered functions; importing registers the built-in ones."""

from rftkit.algos import advantages, kl, losses, objectives, schedules  # noqa: F401
