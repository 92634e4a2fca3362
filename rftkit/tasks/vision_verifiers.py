"""Verifiers of the visual tasks: "iou" for bounding boxes, "jigsaw" for permutations.

"iou" (Visual-RFT, Liu et al. 2025, arXiv:2503.01785). Visual-RFT rewards a predicted box with
its IoU plus a format reward, summed in [0, 2]; rftkit's scores lie in [0, 1] and a verdict is
correct at score 1, so the two terms are rescaled and the IoU is read against a threshold t
(the problem's meta["iou_threshold"], default 0.5, i.e. the usual Acc@0.5 of grounding):

    score = 0                                   malformed answer (no box to score)
    score = 0.5 + 0.5 * min(IoU / t, 1)         a well-formed box

So a well-formed box earns 0.5 (the format term), the reward then rises with the IoU, and it
reaches 1 (correct, what pass@k counts) exactly when IoU >= t; it is continuous and monotone
in IoU. With t = 1 it is Visual-RFT's reward halved: dense up to the exact box, correct only
for the exact box. Boxes are inclusive integer pixel boxes "x0,y0,x1,y1" (x = column), so a
box's area is (x1 - x0 + 1) * (y1 - y0 + 1); a 2x2 box inside a 4x4 one has IoU 4/16.
Accepted: optional [ ] or ( ) around the numbers, spaces after the commas. Malformed, with a
reason: no marker, not four integers (text, floats, three or five numbers), a negative size
(x1 < x0 or y1 < y0), a box wholly outside the image. A box partly outside the image (negative
coordinates, or past the last pixel) is scored as written, not clipped: its area outside the
image lowers its IoU, so a coordinate off the image is never exactly right (clipping would
make "0,0,3,99" as good as "0,0,3,31" for a target on the bottom edge).

"jigsaw" (Jigsaw-R1, Wang et al. 2025, arXiv:2505.23590): the answer is one digit per piece,
the original index of the piece at each position (rftkit/tasks/vision_frames.py). Spaces and
commas between digits are ignored. score = (pieces in the right place) / (pieces), so the
exact permutation scores 1; a malformed answer (a non-digit, the wrong number of digits, a
repeated or out-of-range piece) scores 0, with a reason.
"""

from __future__ import annotations

import re

from rftkit.tasks.base import VERIFIERS, parse_answer
from rftkit.types import ANSWER_MARKER, Problem, Verdict

Box = tuple[int, int, int, int]
_NUM = r"\s*(-?\d{1,6})\s*"
_BOX = re.compile(r"[\[(]?" + ",".join([_NUM] * 4) + r"[\])]?")
_MAX_ANSWER = 64  # longer answers are malformed without being parsed (a runaway sample)


def parse_box(text: str) -> Box | str:
    """(x0, y0, x1, y1) from "x0,y0,x1,y1" (see the module docstring), or why it is malformed."""
    text = text.strip()
    if len(text) > _MAX_ANSWER:
        return f"answer longer than {_MAX_ANSWER} characters"
    m = _BOX.fullmatch(text)
    if m is None:
        return "expected four integers x0,y0,x1,y1"
    x0, y0, x1, y1 = (int(v) for v in m.groups())
    if x1 < x0 or y1 < y0:
        return f"negative size: x1 < x0 or y1 < y0 in {x0},{y0},{x1},{y1}"
    return x0, y0, x1, y1


def box_iou(a: Box, b: Box) -> float:
    """Intersection over union of two inclusive pixel boxes (both with x1 >= x0, y1 >= y0)."""
    iw = min(a[2], b[2]) - max(a[0], b[0]) + 1
    ih = min(a[3], b[3]) - max(a[1], b[1]) + 1
    inter = max(iw, 0) * max(ih, 0)
    area = (a[2] - a[0] + 1) * (a[3] - a[1] + 1) + (b[2] - b[0] + 1) * (b[3] - b[1] + 1)
    return inter / (area - inter)


def inside(box: Box, height: int, width: int) -> str:
    """"in", "partly" or "out": where the box lies relative to the image's pixels."""
    if box[2] < 0 or box[3] < 0 or box[0] > width - 1 or box[1] > height - 1:
        return "out"
    if box[0] < 0 or box[1] < 0 or box[2] > width - 1 or box[3] > height - 1:
        return "partly"
    return "in"


def _image_size(problem: Problem) -> tuple[int, int] | None:
    """(height, width) the box lives in: meta["image_size"], else the first image's, else None."""
    if "image_size" in problem.meta:
        h, w = problem.meta["image_size"]
        return int(h), int(w)
    return problem.images[0].size if problem.images else None


@VERIFIERS.register("iou")
def verify_iou(problem: Problem, completion: str) -> Verdict:
    """score = 0.5 + 0.5 * min(IoU / t, 1) for a well-formed box, 0 if malformed (module docstring)."""
    gold = parse_box(problem.answer)
    if isinstance(gold, str):
        raise ValueError(f"problem of {problem.source or problem.task!r} has answer {problem.answer!r}, "
                         f"not a box for verifier 'iou': {gold}")
    parsed = parse_answer(completion)
    if parsed is None:
        return Verdict(0.0, None, f"no answer marker '{ANSWER_MARKER}'")
    box = parse_box(parsed)
    if isinstance(box, str):
        return Verdict(0.0, parsed[:_MAX_ANSWER], box)
    size = _image_size(problem)
    where = "in" if size is None else inside(box, *size)
    if where == "out":
        return Verdict(0.0, parsed, f"box lies outside the {size[1]}x{size[0]} image")
    note = " (the box extends outside the image)" if where == "partly" else ""
    iou = box_iou(box, gold)
    threshold = float(problem.meta.get("iou_threshold", 0.5))
    score = 0.5 + 0.5 * min(iou / threshold, 1.0)
    return Verdict(score, ",".join(map(str, box)), f"iou {iou:.3f} (correct from {threshold:g}){note}")


def parse_permutation(text: str, n: int) -> list[int] | str:
    """The n piece indices of a jigsaw answer (spaces and commas ignored), or why it is malformed."""
    if len(text) > _MAX_ANSWER:
        return f"answer longer than {_MAX_ANSWER} characters"
    digits = re.sub(r"[\s,]", "", text)
    if not digits.isascii() or not digits.isdigit():
        return "expected one digit per piece"
    if len(digits) != n:
        return f"expected {n} digits (one per piece), got {len(digits)}"
    perm = [int(d) for d in digits]
    if sorted(perm) != list(range(n)):
        return f"not a permutation of 0..{n - 1} (a piece repeated or out of range)"
    return perm


@VERIFIERS.register("jigsaw")
def verify_jigsaw(problem: Problem, completion: str) -> Verdict:
    """score = fraction of positions holding the right piece (1 iff exact); 0 if malformed."""
    gold = [int(d) for d in problem.answer]
    parsed = parse_answer(completion)
    if parsed is None:
        return Verdict(0.0, None, f"no answer marker '{ANSWER_MARKER}'")
    perm = parse_permutation(parsed, len(gold))
    if isinstance(perm, str):
        return Verdict(0.0, parsed[:_MAX_ANSWER], perm)
    right = sum(p == g for p, g in zip(perm, gold))
    text = "".join(map(str, perm))
    if right == len(gold):
        return Verdict(1.0, text, "correct")
    return Verdict(right / len(gold), text, f"{right} of {len(gold)} pieces in place")
