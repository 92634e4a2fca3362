"""Numpy drawing of the visual tasks' scenes: coloured shapes on a dark background.

A scene is a list of `Obj` (shape, colour name, top-left corner, side in pixels) placed
without overlap by rejection sampling from a `random.Random`, so every scene is a pure
function of the rng's state; `render` turns it into uint8 pixels [S, S, 3]. Every shape mask
touches all four sides of its square, so an object's bounding box is exactly its square:
(x0, y0, x0 + side - 1, y0 + side - 1), inclusive pixel coordinates.

Shapes and colours are few and far apart (a filled circle, square, triangle or cross in one of
eight saturated colours, at least 5 px at 32x32) so that a tiny conv/ViT trained from scratch
can tell them apart. Colour-shape pairs are split for the OOD test of compositional
generalisation: `is_held_out(shape, colour)` marks 8 of the 32 pairs (each shape held out in
two colours, each colour held out for one shape), which in-distribution scenes never show.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

SHAPES = ("circle", "square", "triangle", "cross")
PALETTE = {
    "red": (230, 30, 30),
    "green": (30, 200, 50),
    "blue": (40, 80, 255),
    "yellow": (240, 230, 30),
    "white": (240, 240, 240),
    "purple": (160, 50, 220),
    "orange": (255, 140, 0),
    "cyan": (0, 220, 230),
}
COLOURS = tuple(PALETTE)
# Straight edges of each outline: the visual evidence of vision_classify's reasoning trace.
EDGES = {"circle": 0, "triangle": 3, "square": 4, "cross": 12}
BACKGROUND = (0, 0, 0)


@dataclass(frozen=True)
class Obj:
    """One drawn object: a `shape` of SHAPES in colour `colour` (a PALETTE name), its square's
    top-left pixel (x0, y0) (x = column, y = row) and side `size` in pixels."""

    shape: str
    colour: str
    x0: int
    y0: int
    size: int

    @property
    def box(self) -> tuple[int, int, int, int]:
        """(x0, y0, x1, y1), inclusive pixel coordinates of the tight bounding box."""
        return self.x0, self.y0, self.x0 + self.size - 1, self.y0 + self.size - 1

    @property
    def centre(self) -> tuple[float, float]:
        """(x, y) of the box's centre, in pixels."""
        return self.x0 + (self.size - 1) / 2, self.y0 + (self.size - 1) / 2

    @property
    def code(self) -> str:
        """Two letters, colour then shape initial ("rc" = red circle): the initials are distinct."""
        return self.colour[0] + ("x" if self.shape == "cross" else self.shape[0])


def shape_mask(shape: str, size: int) -> np.ndarray:
    """Filled mask bool [size, size] of a shape; every mask reaches all four sides.

    Pixel (r, c) is tested at its centre (r + 0.5, c + 0.5). The triangle points up; the
    cross's arm thickness is about size / 3 with the parity of `size`, so it is symmetric.
    """
    if size < 3:
        raise ValueError(f"a shape needs at least 3 px, got {size}")
    r, c = np.mgrid[0:size, 0:size] + 0.5
    half = size / 2
    if shape == "square":
        return np.ones((size, size), dtype=bool)
    if shape == "circle":
        return (r - half) ** 2 + (c - half) ** 2 <= half**2
    if shape == "triangle":
        return np.abs(c - half) <= (r + 0.5) / 2 + 1e-9  # half-width (row + 1) / 2
    if shape == "cross":
        t = size // 3 + (size - size // 3) % 2
        lo, hi = (size - t) / 2, (size + t) / 2
        return ((c > lo) & (c < hi)) | ((r > lo) & (r < hi))
    raise ValueError(f"unknown shape {shape!r}; shapes: {', '.join(SHAPES)}")


def is_held_out(shape: str, colour: str) -> bool:
    """The 8 colour-shape pairs that only OOD scenes show (see the module docstring)."""
    return (SHAPES.index(shape) + COLOURS.index(colour)) % 4 == 0


def pick_pair(rng: random.Random, split: str, ok: Callable[[str, str], bool] = lambda s, c: True) -> tuple[str, str]:
    """A uniform (shape, colour) with ok(shape, colour), from the pairs of `split`: "seen"
    (not held out), "held" (held out only) or "any"."""
    pairs = [(s, c) for s in SHAPES for c in COLOURS
             if (split == "any" or is_held_out(s, c) == (split == "held")) and ok(s, c)]
    if not pairs:
        raise ValueError(f"no colour-shape pair fits the constraints in split {split!r}")
    return rng.choice(pairs)


def apart(a: tuple[int, int, int, int], b: tuple[int, int, int, int], gap: int = 1) -> bool:
    """Whether two inclusive boxes are separated by at least `gap` empty pixels."""
    return a[2] + gap < b[0] or b[2] + gap < a[0] or a[3] + gap < b[1] or b[3] + gap < a[1]


def place_one(rng: random.Random, image_size: int, shape: str, colour: str, side: int,
              others: list[Obj], tries: int = 60) -> Obj | None:
    """An object at a uniform position apart from `others`, or None after `tries` draws."""
    for _ in range(tries):
        x0, y0 = rng.randint(0, image_size - side), rng.randint(0, image_size - side)
        obj = Obj(shape, colour, x0, y0, side)
        if all(apart(obj.box, o.box) for o in others):
            return obj
    return None


def place(rng: random.Random, image_size: int, items: list[tuple[str, str, int]],
          others: tuple[Obj, ...] = (), restarts: int = 200) -> list[Obj]:
    """Place (shape, colour, side) items in order, apart from each other and from `others`.

    Rejection sampling: a scene where some item finds no room is redrawn from scratch, up to
    `restarts` times, then a ValueError (the image is too small for the items).
    """
    for _ in range(restarts):
        objs: list[Obj] = []
        for shape, colour, side in items:
            obj = place_one(rng, image_size, shape, colour, side, [*others, *objs])
            if obj is None:
                break
            objs.append(obj)
        else:
            return objs
    sides = [side for _, _, side in items]
    raise ValueError(f"cannot place {len(items)} objects of sides {sides} apart in a {image_size}x{image_size} image")


def render(objs: list[Obj], image_size: int, background: np.ndarray | None = None) -> np.ndarray:
    """Pixels uint8 [S, S, 3] (S = image_size): `background` (default black) with the objects
    drawn in order."""
    if background is None:
        img = np.empty((image_size, image_size, 3), dtype=np.uint8)
        img[:, :] = BACKGROUND
    else:
        img = background.copy()
    for o in objs:
        mask = shape_mask(o.shape, o.size)
        img[o.y0:o.y0 + o.size, o.x0:o.x0 + o.size][mask] = PALETTE[o.colour]
    return img


def gradient(image_size: int) -> np.ndarray:
    """A dim background uint8 [S, S, 3] whose red rises left to right and green top to
    bottom, so that every region of it (a jigsaw piece) differs from every other."""
    ramp = np.linspace(20, 140, image_size)
    img = np.zeros((image_size, image_size, 3), dtype=np.uint8)
    img[:, :, 0] = np.rint(ramp)[None, :]
    img[:, :, 1] = np.rint(ramp)[:, None]
    img[:, :, 2] = 60
    return img


def shuffle_pieces(pixels: np.ndarray, grid: int, perm: list[int]) -> np.ndarray:
    """Cut the top-left grid*piece square of `pixels` [S, S, 3] into grid x grid pieces
    (piece = S // grid, row-major indices) and put original piece perm[i] at position i.
    The last S mod grid rows and columns stay where they are."""
    piece = pixels.shape[0] // grid
    out = pixels.copy()
    for i, p in enumerate(perm):
        (r, c), (pr, pc) = divmod(i, grid), divmod(p, grid)
        out[r * piece:(r + 1) * piece, c * piece:(c + 1) * piece] = \
            pixels[pr * piece:(pr + 1) * piece, pc * piece:(pc + 1) * piece]
    return out


def reading_order(objs: list[Obj]) -> list[Obj]:
    """Objects top to bottom, then left to right (by their boxes' top-left corners)."""
    return sorted(objs, key=lambda o: (o.y0, o.x0))


def scaled(side: int, image_size: int) -> int:
    """A side given for 32x32 images, scaled to `image_size` (at least 3 px)."""
    return max(3, round(side * image_size / 32))
