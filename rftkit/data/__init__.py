"""Pools, samplers and demonstration sources; importing registers the built-in ones."""

from rftkit.data import demos, samplers  # noqa: F401
