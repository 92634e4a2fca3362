"""Built-in visual tasks: determinism, images, demos that verify, non-overlapping objects, the OOD
split, and the "iou" and "jigsaw" verifiers against hand-computed scores and malformed answers."""

from __future__ import annotations

import inspect
import random
import re
import time

import numpy as np
import pytest

import rftkit.tasks  # noqa: F401  (registers the built-in tasks)
from rftkit.model.tokenizer import ALPHABET
from rftkit.tasks.base import TASKS, Task, corrupt_answer, verify
from rftkit.tasks.vision_draw import (
    COLOURS,
    PALETTE,
    SHAPES,
    Obj,
    apart,
    is_held_out,
    place,
    render,
    shape_mask,
    shuffle_pieces,
)
from rftkit.tasks.vision_frames import displaced
from rftkit.tasks.vision_verifiers import box_iou, parse_box
from rftkit.types import ANSWER_MARKER, Problem

VISION = ["vision_count", "vision_classify", "vision_ground", "vision_spatial", "vision_jigsaw", "vision_change"]
CONFIGS = [
    ("vision_count", {}), ("vision_count", {"by": "colour", "think": True}), ("vision_count", {"by": "all"}),
    ("vision_classify", {}), ("vision_classify", {"label": "colour", "think": True}),
    ("vision_ground", {}), ("vision_ground", {"size": 48, "held_out": False}),
    ("vision_spatial", {}), ("vision_spatial", {"relation": "nearest"}),
    ("vision_jigsaw", {}), ("vision_jigsaw", {"size": 40, "shapes": 0}),
    ("vision_change", {}), ("vision_change", {"ask": "colour"}),
]
IDS = [f"{name}-{'-'.join(f'{k}={v}' for k, v in kw.items()) or 'default'}" for name, kw in CONFIGS]
IMAGE_TOKENS, CONTEXT = 16, 96  # the built-in VLM: 16 tokens per 32x32 image, a small context


def make(name: str, knobs: dict) -> Task:
    return TASKS.get(name)(**knobs)


def samples(task: Task, n: int, seed: int = 0, split: str = "both") -> list[Problem]:
    (lo, hi), (olo, ohi) = task.default_difficulty, task.default_ood
    ds = {"ind": range(lo, hi + 1), "ood": range(olo, ohi + 1)}.get(split, [*range(lo, hi + 1), *range(olo, ohi + 1)])
    rng = random.Random(seed)
    return [task.sample(rng, d) for d in ds for _ in range(n)]


def objects(rows: list[list]) -> list[Obj]:
    return [Obj(*row) for row in rows]


def test_registered_with_conventions() -> None:
    for name in VISION:
        cls = TASKS.get(name)
        assert cls.name == name and isinstance(cls(), Task)
        (lo, hi), (olo, ohi) = cls.default_difficulty, cls.default_ood
        assert 1 <= lo <= hi < olo <= ohi
        for p in list(inspect.signature(cls.__init__).parameters.values())[1:]:
            assert p.kind is inspect.Parameter.KEYWORD_ONLY and p.default is not p.empty, (name, p.name)
            assert p.annotation is not p.empty, (name, p.name)


@pytest.mark.parametrize(("name", "knobs"), CONFIGS, ids=IDS)
def test_deterministic_images_and_demos(name: str, knobs: dict) -> None:
    task = make(name, knobs)
    a, b = samples(task, 3, seed=7), samples(task, 3, seed=7)
    assert a == b and [p.key for p in a] == [p.key for p in b]
    assert [p.key for p in a] != [p.key for p in samples(task, 3, seed=8)]
    size = knobs.get("size", 32)
    for p in samples(task, 25):
        assert p.task == p.source == name and len(p.images) == (2 if name == "vision_change" else 1)
        for im in p.images:
            assert im.pixels.dtype == np.uint8 and im.pixels.shape == (size, size, 3)
        assert verify(p, p.demo).score == 1.0, (p.prompt, p.demo, verify(p, p.demo))
        assert set(p.prompt + p.demo) <= set(ALPHABET), p.prompt + p.demo
        assert re.fullmatch(r"[a-z]+:[a-z0-9:, ]+=", p.prompt) and ANSWER_MARKER not in p.prompt
        assert len(p.prompt) <= 20 and len(p.demo) <= 40, (p.prompt, p.demo)
        assert IMAGE_TOKENS * len(p.images) + len(p.prompt) + len(p.demo) + 2 <= CONTEXT


@pytest.mark.parametrize(("name", "knobs"), [c for c in CONFIGS if c[0] != "vision_jigsaw"],
                         ids=[i for i in IDS if not i.startswith("vision_jigsaw")])
def test_objects_apart_and_drawn_where_stated(name: str, knobs: dict) -> None:
    size = knobs.get("size", 32)
    for p in samples(make(name, knobs), 10):
        frames = [p.meta["before"], p.meta["after"]] if name == "vision_change" else [p.meta["objects"]]
        for rows, im in zip(frames, p.images):
            objs = objects(rows)
            assert all(apart(a.box, b.box) for i, a in enumerate(objs) for b in objs[i + 1:]), rows
            assert np.array_equal(render(objs, size), im.pixels)
            for o in objs:  # the box is tight: the colour reaches all four sides of it
                x0, y0, x1, y1 = o.box
                inside = (im.pixels[y0:y1 + 1, x0:x1 + 1] == PALETTE[o.colour]).all(axis=2)
                assert inside[0].any() and inside[-1].any() and inside[:, 0].any() and inside[:, -1].any()


def test_shape_masks_fill_their_square() -> None:
    assert shape_mask("triangle", 5).astype(int).tolist() == [
        [0, 0, 1, 0, 0], [0, 1, 1, 1, 0], [0, 1, 1, 1, 0], [1, 1, 1, 1, 1], [1, 1, 1, 1, 1]]
    assert shape_mask("circle", 5).astype(int).tolist() == [
        [0, 1, 1, 1, 0], [1, 1, 1, 1, 1], [1, 1, 1, 1, 1], [1, 1, 1, 1, 1], [0, 1, 1, 1, 0]]
    assert shape_mask("cross", 5)[2].all() and shape_mask("cross", 5)[:, 2].all() and shape_mask("cross", 5).sum() == 9
    for shape in SHAPES:
        for n in range(3, 16):
            m = shape_mask(shape, n)
            assert m[0].any() and m[-1].any() and m[:, 0].any() and m[:, -1].any()
            assert (m == m[:, ::-1]).all()  # left-right symmetric
    with pytest.raises(ValueError, match="shape"):
        shape_mask("star", 5)


def test_held_out_pairs_and_placement_errors() -> None:
    held = [(s, c) for s in SHAPES for c in COLOURS if is_held_out(s, c)]
    assert len(held) == 8 and {c for _, c in held} == set(COLOURS)
    assert all(sum(s == shape for s, _ in held) == 2 for shape in SHAPES)
    with pytest.raises(ValueError, match="cannot place 9 objects"):
        place(random.Random(0), 16, [("square", "red", 7)] * 9, restarts=5)
    with pytest.raises(ValueError, match="size must be at least 16"):
        TASKS.get("vision_count")(size=8)


@pytest.mark.parametrize("name", ["vision_count", "vision_classify", "vision_ground", "vision_spatial"])
def test_ood_has_more_objects_and_held_out_pairs(name: str) -> None:
    task = make(name, {"by": "colour"} if name == "vision_count" else {})
    ind, ood = samples(task, 30, split="ind"), samples(task, 30, split="ood")
    assert max(len(p.meta["objects"]) for p in ind) < min(len(p.meta["objects"]) for p in ood)
    assert not any(is_held_out(s, c) for p in ind for s, c, *_ in p.meta["objects"])
    if name in ("vision_classify", "vision_ground", "vision_spatial"):  # the asked object is object 0
        assert all(is_held_out(*p.meta["objects"][0][:2]) for p in ood)
    else:  # every counted (red, ...) object is a held-out pair
        assert all(is_held_out(s, c) for p in ood for s, c, *_ in p.meta["objects"] if p.prompt == f"count:{c}=")
    unheld = make(name, {"held_out": False})
    assert any(is_held_out(s, c) for p in samples(unheld, 30, split="ind") for s, c, *_ in p.meta["objects"])


def test_ood_change_and_jigsaw() -> None:
    ind, ood = (samples(make("vision_change", {}), 40, split=s) for s in ("ind", "ood"))
    assert max(len(p.meta["before"]) for p in ind) < min(len(p.meta["before"]) for p in ood)
    jig = make("vision_jigsaw", {})
    assert {p.prompt for p in samples(jig, 5, split="ind")} == {"jigsaw:2x2="}
    assert {p.prompt for p in samples(jig, 5, split="ood")} == {"jigsaw:3x3="}


def test_answers_follow_the_scene() -> None:
    rng = random.Random(1)
    counter = make("vision_count", {"by": "shape"})
    for p in (counter.sample(rng, 5) for _ in range(50)):
        shape = p.prompt[len("count:"):-1]
        assert p.answer == str(sum(s == shape for s, *_ in p.meta["objects"]))
    spatial = make("vision_spatial", {"relation": "left"})
    for p in (spatial.sample(rng, 3) for _ in range(50)):
        a, b = p.prompt[len("left:"):-1].split(",")
        boxes = {o.colour: o.box for o in objects(p.meta["objects"])}
        assert p.answer == ("yes" if boxes[a][2] < boxes[b][0] else "no") and (boxes[a][2] < boxes[b][0]
                                                                               or boxes[b][2] < boxes[a][0])
    change = make("vision_change", {})
    sizes = {"moved": 0, "added": 1, "removed": -1, "recoloured": 0}
    for p in (change.sample(rng, 3) for _ in range(80)):
        before, after = p.meta["before"], p.meta["after"]
        assert len(after) - len(before) == sizes[p.answer]
        if p.answer == "moved":
            assert [r[:2] for r in before] == [r[:2] for r in after] and before[0][2:4] != after[0][2:4]
        if p.answer == "recoloured":
            assert before[0][1] != after[0][1] and before[1:] == after[1:]
        assert len({c for _, c, *_ in after}) == len(after)  # distinct colours in a frame


def test_jigsaw_pieces_and_permutations() -> None:
    pixels = np.zeros((5, 5, 3), dtype=np.uint8)  # 2x2 pieces of 2 px, labelled 0..3; the last row/col stays
    for i in range(4):
        r, c = divmod(i, 2)
        pixels[2 * r:2 * r + 2, 2 * c:2 * c + 2] = i
    pixels[4, :] = pixels[:, 4] = 9
    out = shuffle_pieces(pixels, 2, [2, 0, 3, 1])
    assert out[:4:2, :4:2, 0].tolist() == [[2, 0], [3, 1]] and (out[4] == 9).all() and (out[:, 4] == 9).all()
    rng = random.Random(0)
    for n, k in [(4, 2), (4, 3), (4, 4), (9, 5), (9, 9)]:
        for _ in range(20):
            perm = displaced(rng, n, k)
            assert sorted(perm) == list(range(n)) and sum(p != i for i, p in enumerate(perm)) == k


def problem(verifier: str, answer: str, **meta) -> Problem:
    return Problem(task="t", prompt="x:=", answer=answer, verifier=verifier, meta=meta)


def test_iou_hand_computed() -> None:
    assert box_iou((0, 0, 3, 3), (0, 0, 3, 3)) == 1.0
    assert box_iou((0, 0, 3, 3), (1, 1, 2, 2)) == 4 / 16  # 2x2 inside 4x4
    assert box_iou((0, 0, 3, 3), (4, 0, 7, 3)) == 0.0  # touching edges, disjoint pixels
    assert box_iou((0, 0, 3, 3), (2, 0, 5, 3)) == 8 / 24  # half overlap: 8 / (16 + 16 - 8)
    assert box_iou((5, 5, 5, 5), (5, 5, 5, 5)) == 1.0  # one pixel
    gold = problem("iou", "0,0,3,3", image_size=[8, 8])
    cases = {  # answer -> score = 0.5 + 0.5 * min(IoU / 0.5, 1)
        "0,0,3,3": 1.0, "[0, 0, 3, 3]": 1.0, "(1,1,2,2)": 0.5 + 0.5 * 0.5, "4,4,7,7": 0.5,
        "2,0,5,3": 0.5 + 0.5 * (1 / 3) / 0.5, "0,0,3,4": 1.0,
        "-2,-2,3,3": 0.5 + 0.5 * (16 / 36) / 0.5,  # partly outside: scored as written, area 36
        "0,0,3,100": 0.5 + 0.5 * (16 / 404) / 0.5,
    }
    for answer, score in cases.items():
        assert verify(gold, ANSWER_MARKER + answer).score == pytest.approx(score), answer
    assert "outside the image" in verify(gold, "#-2,-2,3,3").reason
    strict = problem("iou", "0,0,3,3", image_size=[8, 8], iou_threshold=1.0)
    assert verify(strict, "#1,1,2,2").score == pytest.approx(0.5 + 0.5 * 0.25)
    assert verify(strict, "#0,0,3,4").score == pytest.approx(0.5 + 0.5 * 16 / 20)
    assert verify(strict, "#0,0,3,3").correct


@pytest.mark.parametrize(("answer", "reason"), [
    ("#3,0,0,3", "negative size"), ("#0,3,3,0", "negative size"), ("#a,b,c,d", "four integers"),
    ("#0,0,3", "four integers"), ("#0,0,3,3,4", "four integers"), ("#0.5,0,3,3", "four integers"),
    ("#the red circle", "four integers"), ("#20,20,30,30", "outside"), ("#-9,-9,-1,-1", "outside"),
    ("", "marker"), ("0,0,3,3", "marker"), ("#" + "1" * 1_000_000, "longer"), ("#1" + ",1" * 500_000, "longer"),
])
def test_iou_malformed(answer: str, reason: str) -> None:
    start = time.perf_counter()
    verdict = verify(problem("iou", "0,0,3,3", image_size=[8, 8]), answer)
    assert time.perf_counter() - start < 0.5
    assert verdict.score == 0.0 and reason in verdict.reason, verdict
    assert parse_box("3,0,0,3") == "negative size: x1 < x0 or y1 < y0 in 3,0,0,3"


def test_jigsaw_hand_computed_and_malformed() -> None:
    p = problem("jigsaw", "2031")
    assert verify(p, "#2031").score == 1.0 and verify(p, "#2, 0, 3, 1").score == 1.0
    assert verify(p, "#0231").score == 0.5  # positions 2 and 3 right
    assert verify(p, "#0123").score == 0.0 and verify(p, "#2310").score == 0.25
    assert verify(problem("jigsaw", "102345678"), "#012345678").score == pytest.approx(7 / 9)
    for bad, reason in [("#203", "4 digits"), ("#20311", "4 digits"), ("#2011", "permutation"),
                        ("#2041", "permutation"), ("#2o31", "digit"), ("#", "digit"), ("2031", "marker"),
                        ("#\u0662\u0660\u0663\u0661", "digit"), ("#" + "1" * 1_000_000, "longer")]:
        verdict = verify(p, bad)
        assert verdict.score == 0.0 and reason in verdict.reason, (bad, verdict)


@pytest.mark.parametrize("name", VISION)
def test_corrupted_demos_score_below_one(name: str) -> None:
    # At the default IoU threshold 0.5 a corrupted box may still overlap the target enough to be
    # correct; with threshold 1 every changed box scores < 1, and the IoU reward drops below 1.
    knobs = {"iou_threshold": 1.0} if name == "vision_ground" else {}
    rng, changed = random.Random(3), 0
    for p in samples(make(name, knobs), 15):
        bad = corrupt_answer(p.demo, rng)
        if bad != p.demo:
            changed += 1
            assert verify(p, bad).score < 1.0, (p.prompt, p.demo, bad)
    assert changed > 40
