"""Algorithm math as pure, registered functions; importing registers the built-in ones."""

from rftkit.algos import advantages, hybrid, kl, losses, objectives, offline, preference, process, schedules  # noqa: F401
