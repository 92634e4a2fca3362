"""Dialogue environments "guess" and "user" (rftkit/envs/games.py), their tasks agent_game and
agent_user (rftkit/tasks/agent_dialogue.py) and the user environment of examples/my_env.py:
the protocol, the verifier on hand-made answers, demos that replay exactly through the env."""

from __future__ import annotations

import importlib.util
import inspect
import json
import random
import time
from pathlib import Path

import pytest
import torch

import rftkit.envs  # noqa: F401  (registers the built-in environments)
import rftkit.tasks  # noqa: F401  (registers the built-in tasks)
from rftkit.envs.base import ENVS, Environment, StepResult, make_env
from rftkit.envs.episodes import EpisodeLimits, generate_rows
from rftkit.model.tokenizer import ALPHABET, CharTokenizer
from rftkit.rollout.base import SamplingParams
from rftkit.tasks.agent_dialogue import ASK_OR_ANSWER, HIGHER, LOWER, NO_MORE, SAY_NUMBER
from rftkit.tasks.base import TASKS, VERIFIERS, parse_answer, verify
from rftkit.train.batches import completion_ids
from rftkit.types import Generation, Problem

TOK = CharTokenizer()
CONTEXT, NEW_TOKENS = 128, 32  # the built-in model's context, rollout.max_new_tokens default
TASK_NAMES = ("agent_game", "agent_user")


def _problems(name: str, n: int = 20, seed: int = 0, **knobs) -> list[Problem]:
    task = TASKS.get(name)(**knobs)
    (lo, hi), (olo, ohi) = task.default_difficulty, task.default_ood
    rng = random.Random(seed)
    return [task.sample(rng, d) for d in [*range(lo, hi + 1), *range(olo, ohi + 1)] for _ in range(n)]


def _game(secret=11, hi=16, **env_args) -> Problem:
    return Problem(task="agent_game", prompt=f"guess:1..{hi}=", answer=str(secret), verifier="exact", env="guess",
                   meta={"hi": hi, "env_args": env_args})


CONS = [{"kind": "even"}, {"kind": "range", "lo": 20, "hi": 29}, {"kind": "mult", "k": 3}]


def _user(constraints=CONS, **env_args) -> Problem:
    return Problem(task="agent_user", prompt="pick:1..99=", answer="24", verifier="constraints", env="user",
                   meta={"lo": 1, "hi": 99, "constraints": constraints, "env_args": env_args})


@pytest.mark.parametrize("name", TASK_NAMES)
def test_tasks_follow_the_conventions_and_their_demos_verify(name):
    cls = TASKS.get(name)
    assert cls.name == name and "\n" not in cls.difficulty_doc
    assert 1 <= cls.default_difficulty[0] <= cls.default_difficulty[1] < cls.default_ood[0] <= cls.default_ood[1]
    for p in list(inspect.signature(cls.__init__).parameters.values())[1:]:
        assert p.kind is inspect.Parameter.KEYWORD_ONLY and p.default is not inspect.Parameter.empty
    assert _problems(name, 5, seed=3) == _problems(name, 5, seed=3) != _problems(name, 5, seed=4)
    for p in _problems(name):
        assert p.env in ENVS and p.verifier in VERIFIERS and p.task == p.source == name
        assert json.loads(json.dumps(p.meta)) == p.meta  # storable as JSON
        assert p.demo == "".join(t for t, _ in p.meta["demo_segments"]) and parse_answer(p.demo) == p.answer
        assert verify(p, p.demo).correct
        assert set(p.prompt + p.demo) <= set(ALPHABET) and "#" not in p.prompt


def test_guess_env_answers_higher_lower_until_right_and_counts():
    env = make_env(_game())
    assert isinstance(env, Environment) and env.stop == ("\n",) and env.reset() is None
    assert env.step("#8\n") == StepResult(HIGHER, 0.0, False, {"guesses": 1})
    assert env.step("twelve\n") == StepResult(SAY_NUMBER, 0.0, False, {"invalid": 1})
    assert env.step("#011\n").info == {"invalid": 1}  # leading zero: "exact" would not accept it either
    assert env.step("i say #12\n") == StepResult(LOWER, 0.0, False, {"guesses": 1})
    assert env.step("#11\n") == StepResult("", 0.0, True, {"guesses": 1, "solved": 1})
    env = make_env(_game(step_penalty=0.25, max_turns=2))
    first, second = env.step("#1\n"), env.step("#2\n")
    assert (first.done, second.done) == (False, True) and first.reward == second.reward == -0.25
    assert make_env(_game(hi=32)).max_turns == 6  # binary search over 1..32 needs up to 6 guesses
    for text in ("", "#", "#-3", "#1e3", "#\u0663", "#" + "9" * 100_000):
        result = make_env(_game()).step(text)
        assert result.observation == SAY_NUMBER and result.info == {"invalid": 1}


def test_user_env_reveals_one_constraint_per_question_then_takes_the_answer():
    env = make_env(_user())
    assert env.stop == ("\n",) and env.reset() is None
    replies = [env.step("?\n") for _ in range(3)]
    assert [r.observation for r in replies] == ["even\n", "from 20 to 29\n", "multiple of 3\n"]
    assert all(r.info == {"questions": 1} and not r.done for r in replies)
    assert env.step("and?\n").observation == NO_MORE
    assert env.step("hmm\n") == StepResult(ASK_OR_ANSWER, 0.0, True, {"invalid": 1})  # 5 = 3 + 2 turns
    env = make_env(_user(step_penalty=0.1))
    assert env.step("#7\n") == StepResult("", -0.1, True, {"answered": 1})  # blind: ends, verifier says 0


def test_constraints_verifier_accepts_any_number_meeting_all_constraints():
    p = _user()
    assert verify(p, "#24").correct and verify(p, "?\nx\n#24\n").correct
    assert verify(_user(CONS[:2]), "#28").correct  # not problem.answer, but it meets both
    for wrong, why in (("#26", "multiple of 3"), ("#21", "even"), ("#30", "from 20 to 29"), ("#0", "out of range"),
                       ("#102", "out of range")):
        verdict = verify(p, wrong)
        assert verdict.score == 0.0 and why in verdict.reason, (wrong, verdict)
    for bad in ("", "24", "#", "#abc", "#024", "#2 4", "#24.0", "#\u0663\u0664", "#" + "6" * 1_000_000,
                "?" * 1_000_000, "#(" * 100_000):
        t0 = time.perf_counter()
        verdict = verify(p, bad)
        assert verdict.score == 0.0 and time.perf_counter() - t0 < 0.5, bad[:20]


def test_answering_the_user_without_asking_is_rarely_right():
    share = [sum(verify(p, f"#{n}").correct for n in range(1, 100)) / 99 for p in _problems("agent_user", 50)[:100]]
    assert sum(share) / len(share) < 0.1  # a blind guess over the default difficulties


@pytest.mark.parametrize("name", TASK_NAMES)
def test_demo_turns_replay_through_the_env_with_exactly_the_demo_observations(name):
    for p in _problems(name):
        env, segs = make_env(p), p.meta["demo_segments"]
        assert env.reset() is None and [s[1] for s in segs[::2]] == [True] * len(segs[::2])
        for k in range(0, len(segs), 2):
            result = env.step(segs[k][0])
            if k + 1 < len(segs):
                assert result.observation == segs[k + 1][0] and not segs[k + 1][1] and not result.done
            else:
                assert result.done and verify(p, segs[k][0]).correct


@pytest.mark.parametrize("name", TASK_NAMES)
def test_demos_fit_the_built_in_context_with_a_default_turn_budget(name):
    for p in _problems(name, 100):
        ids, mask = completion_ids(TOK, p, p.demo)
        assert 1 + len(TOK.encode(p.prompt)) + len(ids) <= CONTEXT
        assert sum(mask) == sum(len(t) for t, trained in p.meta["demo_segments"] if trained) + 1  # + eos
        # the loop ends an episode when the next turn might not fit: before the last turn it must
        last = p.meta["demo_segments"][-1][0]
        assert 1 + len(p.prompt) + len(p.demo) - len(last) + NEW_TOKENS <= CONTEXT


class DemoPlayer:
    """A Generator that writes each context's next demo turn (the loop must rebuild the demo)."""

    def __init__(self, problems: list[Problem]) -> None:
        self.full = {p.prompt: p for p in problems}

    def generate(self, prompts, params):
        assert "\n" in params.stop  # the environments' turn end reaches the engine
        rows, texts = [], []
        for ids in prompts:
            context = TOK.decode(ids)
            p = next(p for prompt, p in self.full.items() if context.startswith(prompt))
            done, segs = len(context) - len(p.prompt), p.meta["demo_segments"]
            k = next(i for i in range(len(segs)) if len("".join(t for t, _ in segs[:i])) == done)
            assert segs[k][1], "asked for a turn where the demo has an observation"
            turn = TOK.encode(segs[k][0]) + ([TOK.eos_id] if k == len(segs) - 1 else [])
            rows.append((ids, turn))
            texts.append(segs[k][0])
        t = max(len(a) + len(b) for a, b in rows)
        return Generation(tokens=torch.tensor([a + b + [0] * (t - len(a) - len(b)) for a, b in rows]),
                          logp=torch.zeros(len(rows), t),
                          mask=torch.tensor([[0.0] * len(a) + [1.0] * len(b) + [0.0] * (t - len(a) - len(b))
                                             for a, b in rows]),
                          prompt_lens=torch.tensor([len(a) for a, _ in rows]),
                          truncated=torch.zeros(len(rows), dtype=torch.bool), texts=texts)


@pytest.mark.parametrize("name", TASK_NAMES)
def test_the_episode_loop_playing_the_demo_rebuilds_it_and_it_verifies(name):
    problems = list({p.prompt: p for p in _problems(name, 4)}.values())  # distinct prompts
    prompts = [[TOK.bos_id] + TOK.encode(p.prompt) for p in problems]
    gen, episodes = generate_rows(DemoPlayer(problems), TOK, problems, prompts, SamplingParams(n=1),
                                  EpisodeLimits(max_turns=8), CONTEXT)
    for p, ep, text in zip(problems, episodes, gen.texts, strict=True):
        assert ep.end == "done" and ep.transcript() == p.demo
        assert [[t, m] for _, m, t in ep.segments] == p.meta["demo_segments"]
        assert verify(p, text).correct and ep.turn_rewards == [0.0] * ep.turns
        key = "solved" if name == "agent_game" else "answered"
        assert ep.info[key] == 1.0 and "invalid" not in ep.info


@pytest.fixture
def isolated_registries(monkeypatch):
    """Register the example's parts without leaking them (or clashing) across tests."""
    for registry in (ENVS, TASKS):
        monkeypatch.setattr(registry, "_items", {k: v for k, v in registry._items.items() if k != "echo"})


def test_example_user_environment_loads_from_path_and_its_demo_replays(isolated_registries):
    path = Path(__file__).resolve().parents[1] / "examples" / "my_env.py"
    spec = importlib.util.spec_from_file_location("rftkit_example_my_env", path)
    spec.loader.exec_module(importlib.util.module_from_spec(spec))
    assert "echo" in ENVS and "echo" in TASKS
    p = TASKS.get("echo")(length=4).sample(random.Random(0), 1)
    assert p.env == "echo" and verify(p, p.demo).correct and set(p.prompt + p.demo) <= set(ALPHABET)
    env, segs = make_env(p), p.meta["demo_segments"]
    assert env.step(segs[0][0]).observation == segs[1][0] and env.step(segs[2][0]).done
    assert make_env(p).step("hello\n").info == {"invalid": 1}
    assert len(path.read_text().splitlines()) < 80
