"""Multi-turn credit assignment and tool-use rewards (rftkit/algos/multiturn.py) against
hand-computed numbers, and their wiring in the step (CPU, fast)."""

import math

import pytest
import torch

from rftkit.algos.advantages import ADVANTAGES
from rftkit.algos.layouts import GROUP_LAYOUTS
from rftkit.algos.multiturn import episode_info, turn_layout
from rftkit.algos.objectives import OBJECTIVES
from rftkit.algos.shaping import REWARD_TRANSFORMS, RewardBatch
from rftkit.data.samplers import UniformSampler
from rftkit.envs.base import ENVS, EnvBase, StepResult
from rftkit.envs.episodes import EpisodeLimits
from rftkit.model.gpt import GPT, SIZES, GPTConfig
from rftkit.model.tokenizer import CharTokenizer
from rftkit.rollout.base import SamplingParams
from rftkit.rollout.kv_engine import KVCacheEngine
from rftkit.train.step import Term, rollout
from rftkit.train.update import UpdateState
from rftkit.types import Episode, Problem


def A(x):
    """Approximately x: the estimators add eps = 1e-6 to their std denominators."""
    return pytest.approx(x, abs=1e-5)


R2 = 1 / math.sqrt(2)  # a group of two, normalized: +-1/sqrt(2)


def two_turn_batch():
    """Two episodes of one group, T = 10.
    row 0: prompt 0-1 | turn 1: 2-3 | observation 4-5 | turn 2: 6-7 | pad 8-9; env rewards 0.5, 0; outcome 0
    row 1: prompt 0   | turn 1: 1-3 | observation 4   | turn 2: 5-8 | pad 9;   env rewards 0, 0;   outcome 1
    """
    mask = torch.zeros(2, 10)
    mask[0, [2, 3, 6, 7]] = 1.0
    mask[1, [1, 2, 3, 5, 6, 7, 8]] = 1.0
    ends = torch.zeros(2, 10)
    ends[0, [3, 7]] = 1.0
    ends[1, [3, 8]] = 1.0
    env = torch.zeros(2, 10)
    env[0, 3] = 0.5
    rewards = torch.tensor([0.5, 1.0])  # outcome + sum of env turn rewards
    return rewards, mask, ends, env


def rbatch(mask, rewards_n=None, turn_ends=None, turn_rewards=None, info=None):
    n, t = mask.shape
    return RewardBatch(mask, mask.sum(1), torch.zeros(n, dtype=torch.bool), torch.zeros(n, dtype=torch.bool),
                       torch.zeros(n, t), None, t, None, n, turn_ends=turn_ends, turn_rewards=turn_rewards,
                       episode_info=info)


def token_rewards_of_two_turns():
    rewards, mask, ends, env = two_turn_batch()
    return REWARD_TRANSFORMS.get("turn_rewards")(rewards, rbatch(mask, turn_ends=ends, turn_rewards=env)).rewards


def test_turn_layout_and_turn_rewards_by_hand():
    _, mask, ends, _ = two_turn_batch()
    _, idx, count = turn_layout(ends, mask)
    assert count.tolist() == [2, 2]
    assert idx[0, :8].tolist() == [0, 0, 0, 0, 1, 1, 1, 1]  # the observation belongs to the next turn (mask 0)
    tok = token_rewards_of_two_turns()
    want = torch.zeros(2, 10)
    want[0, 3], want[0, 7] = 0.5, 0.0  # env reward at turn 1's end; outcome 0.5 - 0.5 = 0 at the last end
    want[1, 8] = 1.0  # outcome 1 at the last turn end
    assert torch.equal(tok, want)
    # without turn ends (a one-turn batch) the whole reward sits on the last trained token
    one = REWARD_TRANSFORMS.get("turn_rewards")(torch.tensor([0.5, 1.0]), rbatch(mask)).rewards
    assert one[0, 7] == 0.5 and one[1, 8] == 1.0 and float(one.abs().sum()) == 1.5


def test_turn_grpo_by_hand():
    """G_k = r_k + gamma G_{k+1}. gamma 0.5: row 0 G = [0.5 + 0.5 * 0, 0] = [0.5, 0], row 1
    G = [0 + 0.5 * 1, 1] = [0.5, 1]: equal first turns get 0, the second turns +-1/sqrt(2)."""
    _, mask, ends, _ = two_turn_batch()
    tok, g = token_rewards_of_two_turns(), torch.tensor([0, 0])
    fn = ADVANTAGES.get("turn_grpo")
    adv, returns = fn(tok, g, mask, turn_ends=ends, gamma=0.5)
    assert returns is None
    assert adv[0].tolist() == A([0, 0, 0, 0, 0, 0, -R2, -R2, 0, 0])
    assert adv[1].tolist() == A([0, 0, 0, 0, 0, R2, R2, R2, R2, 0])
    # gamma 1: G row 0 = [0.5, 0], row 1 = [1, 1] -> each turn index: -+1/sqrt(2)
    adv, _ = fn(tok, g, mask, turn_ends=ends, gamma=1.0)
    assert adv[0, [2, 3, 6, 7]].tolist() == A([-R2] * 4) and adv[1, [1, 2, 3, 5, 6, 7, 8]].tolist() == A([R2] * 7)
    # by="group": the set is every turn's return of the group, gamma 0.5: {0.5, 0, 0.5, 1}
    adv, _ = fn(tok, g, mask, turn_ends=ends, gamma=0.5, by="group")
    mean, std = 0.5, math.sqrt((0 + 0.25 + 0 + 0.25) / 3)
    assert adv[0, [2, 6]].tolist() == A([0.0, (0 - mean) / std]) and adv[1, [1, 5]].tolist() == A([0.0, 0.5 / std])


def test_turn_gae_by_hand():
    """gamma 0.9, lam 0.5; V before each turn = values at the turn's first token.
    row 0: V = [0.2, 0.4], r = [0.5, 0]: A_1 = 0 - 0.4 = -0.4, A_0 = 0.5 + 0.9 * 0.4 - 0.2 + 0.45 * -0.4 = 0.48
    row 1: V = [0.1, 0.6], r = [0, 1]:   A_1 = 1 - 0.6 = 0.4,   A_0 = 0 + 0.9 * 0.6 - 0.1 + 0.45 * 0.4 = 0.62
    returns R_k = A_k + V_k: row 0 [0.68, 0], row 1 [0.72, 1.0]."""
    _, mask, ends, _ = two_turn_batch()
    torch.manual_seed(0)
    values = torch.rand(2, 10)
    values[0, [2, 6]] = torch.tensor([0.2, 0.4])
    values[1, [1, 5]] = torch.tensor([0.1, 0.6])
    values = values * mask  # as the step passes them
    adv, ret = ADVANTAGES.get("turn_gae")(token_rewards_of_two_turns(), torch.tensor([0, 0]), mask, values=values,
                                          turn_ends=ends, gamma=0.9, lam=0.5, whiten=False)
    assert adv[0].tolist() == A([0, 0, 0.48, 0.48, 0, 0, -0.4, -0.4, 0, 0])
    assert adv[1].tolist() == A([0, 0.62, 0.62, 0.62, 0, 0.4, 0.4, 0.4, 0.4, 0])
    assert ret[0].tolist() == A([0, 0, 0.68, 0.68, 0, 0, 0.0, 0.0, 0, 0])
    assert ret[1].tolist() == A([0, 0.72, 0.72, 0.72, 0, 1.0, 1.0, 1.0, 1.0, 0])


def test_turn_gae_with_lambda_one_gamma_one_and_zero_values_is_the_return_to_go():
    rewards, mask, ends, env = two_turn_batch()
    env[1, 3] = 0.25  # a turn reward on row 1 too: its return-to-go is [0.25 + outcome, outcome]
    rewards = torch.tensor([0.5, 1.25])
    tok = REWARD_TRANSFORMS.get("turn_rewards")(rewards, rbatch(mask, turn_ends=ends, turn_rewards=env)).rewards
    adv, ret = ADVANTAGES.get("turn_gae")(tok, torch.tensor([0, 1]), mask, values=torch.zeros(2, 10),
                                          turn_ends=ends, gamma=1.0, lam=1.0, whiten=False)
    assert adv[0, [2, 3, 6, 7]].tolist() == A([0.5, 0.5, 0.0, 0.0])
    assert adv[1, [1, 2, 3, 5, 6, 7, 8]].tolist() == A([1.25] * 3 + [1.0] * 4)
    assert torch.equal(adv, ret)


def test_turn_grpo_with_one_turn_is_grpo_exactly():
    torch.manual_seed(3)
    n, t = 8, 7
    lengths = torch.randint(2, t, (n,))
    mask = (torch.arange(t)[None, :] < lengths[:, None]).float()
    mask[:, 0] = 0.0
    rewards, groups = torch.rand(n), torch.tensor([0, 0, 0, 1, 1, 1, 2, 2])
    one_end = torch.zeros(n, t)
    one_end[torch.arange(n), lengths - 1] = 1.0
    for knobs, ref in (({}, "grpo"), ({"normalize_std": False}, "dr_grpo")):
        want = ADVANTAGES.get(ref)(rewards, groups, mask)[0]
        for ends in (None, one_end):
            for gamma in (1.0, 0.3):
                got = ADVANTAGES.get("turn_grpo")(rewards, groups, mask, turn_ends=ends, gamma=gamma, **knobs)[0]
                assert torch.equal(got, want)


@pytest.mark.parametrize("name", ["turn_grpo", "turn_gae"])
def test_observation_tokens_get_zero_and_right_padding_changes_nothing(name):
    rewards, mask, ends, env = two_turn_batch()
    tok = token_rewards_of_two_turns()
    torch.manual_seed(1)
    values = torch.randn(2, 10) * mask
    fn = ADVANTAGES.get(name)
    adv, ret = fn(tok, torch.tensor([0, 0]), mask, values=values, turn_ends=ends)
    assert float(adv[mask == 0].abs().max()) == 0.0 and float(adv[mask > 0].abs().min()) > 0
    if ret is not None:
        assert float(ret[mask == 0].abs().max()) == 0.0

    def pad(x):
        return torch.cat([x, torch.zeros(x.shape[0], 5)], 1)

    adv_p, ret_p = fn(pad(tok), torch.tensor([0, 0]), pad(mask), values=pad(values), turn_ends=pad(ends))
    assert torch.allclose(adv_p[:, :10], adv, atol=1e-6) and float(adv_p[:, 10:].abs().max()) == 0.0
    if ret is not None:
        assert torch.allclose(ret_p[:, :10], ret, atol=1e-6)
    # [N] rewards sit on the last turn: the same as token rewards placed there
    seq, _ = fn(torch.tensor([1.0, 0.0]), torch.tensor([0, 0]), mask, values=values, turn_ends=ends)
    at_end = torch.zeros(2, 10)
    at_end[0, 7] = 1.0
    assert torch.allclose(seq, fn(at_end, torch.tensor([0, 0]), mask, values=values, turn_ends=ends)[0])


def episodes():
    return [Episode(info={"tool_calls": 3.0, "tool_errors": 1.0, "call_score": 0.75}),
            Episode(info={"tool_calls": 1.0, "tool_malformed": 1.0}), None]


def test_episode_info_sums_keys_per_row():
    eps = episodes()
    eps[0].segments = [([1, 2], True, "ab"), ([3], False, "c"), ([4], True, "d")]
    info = episode_info(eps)
    assert info["tool_calls"].tolist() == [3.0, 1.0, 0.0] and info["tool_malformed"].tolist() == [0.0, 1.0, 0.0]
    assert info["turns"].tolist() == [2.0, 0.0, 0.0] and info["episode"].tolist() == [1.0, 1.0, 0.0]
    assert episode_info([None, None]) is None and episode_info(None) is None


def test_tool_cost_by_hand():
    mask = torch.ones(3, 4)
    out = REWARD_TRANSFORMS.get("tool_cost")(torch.ones(3), rbatch(mask, info=episode_info(episodes())),
                                             cost=0.1, error_cost=0.2)
    # row 0: 3 calls, 1 error -> 0.3 + 0.2; row 1: 1 call, 1 malformed -> 0.1 + 0.2; row 2: no episode
    assert out.rewards.tolist() == A([0.5, 0.7, 1.0])
    assert out.metrics["reward/tool_cost"] == A(0.8 / 3)
    same = REWARD_TRANSFORMS.get("tool_cost")(torch.ones(3), rbatch(mask))  # a one-turn batch: nothing to pay
    assert same.rewards.tolist() == [1.0, 1.0, 1.0]


def test_tool_call_reward_by_hand():
    mask, info = torch.ones(3, 4), episode_info(episodes())
    fn = REWARD_TRANSFORMS.get("tool_call_reward")
    out = fn(torch.zeros(3), rbatch(mask, info=info), weight=2.0, format_weight=0.5)
    # row 0: score 0.75 -> 2 * 0.75 + 0.5 (no malformed call); row 1: score 0, a malformed call -> 0; row 2: none
    assert out.rewards.tolist() == A([2.0, 0.0, 0.0])
    assert out.metrics["reward/tool_call"] == A(1.0)  # mean over the two episode rows
    out = fn(torch.ones(3), rbatch(mask))  # a one-turn batch: nothing to add
    assert out.rewards.tolist() == [1.0, 1.0, 1.0]


# ---- wiring: the step passes turn_ends and episode info --------------------------------------

TOK = CharTokenizer()


@ENVS.register("t_credit_tools")
class ToolishEnv(EnvBase):
    """Two turns: after the first, one tool call (call_score 0.5) and a 0.25 turn reward."""

    stop = tuple("aeiou;")

    def __init__(self, problem) -> None:
        super().__init__(problem)
        self.k = 0

    def step(self, action):
        self.k += 1
        if self.k >= 2:
            return StepResult(done=True)
        return StepResult(observation="<r>\n", reward=0.25, info={"tool_calls": 1, "call_score": 0.5})


class _Parts:
    def __init__(self, model, pool):
        self.model, self.tok, self.pool = model, TOK, pool
        self.generator = KVCacheEngine(model, TOK)
        self.sampling = SamplingParams(n=2, max_new_tokens=6, temperature=1.0)
        self.batch_size, self.sampler = 2, UniformSampler(pool, 0)
        self.ref_model = self.teacher = self.critic = self.controller = None
        self.rewards, self.layout, self.resamplers = None, GROUP_LAYOUTS.bind("on_policy"), []
        self.transforms = [REWARD_TRANSFORMS.bind("tool_cost", {"cost": 0.1}),
                           REWARD_TRANSFORMS.bind("turn_rewards")]
        self.advantage = ADVANTAGES.bind("turn_grpo", {"gamma": 0.5})
        self.needs, self.prm = frozenset({"rollout"}), None
        self.episode_limits = EpisodeLimits(max_turns=3)
        self.terms = [Term("policy", OBJECTIVES.bind("policy", {}), lambda _: 1.0)]


def test_the_step_gives_turn_parts_their_turn_ends_and_episode_info():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=TOK.vocab_size, max_seq_len=64, **SIZES["nano"]))
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(5)  # a fresh init repeats one character; this varies the turns
    pool = [Problem(task="t", prompt=f"q{i}:", answer="7", verifier="exact", env="t_credit_tools") for i in range(2)]
    parts = _Parts(model, pool)
    batch, metrics, _ = rollout(parts, [0, 1], seed=2, state=UpdateState())
    info = episode_info(batch.episodes)
    assert metrics["reward/tool_cost"] == A(0.1 * float(info["tool_calls"].mean()))
    shaped = batch.rewards  # the last [N] rewards: verifier + env rewards - tool cost
    rb = rbatch(batch.mask, turn_ends=batch.turn_ends, turn_rewards=batch.turn_rewards)
    tok = REWARD_TRANSFORMS.get("turn_rewards")(shaped, rb).rewards
    want, _ = ADVANTAGES.get("turn_grpo")(tok, batch.group_ids, batch.mask, turn_ends=batch.turn_ends, gamma=0.5)
    assert torch.equal(batch.advantages, want * batch.mask)
    assert float(batch.advantages[batch.mask == 0].abs().max()) == 0.0
