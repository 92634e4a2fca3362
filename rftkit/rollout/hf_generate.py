"""`model.generate` as a Generator: the fallback engine for Hugging Face models.

Same `generate(prompts, SamplingParams) -> Generation` contract and output layout as the
KV-cache engine (rollout/kv_engine.py), whose `right_pad` it shares.
"""

from __future__ import annotations

import contextlib

import torch
from torch import Tensor

from rftkit.model.hf import HFPolicy, autocast, require
from rftkit.rollout.base import GENERATORS
from rftkit.rollout.kv_engine import right_pad
from rftkit.types import Generation


def _stop_criteria(tf, tok, stop: tuple[str, ...], plen: int):
    class StopStrings(tf.StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs):
            texts = [tok.decode(r) for r in input_ids[:, plen:].tolist()]
            return torch.tensor([any(t.endswith(s) for s in stop) for t in texts], device=input_ids.device)

    return tf.StoppingCriteriaList([StopStrings()])


@GENERATORS.register("hf_generate")
class HFGenerateEngine:
    """The fallback Generator: `model.generate`, same output layout as the KV engine.

    Registered as GENERATORS "hf_generate" by `rftkit/rollout/__init__.py` (model/ is a leaf
    package and may not import rollout/, tests/test_codebase.py).

    logp is the log-probability of each sampled token under the temperature-scaled,
    unfiltered distribution (temperature 0 reports temperature 1), as the KV engine's. The
    model's own generation_config (e.g. an instruct model's top_p, repetition penalty) is
    replaced during the call by the given SamplingParams alone.
    """

    def __init__(self, model, tokenizer, *, max_batch: int = 256) -> None:
        self.model = model
        self.tok = tokenizer
        self.max_batch = max_batch

    @torch.no_grad()
    def generate(self, prompts: list[list[int]], params) -> Generation:
        rows = [p for p in prompts for _ in range(params.n)]
        hf = self.model.hf_model if isinstance(self.model, HFPolicy) else self.model
        device = next(hf.parameters()).device
        was_training = hf.training
        hf.eval()
        devices = [device] if device.type == "cuda" else []
        try:
            amp = autocast(self.model) if isinstance(self.model, HFPolicy) else contextlib.nullcontext()
            with torch.random.fork_rng(devices=devices), amp:  # the trainer's RNG stream stays untouched
                torch.manual_seed(params.seed)
                parts = [self._chunk(hf, rows[i : i + self.max_batch], params, device)
                         for i in range(0, len(rows), self.max_batch)]
        finally:
            hf.train(was_training)
        return right_pad(parts, self.tok)

    def _chunk(self, hf, rows: list[list[int]], params, device):
        tf = require("transformers")
        b, plen = len(rows), max(len(r) for r in rows)
        ids = torch.full((b, plen), self.tok.pad_id, dtype=torch.long, device=device)
        attn = torch.zeros((b, plen), dtype=torch.long, device=device)
        for i, r in enumerate(rows):
            ids[i, plen - len(r):] = torch.tensor(r, device=device)
            attn[i, plen - len(r):] = 1
        greedy = params.temperature <= 0
        sampling = {} if greedy else {"temperature": params.temperature, "top_k": params.top_k,
                                      "top_p": params.top_p}
        saved = hf.generation_config
        hf.generation_config = tf.GenerationConfig(pad_token_id=self.tok.pad_id, eos_token_id=self.tok.eos_id)
        try:
            # a VLM's rows name their images: it rebuilds the processor's inputs (pixels, grids)
            inputs = (self.model.generate_inputs(ids, attn) if hasattr(self.model, "generate_inputs")
                      else {"input_ids": ids, "attention_mask": attn})
            out = hf.generate(**inputs, do_sample=not greedy,
                              max_new_tokens=params.max_new_tokens, return_dict_in_generate=True,
                              output_logits=True, stopping_criteria=_stop_criteria(tf, self.tok, params.stop, plen)
                              if params.stop else None, **sampling)
        finally:
            hf.generation_config = saved
        new = out.sequences[:, plen:]
        scale = 1.0 if greedy else params.temperature
        lp = (torch.stack(out.logits, 1).float() / scale).log_softmax(-1).gather(-1, new[..., None]).squeeze(-1)
        lengths, done = self._finish(new, params.stop)
        return rows, new, lp, done, lengths

    def _finish(self, new: Tensor, stop: tuple[str, ...]) -> tuple[Tensor, Tensor]:
        """Per row: tokens up to and including eos or the first stop-string hit; finished?"""
        lengths, done = [], []
        for r in new.tolist():
            n, hit = len(r), False
            for t, tok in enumerate(r):
                if tok == self.tok.eos_id or (stop and any(self.tok.decode(r[: t + 1]).endswith(s) for s in stop)):
                    n, hit = t + 1, True
                    break
            lengths.append(n)
            done.append(hit)
        return torch.tensor(lengths), torch.tensor(done)
