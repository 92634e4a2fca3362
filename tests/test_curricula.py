"""Curriculum samplers: each update rule on hand-made statistics, bad input, JSON state round-trip."""

import json
import math

import numpy as np
import pytest

from rftkit.data.alp_gmm import fit_gmm
from rftkit.data.samplers import SAMPLERS, PromptStats
from rftkit.data.selection import lim_scores
from rftkit.registry import RegistryError
from rftkit.types import Problem

LEVELS = [("easy", 1), ("mid", 3), ("hard", 5)]


def make_pool(per_source: int = 10) -> list[Problem]:
    return [Problem(task="arithmetic", prompt=f"add:{d}{i}+{i}=", answer="0", verifier="exact", difficulty=d,
                    source=s) for s, d in LEVELS for i in range(per_source)]


POOL = make_pool()
SRC = {i: p.source for i, p in enumerate(POOL)}


def stat(i: int, reward: float, adv: float | None = None) -> PromptStats:
    p = POOL[i]
    return PromptStats(i, p.task, p.source, p.difficulty, reward, math.sqrt(reward * (1 - reward)),
                       2 * reward * (1 - reward) if adv is None else adv)


def sources(indices) -> set[str]:
    return {SRC[i] for i in indices}


def test_every_sampler_is_registered():
    assert set(SAMPLERS.names()) >= {"uniform", "mixture", "easy_to_hard", "hard_to_easy", "band", "dump", "sec",
                                     "pcl", "adarft", "alp_gmm", "limr", "few_shot"}


def test_unknown_knob_is_rejected_by_bind():
    with pytest.raises(RegistryError, match="Did you mean 'temperature'"):
        SAMPLERS.bind("dump", {"temprature": 0.1})


def test_mixture_fixed_ratios_and_zero_example_source():
    s = SAMPLERS.get("mixture")(POOL, 0, weights={"easy": 3, "hard": 1})
    batch = s.next(8)
    assert sum(SRC[i] == "easy" for i in batch) == 6 and sum(SRC[i] == "hard" for i in batch) == 2
    m = s.update([stat(i, 0.5) for i in batch])
    assert m["curriculum/source_prob/easy"] == 0.75 and "curriculum/source_prob/mid" not in m
    with pytest.raises(ValueError, match="'ghost', which has zero examples"):
        SAMPLERS.get("mixture")(POOL, 0, weights={"easy": 1, "ghost": 1})
    for name in ("mixture", "uniform"):
        with pytest.raises(ValueError, match=f"sampler '{name}': the training pool is empty"):
            SAMPLERS.get(name)([], 0)


def test_staged_schedules_move_through_levels():
    e2h = SAMPLERS.get("easy_to_hard")(POOL, 0, total_steps=6)
    h2e = SAMPLERS.get("hard_to_easy")(POOL, 0, total_steps=6)
    seen_e, seen_h = [], []
    for _ in range(6):
        b, c = e2h.next(4), h2e.next(4)
        seen_e.append(sources(b)), seen_h.append(sources(c))
        e2h.update([]), h2e.update([])
    assert seen_e == [{"easy"}] * 2 + [{"mid"}] * 2 + [{"hard"}] * 2
    assert seen_h == [{"hard"}] * 2 + [{"mid"}] * 2 + [{"easy"}] * 2
    cum = SAMPLERS.get("easy_to_hard")(POOL, 0, total_steps=3, cumulative=True)
    cum.update([]), cum.update([])
    assert sources(cum.next(30)) == {"easy", "mid", "hard"}
    by_src = SAMPLERS.get("easy_to_hard")(POOL, 0, total_steps=3, by="source", levels=["hard", "easy", "mid"])
    assert sources(by_src.next(4)) == {"hard"}
    with pytest.raises(ValueError, match=r"levels \[7\] have zero examples"):
        SAMPLERS.get("easy_to_hard")(POOL, 0, levels=[1, 7])


def test_band_boundaries_and_filtered_fraction():
    s = SAMPLERS.get("band")(POOL, 0, low=0.25, high=0.75, window=2)
    rates = {0: 0.25, 1: 0.75, 2: 0.24, 3: 0.76, 4: 0.5, 5: 0.0, 6: 1.0}
    s.update([stat(i, r) for i, r in rates.items()])
    ok, numbers = s.eligible()
    assert ok[[0, 1, 4]].all() and not ok[[2, 3, 5, 6]].any()  # [low, high] inclusive
    assert ok[7:].all()  # never seen: allowed
    assert numbers == {"eligible": 26.0, "seen": 7.0, "unseen": 23.0, "unseen_filtered": 0.0, "below_low": 2.0,
                       "above_high": 2.0}
    batch = s.next(30)  # one full pass: 26 eligible taken, 4 skipped
    assert set(batch[:26]) == set(np.flatnonzero(ok).tolist()) and set(batch) == set(batch[:26])
    m = s.update([])
    assert m["curriculum/filtered_fraction"] == pytest.approx(4 / 30)
    assert m["curriculum/repeated"] == 4.0 and m["curriculum/eligible_fraction"] == pytest.approx(26 / 30)
    window = SAMPLERS.get("band")(POOL, 0, low=0.25, high=0.75, window=2)
    window.update([stat(0, 0.0)]), window.update([stat(0, 1.0)])
    assert window.eligible()[0][0]  # mean of the last two pass rates = 0.5


def test_band_fallback_uniform_and_error():
    all_solved = [stat(i, 1.0) for i in range(len(POOL))]
    s = SAMPLERS.get("band")(POOL, 0, low=0.2, high=0.8)
    s.update(all_solved)
    with pytest.warns(UserWarning, match="sampler 'band' cannot fill a batch of 5"):
        batch = s.next(5)
    assert len(batch) == 5
    m = s.update([])
    assert m["curriculum/fallback"] == 1.0 and m["curriculum/fallback_why/eligible"] == 0.0
    assert m["curriculum/fallback_why/above_high"] == 30.0
    assert s.next(5) and s.update([])["curriculum/fallback"] == 1.0  # stays on, warns once
    e = SAMPLERS.get("band")(POOL, 0, fallback="error")
    e.update(all_solved)
    with pytest.raises(ValueError, match=r"sampler 'band' cannot fill.*eligible=0, seen=30.*above_high=30"):
        e.next(5)
    nothing = SAMPLERS.get("band")(POOL, 0, unseen="deny", fallback="error")
    with pytest.raises(ValueError, match=r"\(unseen prompts: deny\)"):
        nothing.next(3)
    with pytest.raises(ValueError, match="fallback must be one of"):
        SAMPLERS.get("band")(POOL, 0, fallback="retry")


def test_band_judges_unseen_prompts_by_their_level_or_source():
    s = SAMPLERS.get("band")(POOL, 0, unseen="level")
    s.update([stat(0, 1.0), stat(10, 0.5), stat(20, 0.0)])  # one prompt seen per level
    ok, numbers = s.eligible()
    assert not ok[:10].any() and ok[10:20].all() and not ok[20:].any()
    assert numbers["unseen_filtered"] == 18.0 and sources(s.next(5)) == {"mid"}
    fresh = SAMPLERS.get("band")(POOL, 0, unseen="source")
    fresh.update([stat(20, 0.0)])  # no statistics for easy / mid yet: allowed
    ok, _ = fresh.eligible()
    assert ok[:20].all() and not ok[20:].any()
    with pytest.raises(ValueError, match="unseen must be one of"):
        SAMPLERS.get("band")(POOL, 0, unseen="maybe")


def test_band_max_age_expires_statistics():
    s = SAMPLERS.get("band")(POOL, 0, max_age=2)
    s.update([stat(0, 0.0)])
    assert not s.eligible()[0][0]
    s.update([]), s.update([])
    assert s.eligible()[0][0]  # last seen 3 steps ago: unseen again


def test_dump_ucb_explores_unseen_source_first_then_follows_advantage():
    s = SAMPLERS.get("dump")(POOL, 0)
    s.update([stat(0, 0.5, adv=0.4), stat(10, 0.5, adv=0.2)])  # easy and mid seen, hard not
    assert np.allclose(s.probs(), [0, 0, 1])
    assert sources(s.next(6)) == {"hard"}
    m = s.update([stat(20, 0.0, adv=0.0)])
    n, bonus = 3, lambda k: math.sqrt(2 * math.log(3 + 1) / (k + 1))
    scores = np.array([0.4 + bonus(1), 0.2 + bonus(1), 0.0 + bonus(1)])
    expect = np.exp((scores - scores.max()) / 0.1)
    expect /= expect.sum()
    assert n == sum(s.counts.values())
    assert [m[f"curriculum/source_prob/{x}"] for x in ("easy", "mid", "hard")] == pytest.approx(expect.tolist())
    assert m["curriculum/ucb/easy"] == pytest.approx(scores[0])
    small = SAMPLERS.get("dump")(POOL, 0, window=2)
    small.update([stat(0, 0.5, adv=a) for a in (0.9, 0.1, 0.3)])
    assert small.windows["easy"] == [0.1, 0.3] and small.counts["easy"] == 3
    with pytest.raises(ValueError, match="'nope', which has zero examples"):
        SAMPLERS.get("dump")(POOL, 0, sources=["easy", "nope"])


def test_sec_td0_update_and_boltzmann_choice():
    s = SAMPLERS.get("sec")(POOL, 0, alpha=0.5, tau=1.0)
    assert np.allclose(s.probs(), [1 / 3] * 3)
    s.update([stat(0, 0.5, adv=0.4), stat(1, 0.5, adv=0.6), stat(20, 0.0, adv=0.0)])
    assert s.q == {"easy": 0.25, "mid": 0.0, "hard": 0.0}
    m = s.update([stat(2, 0.9, adv=0.1)])
    assert s.q["easy"] == pytest.approx(0.5 * 0.1 + 0.5 * 0.25)
    z = np.exp(np.array([0.175, 0.0, 0.0]))
    assert m["curriculum/source_prob/easy"] == pytest.approx(z[0] / z.sum())
    lv = SAMPLERS.get("sec")(POOL, 0, category="difficulty", alpha=1.0, tau=0.01)
    lv.update([stat(10, 0.5, adv=0.8), stat(0, 1.0, adv=0.0)])
    assert lv.q == {"d1": 0.0, "d3": 0.8, "d5": 0.0} and sources(lv.next(10)) == {"mid"}


def test_adarft_target_follows_batch_reward():
    s = SAMPLERS.get("adarft")(POOL, 0)  # levels 1..5: eta = 2, alpha = 2, beta = 0.5, T0 = 1
    assert sources(s.next(5)) == {"easy"}
    m = s.update([stat(0, 1.0), stat(1, 1.0)])
    assert m["curriculum/target_difficulty"] == pytest.approx(1 + 2 * math.tanh(1.0))
    assert sources(s.next(5)) == {"mid"}  # |3 - 2.52| < |1 - 2.52|
    s.update([stat(10, 0.25)])
    assert s.target == pytest.approx(1 + 2 * math.tanh(1.0) + 2 * math.tanh(-0.5))
    for _ in range(5):
        s.update([stat(20, 1.0)])
    assert s.target == 5.0  # clipped at d_max


def test_pcl_value_model_learns_pass_rates_and_picks_intermediate_prompts():
    s = SAMPLERS.get("pcl")(POOL, 0, candidates=3)
    batch = s.next(6)
    m = s.update([stat(i, {"easy": 1.0, "mid": 0.5, "hard": 0.0}[SRC[i]]) for i in batch])
    y = np.array([{"easy": 1.0, "mid": 0.5, "hard": 0.0}[SRC[i]] for i in batch])
    assert m["curriculum/value_mse"] == pytest.approx(float(np.mean((0.5 - y) ** 2)))  # untrained model: 0.5
    for _ in range(30):
        s.update([stat(i, {"easy": 1.0, "mid": 0.5, "hard": 0.0}[SRC[i]]) for i in range(len(POOL))])
    pred = s.predict(range(len(POOL)))
    assert pred[:10].min() > 0.8 and pred[20:].max() < 0.2 and abs(pred[10:20].mean() - 0.5) < 0.1
    assert sources(s.next(6)) == {"mid"}


def test_alp_gmm_alp_rule_and_fit():
    s = SAMPLERS.get("alp_gmm")(POOL, 0, fit_rate=20)
    s.update([stat(i, 0.5) for i in range(6)])  # six episodes on level 1 (task 0.0): ALP 0 so far
    assert s.tasks_alps[-1] == [0.0, 0.0]
    s.update([stat(10, 0.9), stat(0, 0.8)])  # mid (task 0.5) nearest is level 1's 0.5; easy: 0.5 -> 0.8
    assert s.tasks_alps[-2] == [0.5, pytest.approx(0.4)] and s.tasks_alps[-1] == [0.0, pytest.approx(0.3)]
    assert s.gmm is None
    s.update([stat(20 + i % 10, 0.0) for i in range(12)])  # 20 episodes: first fit
    assert s.gmm is not None and s.fits == 1 and len(s.gmm["weights"]) >= 2
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal([0.0, 0.1], 0.02, (50, 2)), rng.normal([1.0, 0.6], 0.02, (50, 2))])
    params, _ = fit_gmm(x, 2, np.random.default_rng(1))
    means = sorted(params["means"])
    assert means[0] == pytest.approx([0.0, 0.1], abs=0.02) and means[1] == pytest.approx([1.0, 0.6], abs=0.02)


def test_lim_score_matches_hand_computation():
    acc = np.array([[0.0, 0.5, 1.0], [0.0, 0.0, 0.0], [1.0, 1.0, 1.0]])
    mean = acc.mean(axis=0)  # [1/3, 1/2, 2/3]
    denom = (1 - 1 / 3) ** 2 + 0.5**2 + (1 - 2 / 3) ** 2
    expect = [1 - ((acc[i] - mean) ** 2).sum() / denom for i in range(3)]
    assert lim_scores(acc) == pytest.approx(expect)


def run_warmup(s, rates: dict, steps: int, batch: int = 10):
    for _ in range(steps):
        s.update([stat(i, rates(i, s.stats.step)) for i in s.next(batch)])


def test_limr_keeps_prompts_on_the_average_learning_curve():
    s = SAMPLERS.get("limr")(POOL, 0, warmup_epochs=3, keep_fraction=0.1)
    # pool 30, batch 10: 3 steps per epoch. mid prompts learn (0 -> 0.5 -> 1), others are flat.
    curve = {0: 0.0, 1: 0.5, 2: 1.0}
    run_warmup(s, lambda i, t: curve[t // 3] if SRC[i] == "mid" else (1.0 if SRC[i] == "easy" else 0.0), 9)
    assert s.selected is not None and sources(s.selected) == {"mid"} and len(s.selected) == 3
    assert sources(s.next(10)) == {"mid"}
    idx, acc = s.trajectories()
    assert len(idx) == 30 and acc.shape == (30, 3)


def test_limr_gap_fill_follows_the_official_rule():
    s = SAMPLERS.get("limr")(POOL, 0, warmup_epochs=3)
    s.traj = {"0": {"1": [0.5, 1], "2": [1.0, 1]}, "1": {"0": [0.0, 1], "2": [1.0, 1]}, "2": {"0": [0.0, 1]}}
    idx, acc = s.trajectories()
    assert idx == [0, 1] and acc.tolist() == [[0.5, 0.5, 1.0], [0.0, 1.0, 1.0]]


def test_few_shot_picks_highest_variance_prompt_and_repeats_it():
    s = SAMPLERS.get("few_shot")(POOL, 0, k=1, warmup_epochs=2)
    target = 13
    run_warmup(s, lambda i, t: (0.0 if t < 3 else 1.0) if i == target else (0.4 if t < 3 else 0.6), 6)
    assert s.selected == [target] and s.scores == [pytest.approx(0.5)]
    assert s.next(4) == [target] * 4
    two = SAMPLERS.get("few_shot")(POOL, 0, k=2, warmup_epochs=2)
    run_warmup(two, lambda i, t: (0.0 if t < 3 else 1.0) if i in (3, 7) else 0.5, 6)
    assert sorted(two.selected) == [3, 7] and sorted(two.next(4)) == [3, 3, 7, 7]


def test_selection_without_trajectories_falls_back():
    s = SAMPLERS.get("few_shot")(POOL, 0, warmup_epochs=1, epoch_steps=1, fallback="error")
    s.next(4)
    s.update([])  # a step that observed nothing: no prompt can be scored
    assert s.selected == []
    with pytest.raises(ValueError, match="sampler 'few_shot' cannot fill.*scored=0"):
        s.next(4)


KNOBS = {"limr": {"warmup_epochs": 2}, "few_shot": {"warmup_epochs": 2}, "alp_gmm": {"fit_rate": 16},
         "mixture": {"weights": {"easy": 1, "hard": 2}}}


@pytest.mark.parametrize("name", sorted(SAMPLERS.names()))
def test_state_round_trips_through_json(name):
    rng = np.random.default_rng(0)
    s = SAMPLERS.get(name)(POOL, 7, **KNOBS.get(name, {}))
    for step in range(12):
        batch = s.next(6) + (s.next(2) if step % 3 == 0 else [])  # the loop may call next() twice
        s.update([stat(i, float(np.clip({"easy": 0.9, "mid": 0.5, "hard": 0.05}[SRC[i]] + rng.normal(0, 0.1), 0, 1)))
                  for i in batch])
    s.next(3)  # state taken between next() and update() must round-trip too
    state = json.loads(json.dumps(s.state_dict()))
    t = SAMPLERS.get(name)(POOL, 7, **KNOBS.get(name, {}))
    t.load_state_dict(state)
    assert json.dumps(t.state_dict(), sort_keys=True) == json.dumps(s.state_dict(), sort_keys=True)
    for _ in range(4):
        a, b = s.next(5), t.next(5)
        assert a == b
        stats = [stat(i, 0.5) for i in a]
        assert s.update(stats) == t.update(stats)


def test_warmup_subset_is_revisited_every_epoch():
    s = SAMPLERS.get("limr")(POOL, 0, warmup_epochs=2, subset=8, keep_fraction=0.25)
    sub = set(s.warmup_pool.tolist())
    assert len(sub) == 8
    drawn = []
    for _ in range(4):  # batch 4, 8 prompts: 2 steps per epoch
        b = s.next(4)
        drawn += b
        s.update([stat(i, 0.5) for i in b])
    assert set(drawn) == sub and drawn.count(drawn[0]) == 2
    assert s.selected is not None and len(s.selected) == 2 and set(s.selected) <= sub
