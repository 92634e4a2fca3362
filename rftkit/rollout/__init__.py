"""Generation engines behind the `Generator` protocol; importing registers the built-in ones."""

from rftkit.rollout import hf_generate, kv_engine, vllm_engine  # noqa: F401  (register "hf_generate", "kv", "vllm")
