"""Ray rollout workers (rftkit/dist/rollout_workers.py) against the in-process engine.

One worker must give bit for bit what `GENERATORS.bind("kv")(model, tok)` gives (tokens,
log-probs, mask, texts); after an optimizer step + `bump` the workers sample from the new
weights; two workers give the chunks the in-process engine samples with the chunk seeds; the
built-in GPT and a Hugging Face Qwen2 with PEFT LoRA adapters travel to the actors.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

ray = pytest.importorskip("ray")

from rftkit.config_parts import DistCfg  # noqa: E402
from rftkit.dist.rollout_workers import RolloutService, chunk_bounds, chunk_seed  # noqa: E402
from rftkit.model.io import build_model  # noqa: E402
from rftkit.model.tokenizer import CharTokenizer  # noqa: E402
from rftkit.rollout.base import GENERATORS, SamplingParams  # noqa: E402
from rftkit.rollout.weights import bump  # noqa: E402

TOK = CharTokenizer()
TEXTS = ["add:12+3=", "str:reverse(abcdef)=", "x=", "sort:5,3,9,1=", "cd:1,2,3->6=", "q"]
PARAMS = SamplingParams(n=3, max_new_tokens=24, temperature=1.0, seed=11)
FIELDS = ("tokens", "logp", "mask", "prompt_lens", "truncated")


@pytest.fixture(scope="module", autouse=True)
def cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def tiny_gpt(seed: int = 0):
    torch.manual_seed(seed)
    return build_model("nano", 64, TOK)


def prompts(tok=TOK, texts=TEXTS) -> list[list[int]]:
    return [[tok.bos_id] + tok.encode(t) for t in texts]


def service(model, tok=TOK, workers: int = 1) -> RolloutService:
    return RolloutService("kv", model, tok, DistCfg(rollout_workers=workers), threads=torch.get_num_threads())


def assert_same(got, want) -> None:
    for f in FIELDS:
        a, b = getattr(got, f), getattr(want, f)
        assert a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b), f
    assert got.texts == want.texts


def test_chunks_are_contiguous_and_balanced():
    assert chunk_bounds(7, 3) == [(0, 3), (3, 5), (5, 7)]
    assert chunk_bounds(2, 4) == [(0, 1), (1, 2)]  # never an empty chunk when there are prompts
    assert chunk_bounds(0, 2) == [(0, 0)]
    assert chunk_seed(5, 0) == 5 and chunk_seed(5, 1) != chunk_seed(5, 2) != 5
    assert chunk_seed(5, 1) == chunk_seed(5, 1) < 2**56


def test_one_worker_is_bit_identical_to_the_in_process_engine():
    model = tiny_gpt()
    svc = service(model)
    try:
        ps = prompts()
        for params in (PARAMS, replace(PARAMS, temperature=0.0, n=1), replace(PARAMS, top_k=5, stop=("=",))):
            assert_same(svc.generate(ps, params), GENERATORS.bind("kv")(model, TOK).generate(ps, params))
        assert svc.metrics() == {"dist/rollout_restarts": 0.0, "dist/rollout_workers": 1.0}
    finally:
        svc.close()


def _sgd_step(model) -> None:
    """One optimizer step on a next-token loss, then the version bump the update does."""
    ids = torch.tensor(prompts()[1:2])
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    logits = model(ids[:, :-1])
    torch.nn.functional.cross_entropy(logits.flatten(0, 1), ids[:, 1:].flatten()).backward()
    opt.step()
    bump(model)


def test_weights_sync_after_an_optimizer_step():
    model = tiny_gpt(1)
    svc = service(model)
    try:
        ps = prompts()
        before = svc.generate(ps, PARAMS)
        _sgd_step(model)
        after = svc.generate(ps, PARAMS)
        assert_same(after, GENERATORS.bind("kv")(model, TOK).generate(ps, PARAMS))
        assert not torch.equal(before.logp, after.logp)  # the new weights were really used
        with torch.no_grad():  # weights written in place without a bump are not sent
            for p in model.parameters():
                p.mul_(0.5)
        assert_same(svc.generate(ps, PARAMS), after)
    finally:
        svc.close()


def test_two_workers_give_the_chunks_sampled_in_process_with_the_chunk_seeds():
    model = tiny_gpt(2)
    svc = service(model, workers=2)
    try:
        assert len(set(svc.worker_pids())) == 2
        ps = prompts()[:5]
        got = svc.generate(ps, PARAMS)
        engine = GENERATORS.bind("kv")(model, TOK)
        n = PARAMS.n
        for c, (lo, hi) in enumerate(chunk_bounds(len(ps), 2)):
            want = engine.generate(ps[lo:hi], replace(PARAMS, seed=chunk_seed(PARAMS.seed, c)))
            rows, width = slice(lo * n, hi * n), want.tokens.shape[1]
            assert torch.equal(got.tokens[rows, :width], want.tokens)
            assert (got.tokens[rows, width:] == TOK.pad_id).all()
            for f in ("logp", "mask"):
                assert torch.equal(getattr(got, f)[rows, :width], getattr(want, f))
                assert (getattr(got, f)[rows, width:] == 0).all()
            assert torch.equal(got.prompt_lens[rows], want.prompt_lens)
            assert torch.equal(got.truncated[rows], want.truncated)
            assert got.texts[rows] == want.texts
        assert got.tokens.shape[0] == len(ps) * n
    finally:
        svc.close()


def test_an_hf_qwen2_with_lora_adapters_travels_and_syncs(tmp_path):
    """A PEFT-wrapped Hugging Face Qwen2 (the HF module travels inside it)."""
    pytest.importorskip("peft")
    from rftkit.model.hf import load_hf_policy
    from rftkit.model.hf_tokenizer import load_hf_tokenizer

    from hf_fixtures import tiny_qwen2

    folder = tiny_qwen2(tmp_path / "qwen2")
    tok = load_hf_tokenizer(folder)
    ps = [tok.prompt_ids(q) for q in ("What is 12 + 30?", "reverse abc")]
    params = replace(PARAMS, max_new_tokens=8)
    policy = load_hf_policy(folder, device="cpu", lora={"r": 4})
    svc = service(policy, tok)
    try:
        assert_same(svc.generate(ps, params), GENERATORS.bind("kv")(policy, tok).generate(ps, params))
        before = svc.generate(ps, params)
        with torch.no_grad():  # the adapters' weights sync too (B starts at 0: moving it changes the output)
            for name, p in policy.named_parameters():
                if "lora_B" in name:
                    p.normal_(0, 0.5)
        bump(policy)
        after = svc.generate(ps, params)
        assert_same(after, GENERATORS.bind("kv")(policy, tok).generate(ps, params))
        assert not torch.equal(before.logp, after.logp)
    finally:
        svc.close()
