"""Visual tasks about how images relate: a jigsaw of one image's pieces, and what changed
between two frames (the short-clip, "video" case of visual RFT).

    vision_jigsaw  "jigsaw:2x2=" -> "#2031"     verifier "jigsaw" (exact 1, else fraction in place)
    vision_change  "change:kind=" -> "#moved"   verifier "exact"; Problem.images = (frame0, frame1)

Jigsaw (Jigsaw-R1, Wang et al. 2025, arXiv:2505.23590): the picture, a dim two-way colour
gradient (so every piece differs from every other) with a few shapes on it, is cut into a
grid of square pieces numbered row-major, and some pieces are moved. The prompt image is the
shuffled one; the answer lists, for each position i of the shuffled image (row-major), the
original index of the piece now there: answer[i] = p[i] with shuffled[i] = original[p[i]].
`difficulty` is the number of pieces out of place: 2..4 on a 2x2 grid, 5..9 on a 3x3 grid (so
the OOD range is also a bigger puzzle). With size 32 a 3x3 piece is 10 px; the last 2 rows and
columns are not cut and stay in place.
"""

from __future__ import annotations

import random
from dataclasses import replace
from typing import ClassVar, Literal

from rftkit.tasks.base import TASKS
from rftkit.tasks.vision_draw import Obj, gradient, pick_pair, place, place_one, render, shuffle_pieces
from rftkit.tasks.vision_tasks import as_meta, check_size, make_problem, side, split_of
from rftkit.types import Problem


def displaced(rng: random.Random, n: int, k: int) -> list[int]:
    """A permutation of range(n) that moves exactly k (2 <= k <= n) elements: k random
    positions deranged among themselves (redrawn until no element stays)."""
    pos = sorted(rng.sample(range(n), k))
    while True:
        moved = pos[:]
        rng.shuffle(moved)
        if all(a != b for a, b in zip(pos, moved)):
            break
    perm = list(range(n))
    for a, b in zip(pos, moved):
        perm[a] = b
    return perm


@TASKS.register("vision_jigsaw")
class VisionJigsaw:
    """Restore a shuffled image: the answer is the permutation, one digit per piece.

    Knobs:
        size: image side in pixels.
        shapes: coloured shapes drawn on the gradient before cutting.
    """

    name: ClassVar[str] = "vision_jigsaw"
    difficulty_doc: ClassVar[str] = "pieces out of place (2x2 grid up to 4, 3x3 grid from 5; clamped to 2..9)"
    default_difficulty: ClassVar[tuple[int, int]] = (2, 4)
    default_ood: ClassVar[tuple[int, int]] = (5, 9)

    def __init__(self, *, size: int = 32, shapes: int = 3) -> None:
        check_size(self.name, size)
        if not 0 <= shapes <= 6:
            raise ValueError(f"vision_jigsaw: shapes must be in 0..6, got {shapes}")
        self.size, self.shapes = size, shapes

    def sample(self, rng: random.Random, difficulty: int) -> Problem:
        k = min(max(difficulty, 2), 9)
        grid = 2 if k <= 4 else 3
        objs = place(rng, self.size, [(*pick_pair(rng, "any"), side(rng, self.size)) for _ in range(self.shapes)])
        original = render(objs, self.size, gradient(self.size))
        perm = displaced(rng, grid * grid, k)
        return make_problem(self, difficulty, f"jigsaw:{grid}x{grid}=", "".join(map(str, perm)),
                            [shuffle_pieces(original, grid, perm)],
                            {"grid": grid, "perm": perm, "objects": as_meta(objs)}, verifier="jigsaw")


@TASKS.register("vision_change")
class VisionChange:
    """Two frames; exactly one object changed between them: it moved (by at least its side),
    was added, was removed, or was recoloured. Objects in a frame have distinct colours.

    "change:kind=" -> "#moved" | "#added" | "#removed" | "#recoloured";
    "change:colour=" -> the changed object's colour (after the change; before, if removed).

    Knobs:
        ask: "kind" or "colour": what the prompt asks.
        size: image side in pixels.
        held_out: at OOD difficulties the changed object (as shown after the change; before,
            if removed) is a held-out colour-shape pair.
    """

    name: ClassVar[str] = "vision_change"
    difficulty_doc: ClassVar[str] = "objects in the first frame, each of a different colour"
    default_difficulty: ClassVar[tuple[int, int]] = (1, 3)
    default_ood: ClassVar[tuple[int, int]] = (4, 6)
    KINDS: ClassVar[tuple[str, ...]] = ("moved", "added", "removed", "recoloured")

    def __init__(self, *, ask: Literal["kind", "colour"] = "kind", size: int = 32, held_out: bool = True) -> None:
        if ask not in ("kind", "colour"):
            raise ValueError(f"vision_change: ask must be 'kind' or 'colour', got {ask!r}")
        check_size(self.name, size)
        self.ask, self.size, self.held_out = ask, size, held_out

    def sample(self, rng: random.Random, difficulty: int) -> Problem:
        n, ood = max(1, difficulty), difficulty >= self.default_ood[0]
        kind = rng.choice(self.KINDS)
        for _ in range(200):
            frames = self._frames(rng, n, kind, ood)
            if frames is not None:
                break
        else:
            raise ValueError(f"vision_change: cannot draw {n} objects in {self.size}x{self.size}")
        before, after, changed = frames
        answer = kind if self.ask == "kind" else changed.colour
        return make_problem(self, difficulty, f"change:{self.ask}=", answer,
                            [render(before, self.size), render(after, self.size)],
                            {"kind": kind, "before": as_meta(before), "after": as_meta(after)})

    def _frames(self, rng: random.Random, n: int, kind: str, ood: bool) -> tuple[list[Obj], list[Obj], Obj] | None:
        """(objects of frame 0, of frame 1, the changed object as the answer sees it), or None
        when this draw found no room. Object 0 of frame 0 is the one that changes."""
        used: set[str] = set()
        items = []
        for i in range(n):
            target = i == 0 and kind in ("moved", "removed")
            s, c = pick_pair(rng, split_of(self.held_out, ood, target), lambda s, c: c not in used)
            used.add(c)
            items.append((s, c, side(rng, self.size)))
        before = place(rng, self.size, items)
        first, rest = before[0], before[1:]
        if kind == "removed":
            return before, rest, first
        split = split_of(self.held_out, ood, target=True)
        if kind == "recoloured":
            try:  # at OOD both held-out colours of this shape may be in use: redraw then
                _, c = pick_pair(rng, split, lambda s, c: s == first.shape and c not in used)
            except ValueError:
                return None
            changed = replace(first, colour=c)
            return before, [changed, *rest], changed
        if kind == "added":
            s, c = pick_pair(rng, split, lambda s, c: c not in used)
            changed = place_one(rng, self.size, s, c, side(rng, self.size), before)
            return None if changed is None else (before, [*before, changed], changed)
        for _ in range(60):  # moved: a new place, apart from the others, at least a side away
            changed = place_one(rng, self.size, first.shape, first.colour, first.size, rest)
            if changed is not None and max(abs(changed.x0 - first.x0), abs(changed.y0 - first.y0)) >= first.size:
                return before, [changed, *rest], changed
        return None
