"""Procedurally generated visual tasks: counting, classification, grounding, spatial relations.

Each problem holds one image (uint8 [size, size, 3], black background, coloured shapes drawn by
rftkit/tasks/vision_draw.py, never overlapping) and a short prompt; the completion ends in
"#" + the answer. Everything is a pure function of the rng, so pools are reproducible.

    vision_count     "count:circle=" -> "#3"             (think: "rc,bc,yc;#3")     exact
    vision_classify  "class:shape="  -> "#triangle"      (think: "red,edges:3;#triangle") exact
    vision_ground    "box:red circle=" -> "#12,3,18,9"    (inclusive pixel box)     iou
    vision_spatial   "left:red,blue=" -> "#yes", "nearest:red=" -> "#cyan"          exact

Jigsaw and the two-frame "what changed" task are in rftkit/tasks/vision_frames.py; the
verifiers "iou" and "jigsaw" in rftkit/tasks/vision_verifiers.py.

OOD split: `difficulty` counts objects, and the OOD range has more of them. With `held_out`
(default on) the OOD range is also a compositional test: in-distribution images never show
the 8 held-out colour-shape pairs of vision_draw.is_held_out, and at OOD difficulties the
object the question is about (the counted ones, the one to classify or box, the compared ones)
is drawn from those pairs, while the other objects may be any pair.

`think` (count, classify) shows a short trace of visual evidence before the answer; it is off
by default: CLS-RL (Li et al. 2025, arXiv:2503.16188) found no-thinking RL better for
classification, and the built-in model's context is small. Turn it on to compare.
"""

from __future__ import annotations

import random
from typing import ClassVar, Literal

import numpy as np

from rftkit.tasks.base import TASKS
from rftkit.tasks.vision_draw import COLOURS, EDGES, SHAPES, Obj, pick_pair, place, reading_order, render, scaled
from rftkit.types import ANSWER_MARKER, Image, Problem

OBJECT_SIDES = (6, 7)  # object sides at 32x32 (scaled with `size`): big enough for a 8 px patch ViT


def split_of(held_out: bool, ood: bool, target: bool) -> str:
    """Which colour-shape pairs an object may use (see the module docstring)."""
    if not held_out:
        return "any"
    if not ood:
        return "seen"
    return "held" if target else "any"


def check_size(task: str, size: int) -> None:
    if size < 16:
        raise ValueError(f"{task}: size must be at least 16 pixels, got {size}")


def side(rng: random.Random, size: int, sides: tuple[int, int] = OBJECT_SIDES) -> int:
    return scaled(rng.randint(*sides), size)


def as_meta(objs: list[Obj]) -> list[list]:
    """Objects as JSON-friendly rows [shape, colour, x0, y0, side]."""
    return [[o.shape, o.colour, o.x0, o.y0, o.size] for o in objs]


def make_problem(task, difficulty: int, prompt: str, answer: str, frames: list[np.ndarray], meta: dict,
                 trace: str = "", verifier: str = "exact") -> Problem:
    """The Problem of a visual task: demo = trace + marker + answer, images = the frames."""
    return Problem(task=task.name, prompt=prompt, answer=answer, verifier=verifier, difficulty=difficulty,
                   demo=trace + ANSWER_MARKER + answer, source=task.name, meta=meta,
                   images=tuple(Image(f) for f in frames))


@TASKS.register("vision_count")
class VisionCount:
    """Count the objects of one shape ("count:circle="), one colour ("count:red=") or all
    ("count:all="); the asked count is uniform in 0..difficulty (difficulty for "all").

    Knobs:
        by: "shape", "colour" or "all": what the prompt asks to count.
        think: the demo first lists the counted objects in reading order (top to bottom, then
            left to right) as colour+shape initials ("rc" = red circle; "none" for zero).
        size: image side in pixels (objects scale with it).
        held_out: OOD difficulties count objects of held-out colour-shape pairs.
    """

    name: ClassVar[str] = "vision_count"
    difficulty_doc: ClassVar[str] = "objects in the image (the asked count is 0..difficulty)"
    default_difficulty: ClassVar[tuple[int, int]] = (1, 5)
    default_ood: ClassVar[tuple[int, int]] = (6, 8)

    def __init__(self, *, by: Literal["shape", "colour", "all"] = "shape", think: bool = False, size: int = 32,
                 held_out: bool = True) -> None:
        if by not in ("shape", "colour", "all"):
            raise ValueError(f"vision_count: by must be 'shape', 'colour' or 'all', got {by!r}")
        check_size(self.name, size)
        self.by, self.think, self.size, self.held_out = by, think, size, held_out

    def sample(self, rng: random.Random, difficulty: int) -> Problem:
        n, ood = max(1, difficulty), difficulty >= self.default_ood[0]
        if self.by == "all":
            key, k = "all", n
            split = split_of(self.held_out, ood, target=False)
        else:
            key = rng.choice(SHAPES if self.by == "shape" else COLOURS)
            k = rng.randint(0, n)
            split = split_of(self.held_out, ood, target=True)

        def counted(s: str, c: str) -> bool:
            return key in ("all", s, c)

        pairs = [pick_pair(rng, split, counted) for _ in range(k)]
        other = split_of(self.held_out, ood, target=False)
        pairs += [pick_pair(rng, other, lambda s, c: not counted(s, c)) for _ in range(n - k)]
        objs = place(rng, self.size, [(s, c, side(rng, self.size)) for s, c in pairs])
        listed = [o.code for o in reading_order(objs) if counted(o.shape, o.colour)]
        trace = (",".join(listed) or "none") + ";" if self.think else ""
        return make_problem(self, difficulty, f"count:{key}=", str(k), [render(objs, self.size)],
                            {"objects": as_meta(objs), "by": self.by}, trace)


@TASKS.register("vision_classify")
class VisionClassify:
    """Name the shape (or colour) of the one large object; smaller distractors may surround it.

    Prompt "class:shape=" -> "#triangle" or "class:colour=" -> "#red" (CLS-RL's setting:
    classification learned by RL from a verifiable label).

    Knobs:
        label: "shape" or "colour": what to name.
        think: the demo first states the visual evidence, the colour and the number of
            straight edges (circle 0, triangle 3, square 4, cross 12): "red,edges:3;#triangle".
        size: image side in pixels.
        held_out: at OOD difficulties the large object is a held-out colour-shape pair.
    """

    name: ClassVar[str] = "vision_classify"
    difficulty_doc: ClassVar[str] = "objects: the large one plus difficulty - 1 small distractors"
    default_difficulty: ClassVar[tuple[int, int]] = (1, 3)
    default_ood: ClassVar[tuple[int, int]] = (4, 5)

    def __init__(self, *, label: Literal["shape", "colour"] = "shape", think: bool = False, size: int = 32,
                 held_out: bool = True) -> None:
        if label not in ("shape", "colour"):
            raise ValueError(f"vision_classify: label must be 'shape' or 'colour', got {label!r}")
        check_size(self.name, size)
        self.label, self.think, self.size, self.held_out = label, think, size, held_out

    def sample(self, rng: random.Random, difficulty: int) -> Problem:
        n, ood = max(1, difficulty), difficulty >= self.default_ood[0]
        shape, colour = pick_pair(rng, split_of(self.held_out, ood, target=True))
        items = [(shape, colour, side(rng, self.size, (10, 14)))]
        other = split_of(self.held_out, ood, target=False)
        items += [(*pick_pair(rng, other), scaled(5, self.size)) for _ in range(n - 1)]
        objs = place(rng, self.size, items)
        answer = shape if self.label == "shape" else colour
        trace = f"{colour},edges:{EDGES[shape]};" if self.think else ""
        return make_problem(self, difficulty, f"class:{self.label}=", answer, [render(objs, self.size)],
                            {"objects": as_meta(objs), "label": self.label}, trace)


@TASKS.register("vision_ground")
class VisionGround:
    """Box the object named by colour and shape: "box:red circle=" -> "#x0,y0,x1,y1".

    The box is the object's tight bounding box in inclusive pixel coordinates (x = column,
    y = row, 0-based). No distractor has the target's colour-shape pair, and about half of
    them share its colour or its shape, so the model must bind the two (Visual-RFT's grounding
    setting on synthetic scenes). Verifier "iou" (rftkit/tasks/vision_verifiers.py).

    Knobs:
        size: image side in pixels.
        held_out: at OOD difficulties the target is a held-out colour-shape pair.
        iou_threshold: the IoU from which an answer counts as correct (score 1); stored in
            each problem's meta. 0.5 is the usual grounding accuracy (Acc@0.5); 1.0 keeps
            the reward dense up to the exact box.
    """

    name: ClassVar[str] = "vision_ground"
    difficulty_doc: ClassVar[str] = "objects in the image (the target and difficulty - 1 distractors)"
    default_difficulty: ClassVar[tuple[int, int]] = (1, 4)
    default_ood: ClassVar[tuple[int, int]] = (5, 7)

    def __init__(self, *, size: int = 32, held_out: bool = True, iou_threshold: float = 0.5) -> None:
        check_size(self.name, size)
        if not 0 < iou_threshold <= 1:
            raise ValueError(f"vision_ground: iou_threshold must be in (0, 1], got {iou_threshold}")
        self.size, self.held_out, self.iou_threshold = size, held_out, iou_threshold

    def sample(self, rng: random.Random, difficulty: int) -> Problem:
        n, ood = max(1, difficulty), difficulty >= self.default_ood[0]
        target = pick_pair(rng, split_of(self.held_out, ood, target=True))
        other = split_of(self.held_out, ood, target=False)
        pairs = [target]
        for _ in range(n - 1):
            near = rng.random() < 0.5  # share the colour or the shape: the name must be read whole
            pairs.append(pick_pair(rng, other, lambda s, c, near=near: (s, c) != target
                                   and (not near or s == target[0] or c == target[1])))
        objs = place(rng, self.size, [(s, c, side(rng, self.size)) for s, c in pairs])
        box = objs[0].box
        return make_problem(self, difficulty, f"box:{target[1]} {target[0]}=", ",".join(map(str, box)),
                            [render(objs, self.size)],
                            {"objects": as_meta(objs), "box": list(box), "image_size": [self.size, self.size],
                             "iou_threshold": self.iou_threshold}, verifier="iou")


@TASKS.register("vision_spatial")
class VisionSpatial:
    """Spatial relations between objects of distinct colours, named by colour.

    "left:red,blue=" -> "#yes" iff the red object's box lies entirely left of the blue one's;
    "above:red,blue=" likewise for rows; "nearest:red=" -> "#cyan", the colour of the object
    whose centre is nearest the red one's. Scenes where the asked relation is unclear (boxes
    overlapping along the axis; a runner-up within 2 px of the nearest) are redrawn.

    Knobs:
        relation: "left", "above", "nearest" or "mix" (one of the three per problem).
        size: image side in pixels.
        held_out: at OOD difficulties the asked objects are held-out colour-shape pairs.
    """

    name: ClassVar[str] = "vision_spatial"
    difficulty_doc: ClassVar[str] = "objects in the image, each of a different colour"
    default_difficulty: ClassVar[tuple[int, int]] = (2, 3)
    default_ood: ClassVar[tuple[int, int]] = (4, 5)
    RELATIONS: ClassVar[tuple[str, ...]] = ("left", "above", "nearest")

    def __init__(self, *, relation: Literal["mix", "left", "above", "nearest"] = "mix", size: int = 32,
                 held_out: bool = True) -> None:
        if relation not in ("mix", *self.RELATIONS):
            raise ValueError(f"vision_spatial: relation must be 'mix', 'left', 'above' or 'nearest', got {relation!r}")
        check_size(self.name, size)
        self.relation, self.size, self.held_out = relation, size, held_out

    def sample(self, rng: random.Random, difficulty: int) -> Problem:
        n, ood = max(2, difficulty), difficulty >= self.default_ood[0]
        rel = rng.choice(self.RELATIONS) if self.relation == "mix" else self.relation
        for _ in range(200):
            used: set[str] = set()
            items = []
            for i in range(n):  # objects 0 and 1 are the ones asked about
                s, c = pick_pair(rng, split_of(self.held_out, ood, target=i < 2), lambda s, c, used=used: c not in used)
                used.add(c)
                items.append((s, c, side(rng, self.size)))
            objs = place(rng, self.size, items)
            asked = self._ask(rel, objs[0], objs[1], objs)
            if asked is not None:
                prompt, answer = asked
                return make_problem(self, difficulty, prompt, answer, [render(objs, self.size)],
                                    {"objects": as_meta(objs), "relation": rel})
        raise ValueError(f"vision_spatial: found no clear {rel!r} scene of {n} objects in {self.size}x{self.size}")

    @staticmethod
    def _ask(rel: str, a: Obj, b: Obj, objs: list[Obj]) -> tuple[str, str] | None:
        """(prompt, answer) about objects a and b, or None when the relation is unclear."""
        if rel == "nearest":
            dist = sorted((np.hypot(o.centre[0] - a.centre[0], o.centre[1] - a.centre[1]), o.colour)
                          for o in objs if o is not a)
            if len(dist) > 1 and dist[1][0] - dist[0][0] < 2:
                return None
            return f"nearest:{a.colour}=", dist[0][1]
        lo, hi = (0, 2) if rel == "left" else (1, 3)  # x0, x1 or y0, y1 of the boxes
        if a.box[hi] < b.box[lo]:
            return f"{rel}:{a.colour},{b.colour}=", "yes"
        if b.box[hi] < a.box[lo]:
            return f"{rel}:{a.colour},{b.colour}=", "no"
        return None
