"""Hybrid SFT<->RL mechanisms of the loop: demonstration providers and rollout-side mixing."""

import random

import torch

from rftkit.algos.advantages import ADVANTAGES
from rftkit.algos.layouts import GROUP_LAYOUTS, demo_prefix
from rftkit.algos.resample import RESAMPLERS
from rftkit.algos.shaping import REWARD_TRANSFORMS
from rftkit.data.demos import DEMO_SOURCES
from rftkit.data.samplers import UniformSampler
from rftkit.envs.episodes import EpisodeLimits
from rftkit.model.gpt import GPT, SIZES, GPTConfig
from rftkit.model.tokenizer import CharTokenizer
from rftkit.rewards.spec import RewardVerdict
from rftkit.rollout.base import SamplingParams
from rftkit.rollout.kv_engine import KVCacheEngine
from rftkit.train.step import rollout
from rftkit.train.update import UpdateState
from rftkit.types import Problem, RolloutBatch, Verdict

TOK = CharTokenizer()


def _problem(i: int) -> Problem:
    return Problem(task="t", prompt=f"add:{i}+1=", answer=str(i + 1), verifier="exact", demo=f"{i}+1;#{i + 1}")


POOL = [_problem(i) for i in range(6)]


def _batch(correct: list[list[bool]]) -> RolloutBatch:
    """A fake scored batch: group g holds rows whose correctness is correct[g]."""
    problems, verdicts, texts, gids = [], [], [], []
    for g, row in enumerate(correct):
        for j, ok in enumerate(row):
            problems.append(POOL[g])
            verdicts.append(Verdict(float(ok), "x", "r"))
            texts.append(f"own{g}{j}")
            gids.append(g)
    n = len(problems)
    z = torch.zeros(n, 3)
    return RolloutBatch(tokens=z.long(), mask=z, old_logp=z, group_ids=torch.tensor(gids),
                        rewards=torch.tensor([v.score for v in verdicts]), advantages=z,
                        truncated=torch.zeros(n, dtype=torch.bool), problems=problems, texts=texts, verdicts=verdicts)


def test_relift_buffers_exactly_the_all_fail_prompts_and_releases_their_demos():
    relift = DEMO_SOURCES.bind("relift", {"size": 2})(POOL)
    rng = random.Random(0)
    out, m = relift(POOL[:3], _batch([[False, False], [True, False], [False, False]]), rng)
    # groups 0 and 2 failed entirely, group 1 did not: the buffer fills to 2 and is released
    assert [(p.prompt, d) for p, d in out] == [(POOL[0].prompt, POOL[0].demo), (POOL[2].prompt, POOL[2].demo)]
    assert m["mix/sft_triggered"] == 1.0 and m["mix/buffer_size"] == 0.0
    out, m = relift(POOL[:2], _batch([[False, False], [True, True]]), rng)
    assert out == [] and m["mix/buffer_size"] == 1.0
    state = relift.state_dict()
    fresh = DEMO_SOURCES.bind("relift", {"size": 2})(POOL)
    fresh.load_state_dict(state)
    assert fresh.state_dict() == state


def test_raft_keeps_only_verified_samples_and_s3ft_prefers_own_answers():
    batch = _batch([[False, True, True], [False, False, False]])
    raft = DEMO_SOURCES.bind("self_correct", {"per_prompt": 5})(POOL)
    out, _ = raft(POOL[:2], batch, random.Random(0))
    assert [d for _, d in out] == ["own01", "own02"]
    s3ft = DEMO_SOURCES.bind("s3ft", {})(POOL)
    out, m = s3ft(POOL[:2], batch, random.Random(0))
    assert [d for _, d in out] == ["own01", POOL[1].demo] and m["mix/own_fraction"] == 0.5
    metis = DEMO_SOURCES.bind("metis", {})(POOL)
    out, m = metis(POOL[:3], _batch([[False, True], [False, False], [True, True]]), random.Random(0))
    # pass rate 1/2 -> own correct sample; 0 -> expert demo; 1 -> skipped
    assert [d for _, d in out] == ["own01", POOL[1].demo] and m["mix/expert_fraction"] == 1 / 3


class _Parts:
    """The attributes of StepParts the rollout reads, with the named rollout parts bound."""

    def __init__(self, groups=("on_policy", {}), resample=(), rewards=(), g: int = 4, scorer=None):
        torch.manual_seed(0)
        self.model = GPT(GPTConfig(vocab_size=TOK.vocab_size, max_seq_len=64, **SIZES["nano"]))
        self.tok, self.pool = TOK, POOL
        self.generator = KVCacheEngine(self.model, TOK)
        self.sampling = SamplingParams(n=g, max_new_tokens=6, temperature=1.0)
        self.batch_size = 3
        self.sampler = UniformSampler(POOL, 0)
        self.ref_model = self.teacher = self.critic = None
        self.rewards = scorer
        self.layout = GROUP_LAYOUTS.bind(*groups)
        self.resamplers = [RESAMPLERS.bind(n, p) for n, p in resample]
        self.transforms = [REWARD_TRANSFORMS.bind(n, p) for n, p in rewards]
        self.advantage = ADVANTAGES.bind("grpo")
        self.needs, self.prm = frozenset({"rollout"}), None
        self.episode_limits = EpisodeLimits()


def _rollout(parts, indices, seed, progress=0.0):
    return rollout(parts, indices, seed, UpdateState(), progress)


def test_luffy_places_demonstrations_in_each_group():
    parts = _Parts(groups=("demo_rows", {"rows": 1}))
    batch, metrics, stats = _rollout(parts, [0, 1, 2], seed=1)
    assert batch.offpolicy.tolist() == [False, False, False, True] * 3
    demo_rows = batch.offpolicy.nonzero().squeeze(1)
    assert all(batch.texts[r] == batch.problems[r].demo and batch.verdicts[r].correct for r in demo_rows)
    assert metrics["mix/offpolicy_fraction"] == 0.25 and len(stats) == 3


def test_prefix_rollouts_force_the_demo_prefix_outside_the_policy_mask():
    ratio = {"name": "linear", "params": {"start": 0.5, "end": 0.1}}
    parts = _Parts(groups=("prefix_rft", {"rows": 2, "ratio": ratio}))
    batch, metrics, _ = _rollout(parts, [3], seed=2, progress=0.0)
    demo = POOL[3].demo
    prefix = demo_prefix(demo, 0.5)
    assert demo_prefix(demo, 0.9) == demo[: round(0.9 * len(demo))] and demo_prefix("ab", 1.0) == "a"
    for row in range(4):
        pm, m = batch.prefix_mask[row], batch.mask[row]
        assert not bool((pm * m).any()), "a forced token is never a policy token"
        n_forced = int(pm.sum())
        assert n_forced == (len(prefix) if row < 2 else 0)
        if row < 2:
            assert batch.texts[row].startswith(prefix)
            start = int(pm.nonzero()[0])
            assert TOK.decode(batch.tokens[row, start : start + n_forced].tolist()) == prefix
    late = GROUP_LAYOUTS.bind("prefix_rft", {"rows": 2, "ratio": ratio})(POOL[3], 4, 1.0)
    assert late[0].prefix == demo_prefix(demo, 0.1), "the ratio follows its schedule over the stage"


def test_ghpo_hints_only_groups_that_all_fail():
    parts = _Parts(resample=[("ghpo_hints", {"levels": (0.5,)})])
    batch, metrics, _ = _rollout(parts, [0, 1, 2], seed=3)
    # an untrained model fails everything, so every group is re-sampled from a hint
    assert metrics["mix/hinted_fraction"] == 1.0
    assert all(t.startswith(demo_prefix(p.demo, 0.5)) for t, p in zip(batch.texts, batch.problems))
    assert batch.prefix_mask is None  # hints are prompt, not trained


def test_dynamic_sampling_drop_returns_no_batch_when_every_group_is_uniform():
    parts = _Parts(resample=[("dynamic_sampling", {"mode": "drop"})])
    batch, metrics, stats = _rollout(parts, [0, 1, 2], seed=4)
    assert batch is None and metrics["rollout/empty_batch"] == 1.0 and len(stats) == 3


class _LengthShaped:
    """A reward runner whose rewards are shaped by length (like a format bonus or the runner's
    overlong term) while every answer is wrong."""

    def score(self, problems, texts, lengths):
        verdicts = [RewardVerdict(0.0, None, "wrong", reward=-n / 100) for n in lengths]
        return verdicts, {}


def test_dynamic_sampling_filters_on_accuracy_not_the_shaped_reward():
    """Every answer is wrong but the shaped rewards differ within a group (different lengths);
    DAPO keeps only groups with 0 < #correct < G, so every group is dropped."""
    parts = _Parts(resample=[("dynamic_sampling", {"mode": "drop"})], scorer=_LengthShaped())
    batch, metrics, stats = _rollout(parts, [0, 1, 2], seed=4)
    assert any(s.reward_std > 0 for s in stats), "the shaped rewards must differ within a group"
    assert batch is None and metrics["rollout/empty_batch"] == 1.0
    assert metrics["adv/zero_std_frac_sampled"] == 1.0


def test_dynamic_sampling_refill_stops_after_max_rounds():
    parts = _Parts(resample=[("dynamic_sampling", {"mode": "refill", "max_rounds": 2})])
    batch, metrics, stats = _rollout(parts, [0, 1, 2], seed=5)
    assert metrics["rollout/refill_rounds"] == 2.0 and len(stats) == 9


def test_reward_transforms_apply_in_order_after_verification():
    """The overlong penalty lands on the batch's rewards (and so on the advantages); truncation
    masking zeroes the loss mask of rows that hit the budget."""
    plain = _rollout(_Parts(), [0, 1, 2], seed=6)[0]
    shaped = _rollout(_Parts(rewards=[("dapo_overlong", {"cache": 3}), ("mask_truncated", {})]), [0, 1, 2], seed=6)[0]
    lengths = plain.mask.sum(1)
    expected = plain.rewards + torch.where(lengths <= 3, 0.0, (3 - lengths) / 3)
    assert torch.equal(shaped.tokens, plain.tokens) and torch.allclose(shaped.rewards, expected)
    assert torch.equal(shaped.mask, plain.mask * (~plain.truncated).float()[:, None])
    assert plain.truncated.any(), "the 6-token budget truncates some rows of an untrained model"
