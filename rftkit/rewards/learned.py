"""Learned and model-based rewards, as batch reward fns `(prompts, completions, answers) -> [N]`.

    RewardModel(path)        a local AutoModelForSequenceClassification (optional extra `hf`),
                             batched; the reward is the logit of `label` (optionally sigmoid)
    rlpr_reward(...)         RLPR (Yu et al. 2025, arXiv:2506.18254): the policy's mean per-token
                             probability of the reference answer after its own reasoning,
                             debiased by the same probability without reasoning, clipped to [0, 1]
    RLPRReward(logprob_fn)   rlpr_reward as a batch fn for a RewardSpec component
    causal_lm_logprob_fn     a LogprobFn for any causal LM returning logits [B, T, V] (the
                             built-in GPT or a Hugging Face model)

They run inline (in the caller's process: they hold a model, usually on the GPU).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

LogprobFn = Callable[[list[str], list[str]], list[list[float]]]
"""(contexts, targets) -> for each pair, log p(target token t | context, target tokens < t)."""

ANSWER_MARKERS = ("<answer>", "\\boxed{", "####")


def _transformers():
    try:
        import transformers
    except ImportError as e:
        raise ImportError("RewardModel needs transformers: pip install 'rftkit[hf]'") from e
    return transformers


class RewardModel:
    """Scalar rewards from a sequence-classification model saved in a local directory.

    The text scored is the chat template of [user: prompt, assistant: completion] when the
    tokenizer has one (use_chat_template), else prompt + completion; truncated from the left to
    max_length tokens so the end of the completion is always seen."""

    isolation = "inline"

    def __init__(self, path: str, *, batch_size: int = 8, max_length: int = 2048, device: str | None = None,
                 label: int = 0, sigmoid: bool = False, use_chat_template: bool = True,
                 trust_remote_code: bool = False) -> None:
        tf = _transformers()
        self.tok = tf.AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
        self.model = tf.AutoModelForSequenceClassification.from_pretrained(path, trust_remote_code=trust_remote_code)
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.model.to(self.device).eval()
        if self.tok.pad_token is None:
            self.tok.pad_token = self.tok.eos_token
        self.model.config.pad_token_id = self.tok.pad_token_id
        self.tok.padding_side, self.tok.truncation_side = "right", "left"
        self.batch_size, self.max_length, self.label, self.sigmoid = batch_size, max_length, label, sigmoid
        self.use_chat_template = use_chat_template and getattr(self.tok, "chat_template", None) is not None

    def texts(self, prompts: Sequence[str], completions: Sequence[str]) -> list[str]:
        if not self.use_chat_template:
            return [p + c for p, c in zip(prompts, completions)]
        return [self.tok.apply_chat_template([{"role": "user", "content": p}, {"role": "assistant", "content": c}],
                                             tokenize=False) for p, c in zip(prompts, completions)]

    @torch.no_grad()
    def __call__(self, prompts: list[str], completions: list[str], answers: list[str] | None = None) -> list[float]:
        texts, out = self.texts(prompts, completions), []
        for lo in range(0, len(texts), self.batch_size):
            enc = self.tok(texts[lo : lo + self.batch_size], padding=True, truncation=True,
                           max_length=self.max_length, return_tensors="pt").to(self.device)
            logits = self.model(**enc).logits[:, self.label].float()
            out += (torch.sigmoid(logits) if self.sigmoid else logits).tolist()
        return out


def reasoning_context(completion: str, markers: Sequence[str] = ANSWER_MARKERS, default_marker: str = "") -> str:
    """The completion up to and including its last answer marker (the reasoning z, ready for y*);
    without a marker, the whole completion + default_marker."""
    best = max(((completion.rfind(m), m) for m in markers), default=(-1, ""))
    pos, marker = best
    return completion[: pos + len(marker)] if pos >= 0 else completion + default_marker


def _marker_of(completion: str, markers: Sequence[str], default_marker: str) -> str:
    pos, marker = max(((completion.rfind(m), m) for m in markers), default=(-1, ""))
    return marker if pos >= 0 else default_marker


def _mean_prob(rows: list[list[float]]) -> list[float]:
    return [sum(math.exp(x) for x in r) / len(r) if r else 0.0 for r in rows]


def rlpr_reward(prompts: Sequence[str], completions: Sequence[str], references: Sequence[str],
                logprob_fn: LogprobFn, *, debias: bool = True, markers: Sequence[str] = ANSWER_MARKERS,
                default_marker: str = "") -> list[float]:
    """RLPR probability reward, one float in [0, 1] per completion.

    Yu et al. 2025, "RLPR: Extrapolating RLVR to General Domains without Verifiers"
    (arXiv:2506.18254): the generated answer y is replaced by the reference y*, and
        r = (1/|y*|) sum_t pi(y*_t | x, z, y*_<t)          (mean per-token probability, not the product)
    debiased by r' = the same with no reasoning (x, marker, y*):  r_hat = clip(r - r', 0, 1).
    z is the completion up to its last answer marker (reasoning_context). With debias=False the
    reward is r itself (also in [0, 1]).
    """
    contexts = [p + reasoning_context(c, markers, default_marker) for p, c in zip(prompts, completions)]
    r = _mean_prob(logprob_fn(contexts, list(references)))
    if not debias:
        return r
    bare = [p + _marker_of(c, markers, default_marker) for p, c in zip(prompts, completions)]
    keys = sorted(set(zip(bare, references)))
    base = dict(zip(keys, _mean_prob(logprob_fn([k[0] for k in keys], [k[1] for k in keys]))))
    return [min(max(ri - base[(b, y)], 0.0), 1.0) for ri, b, y in zip(r, bare, references)]


class RLPRReward:
    """rlpr_reward as a batch reward fn (answers are the references)."""

    isolation = "inline"

    def __init__(self, logprob_fn: LogprobFn, *, debias: bool = True, markers: Sequence[str] = ANSWER_MARKERS,
                 default_marker: str = "") -> None:
        self.logprob_fn, self.debias = logprob_fn, debias
        self.markers, self.default_marker = tuple(markers), default_marker

    def __call__(self, prompts: list[str], completions: list[str], answers: list[str]) -> list[float]:
        return rlpr_reward(prompts, completions, answers, self.logprob_fn, debias=self.debias,
                           markers=self.markers, default_marker=self.default_marker)


def causal_lm_logprob_fn(model: torch.nn.Module, encode: Callable[[str], list[int]], *, bos: Sequence[int] = (),
                         batch_size: int = 8, device: str | torch.device | None = None) -> LogprobFn:
    """A LogprobFn for a causal LM: model(ids [B, T]) -> logits [B, T, V] (or an output with .logits).

    Context and target are encoded separately (ids = bos + encode(context) + encode(target)), so
    the target's tokens are exactly encode(target); rows are right-padded, which needs no
    attention mask for a causal model. Runs under no_grad in the model's current mode."""
    dev = device or next(model.parameters()).device

    @torch.no_grad()
    def fn(contexts: list[str], targets: list[str]) -> list[list[float]]:
        out: list[list[float]] = []
        for lo in range(0, len(contexts), batch_size):
            chunk = zip(contexts[lo : lo + batch_size], targets[lo : lo + batch_size])
            pairs = [(list(bos) + encode(c), encode(t)) for c, t in chunk]
            if any(not c for c, _ in pairs):
                raise ValueError("an empty context has no token to predict the target from: pass bos")
            width = max(len(c) + len(t) for c, t in pairs)
            ids = torch.zeros(len(pairs), width, dtype=torch.long)
            for i, (c, t) in enumerate(pairs):
                ids[i, : len(c) + len(t)] = torch.tensor(c + t, dtype=torch.long)
            res = model(ids.to(dev))
            logits = (res.logits if hasattr(res, "logits") else res).float()
            logp = F.log_softmax(logits[:, :-1], dim=-1).gather(-1, ids[:, 1:].to(dev).unsqueeze(-1)).squeeze(-1)
            for i, (c, t) in enumerate(pairs):
                out.append(logp[i, len(c) - 1 : len(c) - 1 + len(t)].tolist())
        return out

    return fn


__all__ = ["RewardModel", "rlpr_reward", "RLPRReward", "causal_lm_logprob_fn", "reasoning_context", "LogprobFn"]
