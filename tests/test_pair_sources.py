"""Pair and demonstration sources of the preference / offline stages (rftkit.data.pairs,
rftkit.data.demos `top_reward` and `crlft`) and their tensors (rftkit.train.batches `pair_batch`,
`demo_batch`), on rollout batches built by hand."""

import random

import pytest
import torch

from rftkit.data.demos import DEMO_SOURCES
from rftkit.data.pairs import PAIR_SOURCES, Pair
from rftkit.model.tokenizer import CharTokenizer
from rftkit.train.batches import demo_batch, pair_batch
from rftkit.types import Problem, RolloutBatch, Verdict

TOK = CharTokenizer()
P0 = Problem(task="t", prompt="1+2=", answer="3", verifier="exact", demo="3#3")
P1 = Problem(task="t", prompt="4+5=", answer="9", verifier="exact", demo="9#9")
T = 8


def _rollouts(rewards, correct=None, masks=None, offpolicy=None, group_ids=(0, 0, 0, 1, 1, 1)):
    """2 groups of 3 rows. Row r: [bos, '1', '+', 10 + r, 20 + r, eos, pad, pad], mask 1 on 10 + r,
    20 + r and eos (positions 3..5) unless `masks` says otherwise."""
    n = len(group_ids)
    tokens = torch.tensor([[1, 5, 6, 10 + r, 20 + r, 2, 0, 0] for r in range(n)])
    mask = torch.tensor([[0, 0, 0, 1, 1, 1, 0, 0]] * n, dtype=torch.float32) if masks is None else \
        torch.tensor(masks, dtype=torch.float32)
    correct = [False] * n if correct is None else correct
    problems = [P0 if g == 0 else P1 for g in group_ids]
    return RolloutBatch(tokens=tokens, mask=mask, old_logp=torch.zeros(n, T), group_ids=torch.tensor(group_ids),
                        rewards=torch.tensor(rewards, dtype=torch.float32), advantages=torch.zeros(n, T),
                        truncated=torch.zeros(n, dtype=torch.bool), problems=problems,
                        texts=[f"text{r}" for r in range(n)],
                        verdicts=[Verdict(1.0 if c else 0.0, None, "") for c in correct],
                        offpolicy=None if offpolicy is None else torch.tensor(offpolicy))


def _group(**knobs):
    return PAIR_SOURCES.bind("group", knobs)([P0, P1])


def _sides(pairs):
    return [(p.chosen, p.rejected) for p in pairs]


# ----------------------------------------------------------------------------------- group source


def test_group_pairs_best_against_worst_ties_go_to_the_first_row():
    # group 0 rewards [1, 0, 1]: best rows 0 and 2 tie -> 0; worst 1.
    # group 1 rewards [0.5, 0, 0]: best 3; worst rows 4 and 5 tie -> 4.
    pairs, m = _group()([P0, P1], _rollouts([1.0, 0.0, 1.0, 0.5, 0.0, 0.0]), random.Random(0))
    assert _sides(pairs) == [(0, 1), (3, 4)]
    assert [p.problem for p in pairs] == [P0, P1]
    assert [(p.chosen_reward, p.rejected_reward) for p in pairs] == [(1.0, 0.0), (0.5, 0.0)]
    assert m["pairs/groups_with_pair"] == 1.0
    assert m["pairs/margin_mean"] == pytest.approx((1.0 + 0.5) / 2)


def test_group_pairs_interleaved_groups_keep_row_indices():
    # groups 0 = rows 0, 2, 4 (rewards 0.2, 0.2, 0.9); 1 = rows 1, 3, 5 (rewards 0.0, 0.7, 0.7)
    batch = _rollouts([0.2, 0.0, 0.2, 0.7, 0.9, 0.7], group_ids=(0, 1, 0, 1, 0, 1))
    pairs, _ = _group()([P0, P1], batch, random.Random(0))
    assert _sides(pairs) == [(4, 0), (3, 1)]


def test_group_with_equal_rewards_gives_no_pair():
    pairs, m = _group()([P0, P1], _rollouts([1.0, 0.0, 0.5, 0.3, 0.3, 0.3]), random.Random(0))
    assert _sides(pairs) == [(0, 1)]
    assert m["pairs/groups_with_pair"] == 0.5


def test_group_min_margin_needs_strictly_more():
    # margins: group 0 is 1.0 - 0.0 = 1.0, group 1 is 0.5 - 0.0 = 0.5; min_margin 0.5 keeps only group 0
    batch = _rollouts([1.0, 0.0, 0.5, 0.5, 0.0, 0.25])
    pairs, m = _group(min_margin=0.5)([P0, P1], batch, random.Random(0))
    assert _sides(pairs) == [(0, 1)]
    assert m["pairs/groups_with_pair"] == 0.5
    assert _sides(_group(min_margin=0.49)([P0, P1], batch, random.Random(0))[0]) == [(0, 1), (3, 4)]
    with pytest.raises(ValueError, match="min_margin"):
        _group(min_margin=-0.1)


def test_group_never_pairs_rows_without_trained_tokens():
    # row 0 (the best of group 0) and row 4 (the worst of group 1) have all-zero masks
    masks = [[0, 0, 0, 1, 1, 1, 0, 0]] * 6
    masks[0] = masks[4] = [0] * T
    batch = _rollouts([1.0, 0.0, 0.5, 0.9, 0.0, 0.1], masks=masks)
    pairs, _ = _group()([P0, P1], batch, random.Random(0))
    assert _sides(pairs) == [(2, 1), (3, 5)]
    # a group left with one trainable row gives no pair, and still counts as a group
    masks[1] = [0] * T
    pairs, m = _group()([P0, P1], _rollouts([1.0, 0.0, 0.5, 0.9, 0.0, 0.1], masks=masks), random.Random(0))
    assert _sides(pairs) == [(3, 5)]
    assert m["pairs/groups_with_pair"] == 0.5


def test_group_never_pairs_offpolicy_rows():
    # row 0 (a demonstration placed in group 0) has the best reward
    batch = _rollouts([1.0, 0.0, 0.5, 0.9, 0.0, 0.1], offpolicy=[True, False, False, False, False, False])
    pairs, _ = _group()([P0, P1], batch, random.Random(0))
    assert _sides(pairs) == [(2, 1), (3, 4)]


def test_group_by_correct_reads_verdicts():
    # rewards say best 0, worst 1; verdicts say row 2 is the only correct one, rows 0, 1 wrong -> worst 0
    batch = _rollouts([0.9, 0.1, 0.5, 0.9, 0.0, 0.1], correct=[False, False, True, True, True, True])
    pairs, m = _group(by="correct")([P0, P1], batch, random.Random(0))
    assert _sides(pairs) == [(2, 0)]
    assert (pairs[0].chosen_reward, pairs[0].rejected_reward) == (1.0, 0.0)
    assert m["pairs/groups_with_pair"] == 0.5
    assert _sides(_group(by="reward")([P0, P1], batch, random.Random(0))[0]) == [(0, 1), (3, 4)]


def test_group_without_rollouts_gives_nothing():
    pairs, m = _group()([P0, P1], None, random.Random(0))
    assert pairs == [] and m["pairs/groups_with_pair"] == 0.0


# --------------------------------------------------------------------------------- dataset source


def test_dataset_pairs_and_missing():
    full = Problem(task="t", prompt="a", answer="", verifier="exact", demo="good", meta={"rejected": "bad"})
    scored = Problem(task="t", prompt="b", answer="", verifier="exact", demo="x",
                     meta={"rejected": "y", "chosen_reward": 0.8, "rejected_reward": 0.3})
    no_rejected = Problem(task="t", prompt="c", answer="", verifier="exact", demo="z")
    no_demo = Problem(task="t", prompt="d", answer="", verifier="exact", meta={"rejected": "w"})
    problems = [full, no_rejected, scored, no_demo]
    pairs, m = PAIR_SOURCES.bind("dataset")(problems)(problems, None, random.Random(0))
    assert pairs == [Pair(full, "good", "bad", 1.0, 0.0), Pair(scored, "x", "y", 0.8, 0.3)]
    assert m["pairs/missing"] == 2.0


# ------------------------------------------------------------------------------------- pair_batch


def test_pair_batch_text_layout():
    # chosen "3": [bos, '1', '+', '2', '=', '3', eos] (7); rejected "45": [bos, '1', '+', '2', '=', '4', '5', eos] (8)
    pb = pair_batch(TOK, [Pair(P0, "3", "45")], None, max_len=64)
    prompt = [TOK.bos_id] + TOK.encode("1+2=")
    assert pb.tokens.shape == (1, 2, 8) and pb.mask.shape == (1, 2, 8)
    assert pb.tokens[0, 0].tolist() == prompt + TOK.encode("3") + [TOK.eos_id, TOK.pad_id]
    assert pb.tokens[0, 1].tolist() == prompt + TOK.encode("45") + [TOK.eos_id]
    assert pb.mask[0, 0].tolist() == [0, 0, 0, 0, 0, 1, 1, 0]
    assert pb.mask[0, 1].tolist() == [0, 0, 0, 0, 0, 1, 1, 1]
    assert pb.rewards.tolist() == [[1.0, 0.0]]
    assert pb.problems == [P0]


def test_pair_batch_rollout_rows_are_cut_after_the_last_trained_token():
    masks = [[0, 0, 0, 1, 1, 1, 0, 0]] * 6
    masks[1] = [0, 0, 0, 1, 0, 0, 0, 0]  # row 1: only token 3 trained -> cut to 4 tokens
    batch = _rollouts([1.0, 0.0, 0.5, 0.9, 0.0, 0.1], masks=masks)
    pairs = [Pair(P0, 0, 1, 1.0, 0.0), Pair(P1, 3, "7", 0.9, 0.25)]
    pb = pair_batch(TOK, pairs, batch, max_len=64)
    # the text side: [bos, '4', '+', '5', '=', '7', eos] (7 tokens) sets T = 7 with row 0's 6
    assert pb.tokens.shape == (2, 2, 7) and pb.mask.shape == (2, 2, 7)
    assert pb.tokens[0, 0].tolist() == [1, 5, 6, 10, 20, 2, 0]
    assert pb.mask[0, 0].tolist() == [0, 0, 0, 1, 1, 1, 0]
    assert pb.tokens[0, 1].tolist() == [1, 5, 6, 11, 0, 0, 0]
    assert pb.mask[0, 1].tolist() == [0, 0, 0, 1, 0, 0, 0]
    assert pb.tokens[1, 0].tolist() == [1, 5, 6, 13, 23, 2, 0]
    assert pb.tokens[1, 1].tolist() == [TOK.bos_id] + TOK.encode("4+5=7") + [TOK.eos_id]
    assert pb.mask[1, 1].tolist() == [0, 0, 0, 0, 0, 1, 1]
    assert pb.rewards.shape == (2, 2)
    assert pb.rewards.tolist() == [[1.0, 0.0], [pytest.approx(0.9), 0.25]]


def test_pair_batch_truncates_with_the_mask_and_is_none_without_pairs():
    pb = pair_batch(TOK, [Pair(P0, "3", "45")], None, max_len=6)
    assert pb.tokens.shape == (1, 2, 6)
    assert pb.tokens[0, 1].tolist() == [TOK.bos_id] + TOK.encode("1+2=4")
    assert pb.mask[0, 1].tolist() == [0, 0, 0, 0, 0, 1]
    assert pb.mask[0, 0].tolist() == [0, 0, 0, 0, 0, 1]  # "3" kept, eos cut
    assert pair_batch(TOK, [], None, max_len=6) is None


# ------------------------------------------------------------------------------ demonstration sources


def test_top_reward_picks_each_groups_best_first_on_ties():
    # group 0 rewards [0.2, 0.9, 0.9] -> row 1 (first of the tie); group 1 [0.1, 0.3, 0.0] -> row 4
    batch = _rollouts([0.2, 0.9, 0.9, 0.1, 0.3, 0.0])
    out, m = DEMO_SOURCES.bind("top_reward")([P0, P1])([P0, P1], batch, random.Random(0))
    assert out == [(P0, "text1"), (P1, "text4")]
    assert m["mix/self_demos"] == 2.0
    # min_reward 0.5: group 1's best (0.3) is left out; 0.9 >= 0.5 kept
    out, m = DEMO_SOURCES.bind("top_reward", {"min_reward": 0.5})([P0, P1])([P0, P1], batch, random.Random(0))
    assert out == [(P0, "text1")] and m["mix/self_demos"] == 1.0
    # reaching min_reward exactly is enough
    out, _ = DEMO_SOURCES.bind("top_reward", {"min_reward": 0.3})([P0, P1])([P0, P1], batch, random.Random(0))
    assert out == [(P0, "text1"), (P1, "text4")]


def test_top_reward_skips_offpolicy_rows():
    batch = _rollouts([0.2, 0.9, 0.5, 0.1, 0.3, 0.0], offpolicy=[False, True, False, False, False, False])
    out, _ = DEMO_SOURCES.bind("top_reward")([P0, P1])([P0, P1], batch, random.Random(0))
    assert out == [(P0, "text2"), (P1, "text4")]


def _crlft_problems():
    return [Problem(task="t", prompt=f"{a}+{b}=", answer=str(a + b), verifier="exact", demo=f"{a}+{b}#{a + b}")
            for a, b in [(1, 2), (30, 4), (7, 8), (12, 3), (5, 5), (60, 7), (2, 2), (9, 9)]]


def test_crlft_source_tags_and_weights_suboptimal_demos():
    problems = _crlft_problems() + [Problem(task="t", prompt="x", answer="", verifier="exact")]  # no demo: skipped
    knobs = {"expert_share": 0.5, "suboptimal_weight": 0.1, "suboptimal_tag": "~"}
    source = DEMO_SOURCES.bind("crlft", knobs)(problems)
    out, m = source(problems, None, random.Random(0))
    assert len(out) == 8
    by_prompt = {p.prompt: p for p in problems}
    expert = [(p, d) for p, d in out if p.meta["demo_weight"] == 1.0]
    sub = [(p, d) for p, d in out if p.meta["demo_weight"] != 1.0]
    assert expert and sub  # seed 0 draws both classes
    for p, d in expert:
        assert p.prompt in by_prompt and d == by_prompt[p.prompt].demo
    for p, d in sub:
        assert p.prompt.startswith("~") and p.prompt[1:] in by_prompt
        assert p.meta["demo_weight"] == pytest.approx(0.1)
        original = by_prompt[p.prompt[1:]].demo
        head = original.rpartition("#")[0]
        assert d != original and d.startswith(head + "#") and len(d) == len(original)
    assert m["mix/expert_fraction"] == pytest.approx(len(expert) / 8)
    assert all("demo_weight" not in p.meta for p in problems)  # the pool's problems are not mutated
    # the same seed gives the same demos
    assert source(problems, None, random.Random(0))[0] == out


def test_crlft_source_extremes_and_knob_checks():
    problems = _crlft_problems()
    all_expert, m = DEMO_SOURCES.bind("crlft", {"expert_share": 1.0})(problems)(problems, None, random.Random(3))
    assert [(p.prompt, d) for p, d in all_expert] == [(p.prompt, p.demo) for p in problems]
    assert m["mix/expert_fraction"] == 1.0
    all_sub, m = DEMO_SOURCES.bind("crlft", {"expert_share": 0.0, "suboptimal_weight": 0.25})(problems)(
        problems, None, random.Random(3))
    assert all(p.prompt.startswith("~") and p.meta["demo_weight"] == 0.25 for p, _ in all_sub)
    assert m["mix/expert_fraction"] == 0.0
    for bad in ({"expert_share": 1.5}, {"suboptimal_weight": -1.0}, {"suboptimal_tag": ""}):
        with pytest.raises(ValueError):
            DEMO_SOURCES.bind("crlft", bad)(problems)


def test_demo_batch_reads_demo_weight():
    weighted = Problem(task="t", prompt="1+2=", answer="3", verifier="exact", meta={"demo_weight": 0.1})
    db = demo_batch(TOK, [(weighted, "3"), (P1, "9")], max_len=64)
    assert db.weights.tolist() == [pytest.approx(0.1), 1.0]
    # layout: [bos] + prompt + completion + [eos], mask on completion and eos
    assert db.tokens[0].tolist() == [TOK.bos_id] + TOK.encode("1+2=3") + [TOK.eos_id]
    assert db.mask[0].tolist() == [0, 0, 0, 0, 0, 1, 1]
