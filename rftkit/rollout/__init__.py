"""Generation engines behind the `Generator` protocol; importing registers the built-in ones."""

from rftkit.rollout import kv_engine  # noqa: F401  (registers "kv")
