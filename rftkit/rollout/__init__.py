"""Generation engines behind the `Generator` protocol; importing registers the built-in ones."""

from rftkit.rollout import kv_engine  # noqa: F401  (registers "kv")
from rftkit.model.hf import HFGenerateEngine  # noqa: E402
from rftkit.rollout.base import GENERATORS  # noqa: E402

GENERATORS.register("hf_generate")(HFGenerateEngine)
