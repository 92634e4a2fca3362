"""The multi-turn rollout loop (rftkit/envs/episodes.py) and what the step does with its rows:
equal to a naive turn-by-turn loop, observations never trained, broken environments contained."""

import time

import pytest
import torch

from rftkit.algos.advantages import ADVANTAGES
from rftkit.algos.layouts import GROUP_LAYOUTS
from rftkit.algos.objectives import OBJECTIVES
from rftkit.config import validate
from rftkit.data.samplers import UniformSampler
from rftkit.envs.base import ENVS, EnvBase, StepResult
from rftkit.envs.episodes import EpisodeLimits, episode_stats, generate_rows
from rftkit.errors import ConfigError
from rftkit.model.gpt import GPT, SIZES, GPTConfig
from rftkit.model.tokenizer import CharTokenizer
from rftkit.rollout.base import SamplingParams
from rftkit.rollout.kv_engine import KVCacheEngine
from rftkit.tasks.base import TASKS
from rftkit.train.loop import train
from rftkit.train.step import Term, rollout
from rftkit.train.update import UpdateState, update_policy
from rftkit.types import Problem

TOK = CharTokenizer()
STOPS = tuple("aeiou;")  # a random model writes one of these within a few tokens: turns of varied length


@ENVS.register("t_probe")
class ProbeEnv(EnvBase):
    """Observations "<k>\\n" after turns 0 and 1 unless a turn ends with ';'; done at turn 2."""

    stop = STOPS

    def __init__(self, problem, *, bonus: float = 0.1) -> None:
        super().__init__(problem)
        self.k, self.bonus = 0, bonus

    def step(self, action):
        self.k += 1
        if self.k == 3 or action.endswith(";"):
            return StepResult(reward=self.bonus, done=True, info={"probes": 1})
        return StepResult(observation=f"<{self.k}>\n", reward=self.bonus, info={"probes": 1})


@ENVS.register("t_raise")
class RaisingEnv(EnvBase):
    stop = STOPS

    def step(self, action):
        raise RuntimeError("boom")


@ENVS.register("t_hang")
class HangingEnv(EnvBase):
    stop = STOPS

    def step(self, action):
        time.sleep(5)
        return StepResult(done=True)


@ENVS.register("t_wrong")
class WrongTypeEnv(EnvBase):
    stop = STOPS

    def step(self, action):
        return "not a StepResult"


@ENVS.register("t_broken_init")
class BrokenInit(EnvBase):
    stop = STOPS

    def __init__(self, problem):
        raise ValueError("cannot start")


@ENVS.register("t_chatty")
class ChattyEnv(EnvBase):
    """Never done, long observations: the turn, token and observation budgets end it."""

    stop = STOPS

    def step(self, action):
        return StepResult(observation="x" * 50)


def _model(seed=0, ctx=128):
    """Random weights scaled up: greedy text of a fresh init repeats one character, this varies."""
    torch.manual_seed(seed)
    model = GPT(GPTConfig(vocab_size=TOK.vocab_size, max_seq_len=ctx, **SIZES["nano"]))
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(5)
    return model


def _problems(env="t_probe", k=4):
    return [Problem(task="t", prompt=f"q{i}:", answer="7", verifier="exact", env=env) for i in range(k)]


def _naive(engine, problem, params, limits, context):
    """One episode alone, one engine call per turn: the reference the batched loop must equal."""
    env = ENVS.get(problem.env)(problem)
    ids, mask = [TOK.bos_id] + TOK.encode(problem.prompt), []
    start = len(ids)
    for _ in range(limits.max_turns):
        if len(ids) + params.max_new_tokens > context:
            break
        gen = engine.generate([ids], SamplingParams(n=1, max_new_tokens=params.max_new_tokens, temperature=0.0,
                                                    stop=env.stop))
        n = int(gen.mask[0].sum())
        ids += gen.tokens[0, len(ids):len(ids) + n].tolist()
        mask += [1.0] * n
        if bool(gen.truncated[0]):
            break
        res = env.step(gen.texts[0])
        if res.done:
            break
        obs = TOK.encode(res.observation)[: limits.max_obs_tokens]
        if len(ids) + len(obs) + params.max_new_tokens > context:
            break
        ids += obs
        mask += [0.0] * len(obs)
    return ids, [0.0] * start + mask


def test_batched_episodes_at_temperature_zero_equal_a_naive_turn_by_turn_loop():
    model = _model()
    engine = KVCacheEngine(model, TOK)
    problems = _problems(k=6)
    prompts = [[TOK.bos_id] + TOK.encode(p.prompt) for p in problems]
    params = SamplingParams(n=2, max_new_tokens=10, temperature=0.0)
    limits = EpisodeLimits(max_turns=3)
    gen, eps = generate_rows(engine, TOK, problems, prompts, params, limits, 128)
    turns = []
    for r, ep in enumerate(eps):
        ids, mask = _naive(engine, problems[r // 2], params, limits, 128)
        assert gen.tokens[r, : len(ids)].tolist() == ids
        assert gen.mask[r, : len(mask)].tolist() == mask and float(gen.mask[r, len(mask):].sum()) == 0
        assert ep.transcript() == TOK.decode(ids[len(prompts[r // 2]):])
        turns.append(ep.turns)
    assert max(turns) > 1  # the test exercises several turns
    obs = (gen.mask == 0) & (torch.arange(gen.tokens.shape[1]) >= gen.prompt_lens[:, None]) & (gen.tokens != 0)
    assert bool(obs.any()) and float(gen.logp[obs].abs().sum()) == 0.0  # no log-probs on observations


def test_one_turn_problems_take_the_plain_engine_path_unchanged():
    model = _model()
    engine = KVCacheEngine(model, TOK)
    problems = _problems(env="", k=3)
    prompts = [[TOK.bos_id] + TOK.encode(p.prompt) for p in problems]
    params = SamplingParams(n=2, max_new_tokens=8, seed=3)
    gen, eps = generate_rows(engine, TOK, problems, prompts, params, EpisodeLimits(), 128)
    plain = engine.generate(prompts, params)
    assert eps == [None] * 6
    assert torch.equal(gen.tokens, plain.tokens) and torch.equal(gen.logp, plain.logp)


@pytest.mark.parametrize("env,end,counter", [("t_raise", "env_error", "env_errors"),
                                             ("t_wrong", "env_error", "env_errors"),
                                             ("t_hang", "env_timeout", "env_timeouts"),
                                             ("t_broken_init", "env_error", "env_errors")])
def test_a_broken_environment_ends_its_episode_counted_and_the_batch_goes_on(env, end, counter):
    model = _model()
    problems = _problems(env=env, k=2) + _problems(k=2)
    prompts = [[TOK.bos_id] + TOK.encode(p.prompt) for p in problems]
    t0 = time.perf_counter()
    gen, eps = generate_rows(KVCacheEngine(model, TOK), TOK, problems, prompts,
                             SamplingParams(n=1, max_new_tokens=8, temperature=0.0),
                             EpisodeLimits(max_turns=3, timeout=0.3 if env == "t_hang" else 10.0), 128)
    assert time.perf_counter() - t0 < 4  # a hanging step is abandoned at its timeout
    assert [e.end for e in eps[:2]] == [end, end] and all(e.info[counter] == 1.0 for e in eps[:2])
    assert all(e.turns == 1 and gen.mask[i].sum() > 0 for i, e in enumerate(eps[:2]))
    assert all(e.end in ("done", "truncated") for e in eps[2:])
    assert episode_stats(eps)[f"{counter}_mean"] == 0.5


def test_turn_token_context_and_observation_budgets_end_episodes_counted():
    model = _model(ctx=96)
    problems = _problems(env="t_chatty", k=3)
    prompts = [[TOK.bos_id] + TOK.encode(p.prompt) for p in problems]
    params = SamplingParams(n=1, max_new_tokens=8, temperature=0.0)
    _, eps = generate_rows(KVCacheEngine(model, TOK), TOK, problems, prompts, params,
                           EpisodeLimits(max_turns=2, max_obs_tokens=5), 96)
    finished = [e for e in eps if e.end != "truncated"]
    assert finished and all(e.end == "turn_limit" and e.turns == 2 for e in finished)
    assert all(len(ids) == 5 for e in finished for ids, model_turn, _ in e.segments if not model_turn)
    assert all(e.obs_truncated >= 1 for e in finished)
    _, eps = generate_rows(KVCacheEngine(model, TOK), TOK, problems, prompts, params,
                           EpisodeLimits(max_turns=50, max_obs_tokens=40), 96)
    assert all(e.end in ("context_limit", "truncated") for e in eps)
    assert all(len(p) + sum(len(i) for i, _, _ in e.segments) <= 96 for p, e in zip(prompts, eps))
    _, eps = generate_rows(KVCacheEngine(model, TOK), TOK, problems, prompts, params,
                           EpisodeLimits(max_turns=50, max_tokens=3, max_obs_tokens=2), 96)
    assert all(e.end == "token_limit" and sum(len(i) for i, m, _ in e.segments if m) == 3 for e in eps)


class _Parts:
    def __init__(self, model, pool, objectives):
        self.model, self.tok, self.pool = model, TOK, pool
        self.generator = KVCacheEngine(model, TOK)
        self.sampling = SamplingParams(n=4, max_new_tokens=10, temperature=1.0)
        self.batch_size, self.sampler = 4, UniformSampler(pool, 0)
        self.ref_model = self.teacher = self.critic = self.controller = None
        self.rewards, self.layout, self.resamplers, self.transforms = None, GROUP_LAYOUTS.bind("on_policy"), [], []
        self.advantage = ADVANTAGES.bind("grpo")
        self.needs, self.prm = frozenset({"rollout"}), None
        self.episode_limits = EpisodeLimits(max_turns=3)
        self.terms = [Term(n, OBJECTIVES.bind(n, p), lambda _: 1.0) for n, p in objectives]
        self.optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        self.update_epochs = self.minibatches = self.grad_accum = 1
        self.grad_clip, self.skip_inert_rows = 1.0, False


def test_observation_tokens_receive_exactly_zero_gradient():
    model = _model()
    problems = [Problem(task="t", prompt=f"q{i}:", answer="a", verifier="exact", env="t_probe") for i in range(4)]
    parts = _Parts(model, problems, [("policy", {"loss": "ppo_clip"}), ("entropy", {})])
    parts.sampling = SamplingParams(n=1, max_new_tokens=10)  # distinct rows: the plain forward, [N, T] hidden states
    batch, metrics, _ = rollout(parts, [0, 1, 2, 3], seed=1, state=UpdateState())
    assert batch.episodes is not None and metrics["env/turns_mean"] > 1.2 and "env/probes_mean" in metrics
    assert batch.turn_ends is not None and float(batch.turn_ends.sum()) == sum(e.turns for e in batch.episodes)
    # the env's rewards (0.1 a turn) are added to the verifier's outcome
    assert batch.rewards.tolist() == pytest.approx([v.score + sum(e.turn_rewards)
                                                    for v, e in zip(batch.verdicts, batch.episodes)])
    batch = type(batch)(**{**batch.__dict__, "advantages": torch.randn_like(batch.mask) * batch.mask})
    grads = []

    def keep_grad(module, inputs, out):
        out.register_hook(grads.append)

    handle = model.norm.register_forward_hook(keep_grad)
    update_policy(parts, UpdateState(), batch, None, {"policy": 1.0, "entropy": 1.0}, seed=0)
    handle.remove()
    g = grads[0].abs().sum(-1)  # [N, T - 1]: gradient reaching position t's hidden state (predicts token t+1)
    predicts_untrained = batch.mask[:, 1:] == 0
    assert g.shape == predicts_untrained.shape
    assert float(g[predicts_untrained].sum()) == 0.0
    assert float(g[~predicts_untrained].min()) > 0


@TASKS.register("t_env_task")
class EnvTask:
    name, difficulty_doc, default_difficulty, default_ood = "t_env_task", "unused", (1, 1), (1, 1)

    def __init__(self, *, env: str = "t_probe") -> None:
        self.env = env

    def sample(self, rng, difficulty):
        return Problem(task=self.name, prompt=f"q{rng.randrange(10**6)}:", answer="a", verifier="exact",
                       env=self.env, demo="#a")


def _cfg(tmp_path, env):
    tree = {"out_dir": str(tmp_path), "name": "envcheck", "progress": False, "model": {"size": "nano"},
            "data": {"tasks": [{"name": "arithmetic"}, {"name": "t_env_task", "params": {"env": env}}],
                     "train_size": 20, "test_size": 2, "ood_size": 2},
            "stages": [{"name": "rl", "steps": 1, "batch_size": 2, "objectives": [{"name": "policy"}]}]}
    return validate(tree, "test")


def test_an_unregistered_environment_fails_at_config_time_naming_the_task(tmp_path):
    with pytest.raises(ConfigError, match=r"data\.tasks\[1\]: task 't_env_task' names environment 't_prob'.*"
                                          r"Did you mean 't_probe'"):
        train(_cfg(tmp_path, "t_prob"))


def test_a_missing_environment_library_fails_at_config_time(tmp_path, monkeypatch):
    monkeypatch.setattr(ProbeEnv, "requires", ("surely_not_installed_lib",), raising=False)
    with pytest.raises(ConfigError, match=r"data\.tasks\[1\]: environment 't_probe' needs the Python library "
                                          r"'surely_not_installed_lib'.*pip install 'rftkit\[agent\]'"):
        train(_cfg(tmp_path, "t_probe"))


def test_beam_search_over_episodes_is_a_config_error(tmp_path):
    tree = _cfg(tmp_path, "t_probe").model_dump(mode="json")
    tree["eval"]["scaling"] = {"beam_width": 2}
    with pytest.raises(ConfigError, match=r"eval\.scaling\.beam_width: beam and step search apply to one-turn"):
        train(validate(tree, "test"))


@ENVS.register("t_slow")
class SlowEnv(EnvBase):
    stop = STOPS

    def step(self, action):
        time.sleep(0.4)
        return StepResult(done=True)


def test_env_steps_run_workers_at_a_time():
    problems = _problems(env="t_slow", k=4)
    prompts = [[TOK.bos_id] + TOK.encode(p.prompt) for p in problems]
    engine = KVCacheEngine(_model(), TOK)

    def timed(workers):
        t0 = time.perf_counter()
        _, eps = generate_rows(engine, TOK, problems, prompts, SamplingParams(n=1, max_new_tokens=8, temperature=0.0),
                               EpisodeLimits(workers=workers), 128)
        return time.perf_counter() - t0, sum(e.end == "done" for e in eps)

    (parallel, stepped), (serial, _) = timed(4), timed(1)
    assert stepped >= 3  # most first turns end at a stop string and reach the 0.4 s step
    assert parallel < 1.2 and serial >= 0.4 * stepped  # 4 at once vs one after the other
