"""The KV-cache engine against a naive no-cache sampler, and sampling filters."""

import torch

from rftkit.model.gpt import GPT, SIZES, GPTConfig
from rftkit.model.tokenizer import CharTokenizer
from rftkit.rollout.base import SamplingParams
from rftkit.rollout.kv_engine import KVCacheEngine
from rftkit.rollout.sampling import filter_logits

TOK = CharTokenizer()


def _model(seed=0):
    torch.manual_seed(seed)
    return GPT(GPTConfig(vocab_size=TOK.vocab_size, max_seq_len=64, **SIZES["nano"])).eval()


def _naive_greedy(model, prompt, steps):
    ids, lps = list(prompt), []
    with torch.no_grad():
        for _ in range(steps):
            lp = model(torch.tensor([ids]))[0, -1].float().log_softmax(-1)
            t = int(lp.argmax())
            ids.append(t)
            lps.append(float(lp[t]))
            if t == TOK.eos_id:
                break
    return ids, lps


PROMPTS = ["add:12+3=", "str:reverse(abcdef)=", "x=", "sort:5,3,9,1="]


def test_engine_matches_naive_sampler_at_temperature_zero():
    model = _model()
    prompts = [[TOK.bos_id] + TOK.encode(p) for p in PROMPTS]
    gen = KVCacheEngine(model, TOK, max_batch=3).generate(prompts,
                                                          SamplingParams(n=2, max_new_tokens=12, temperature=0))
    assert gen.tokens.shape[0] == 8
    for i, p in enumerate(prompts):
        ids, lps = _naive_greedy(model, p, 12)
        for row in (2 * i, 2 * i + 1):
            n = int(gen.mask[row].sum())
            assert gen.tokens[row, : len(p) + n].tolist() == ids
            got = gen.logp[row, len(p) : len(p) + n]
            assert torch.allclose(got, torch.tensor(lps), atol=1e-5)
            assert int(gen.prompt_lens[row]) == len(p)


def test_sampling_is_seeded_and_masks_are_consistent():
    model = _model(1)
    prompts = [[TOK.bos_id] + TOK.encode(p) for p in PROMPTS]
    params = SamplingParams(n=4, max_new_tokens=10, temperature=1.0, seed=7)
    a = KVCacheEngine(model, TOK).generate(prompts, params)
    b = KVCacheEngine(model, TOK).generate(prompts, params)
    c = KVCacheEngine(model, TOK).generate(prompts, SamplingParams(n=4, max_new_tokens=10, temperature=1.0, seed=8))
    assert torch.equal(a.tokens, b.tokens) and torch.equal(a.logp, b.logp)
    assert not torch.equal(a.tokens, c.tokens)
    assert (a.logp <= 0).all() and ((a.logp != 0) <= (a.mask > 0)).all()
    # the trainer's forward gives the same log-probs as the engine recorded
    from rftkit.model.logprobs import token_logprobs

    with torch.no_grad():
        lp, _ = token_logprobs(model, a.tokens)
    assert torch.allclose(lp * a.mask, a.logp, atol=1e-5)
    for row, text in enumerate(a.texts):
        n = int(a.mask[row].sum())
        gen_ids = a.tokens[row, int(a.prompt_lens[row]) : int(a.prompt_lens[row]) + n].tolist()
        assert TOK.decode([t for t in gen_ids if t != TOK.eos_id]) == text
        assert bool(a.truncated[row]) == (gen_ids[-1] != TOK.eos_id)


class _EosHeavy(torch.nn.Module):
    """The nano GPT with the eos logit raised, so rows end at different steps."""

    def __init__(self, model, boost=2.5):
        super().__init__()
        self.inner, self.boost, self.cfg = model, boost, model.cfg

    def new_cache(self, batch, max_len):
        return self.inner.new_cache(batch, max_len)

    def forward(self, ids, positions=None, key_mask=None, cache=None):
        logits = self.inner(ids, positions=positions, key_mask=key_mask, cache=cache).clone()
        logits[..., TOK.eos_id] += self.boost
        return logits


def test_finished_rows_leave_the_batch_without_changing_the_others():
    """Rows drop out of the decode batch as they finish (and a group's shared prompt is
    prefilled once): every row still equals a teacher-forced forward of its own sequence."""
    from rftkit.model.logprobs import token_logprobs

    model = _EosHeavy(_model(2)).eval()
    prompts = [[TOK.bos_id] + TOK.encode(p) for p in PROMPTS]
    gen = KVCacheEngine(model, TOK).generate(prompts, SamplingParams(n=6, max_new_tokens=14, temperature=1.0, seed=3))
    lengths = gen.mask.sum(1)
    assert len(set(lengths.tolist())) >= 3 and bool((~gen.truncated).any())  # rows ended at different steps
    with torch.no_grad():
        lp, _ = token_logprobs(model, gen.tokens)
    assert torch.allclose(lp * gen.mask, gen.logp, atol=1e-5)
    for row in range(gen.tokens.shape[0]):
        start, n = int(gen.prompt_lens[row]), int(lengths[row])
        comp = gen.tokens[row, start:start + n].tolist()
        assert TOK.eos_id not in comp[:-1]  # stops at its first eos
        assert bool(gen.truncated[row]) == (comp[-1] != TOK.eos_id)


def test_stop_strings_end_generation():
    model = _model(2)
    prompts = [[TOK.bos_id] + TOK.encode("add:1+1=")]
    free = KVCacheEngine(model, TOK).generate(prompts, SamplingParams(n=1, max_new_tokens=8, temperature=0))
    first = free.texts[0][:1]
    sp = SamplingParams(n=1, max_new_tokens=8, temperature=0, stop=(first,))
    stopped = KVCacheEngine(model, TOK).generate(prompts, sp)
    assert stopped.texts[0] == first and not bool(stopped.truncated[0])


def test_top_k_and_top_p_filters():
    logits = torch.tensor([[3.0, 2.0, 1.0, 0.0]])
    assert torch.isinf(filter_logits(logits, top_k=2)).tolist() == [[False, False, True, True]]
    # probs ~ [0.64, 0.24, 0.09, 0.03]: p=0.7 keeps the first two tokens
    assert torch.isinf(filter_logits(logits, top_p=0.7)).tolist() == [[False, False, True, True]]
    assert torch.isinf(filter_logits(logits, top_p=0.5)).tolist() == [[False, True, True, True]]
