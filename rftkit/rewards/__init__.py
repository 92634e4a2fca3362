"""Rewards and verifiers: rule-based and math verifiers, shaping, a code sandbox, learned rewards.

Importing this package registers its verifiers in `rftkit.tasks.base.VERIFIERS`:
"math" (math-verify, optional extra `math`), "numeric", "multiple_choice", "normalized_exact",
"r1_format", "answer_format", "regex", "list_partial", "similarity", "unit_tests" (sandbox).

    RewardSpec / Component     the typed composition (weighted sums, gates, cosine, overlong)
    RewardRunner, score_batch  batch scoring with isolation, per-call timeouts and fallbacks
    run_python / run_tests     the sandbox for model-written code
    RewardModel, rlpr_reward   learned / model-based rewards
    load_reward_fn             user reward functions from a file ("path.py:fn")

docs/rewards.md documents every part, its source and the proposed config keys. Nothing here
imports transformers or math-verify until it is used.
"""

from rftkit.rewards import code, math_verifier, verifiers  # noqa: F401  (registers the verifiers)
from rftkit.rewards.extract import boxed, extract_answer, last_number, normalize_text, parse_number
from rftkit.rewards.learned import RewardModel, RLPRReward, causal_lm_logprob_fn, rlpr_reward
from rftkit.rewards.runner import BatchScores, RewardCounts, RewardRunner, score_batch
from rftkit.rewards.sandbox import SandboxLimits, SandboxResult, run_python, run_tests
from rftkit.rewards.shaping import cosine_length_reward, overlong_penalty, repetition_penalty
from rftkit.rewards.spec import Component, CosineLength, Overlong, RewardFailure, RewardSpec, RewardVerdict
from rftkit.rewards.user_fn import FileRewardFn, RewardFnError, load_reward_fn

__all__ = [
    "Component", "CosineLength", "Overlong", "RewardSpec", "RewardVerdict", "RewardFailure",
    "RewardRunner", "BatchScores", "RewardCounts", "score_batch",
    "SandboxLimits", "SandboxResult", "run_python", "run_tests",
    "RewardModel", "RLPRReward", "rlpr_reward", "causal_lm_logprob_fn",
    "load_reward_fn", "FileRewardFn", "RewardFnError",
    "cosine_length_reward", "overlong_penalty", "repetition_penalty",
    "boxed", "extract_answer", "last_number", "normalize_text", "parse_number",
]
