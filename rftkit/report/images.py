"""The report's images section: what a vision-language model saw and answered, per evaluation.

For each evaluated stage and split whose records carry images (`rftkit.eval.evaluate.image_records`
stores each as a PNG data URI, so the report needs no other file and no live object), up to
PER_EVAL problems, alternating solved and unsolved: the frames side by side (a two-frame "what
changed" problem shows both), the prompt, the gold answer, and the greedy and first sampled
completions with the answer parsed from each, its verdict score (the reward) and whether it is
correct. Small frames are enlarged by an integer factor with `image-rendering: pixelated`, so a
32x32 image shows its pixels rather than a blur. Absent when no record has images.
"""

from __future__ import annotations

from rftkit.report.htmlkit import esc, section
from rftkit.report.inspector import pick
from rftkit.report.rundata import RunData, split_label

PER_EVAL = 4
"""Problems shown per (stage, split)."""
MIN_WIDTH = 96
"""Frames narrower than this (px) are shown at the smallest integer multiple of their width
that reaches it (32 -> 96, 40 -> 120); wider ones at their stored size."""


def images_section(run: RunData) -> str:
    parts = []
    for stage, split in run.samples:
        shown = pick([r for r in run.sample_records(stage, split) if r.get("images")], PER_EVAL)
        if shown:
            parts.append(f"<h3>after {esc(stage)}, {esc(split_label(split))}</h3>"
                         + "".join(problem_html(r) for r in shown))
    if not parts:
        return ""
    note = ('<p class="muted">Visual problems with the model\'s answers: the greedy completion and the first '
            "sample, each with the answer parsed from it, its verifier score (the reward) and whether it is "
            "correct. Every problem is in <code>eval/&lt;stage&gt;_&lt;split&gt;.jsonl</code>, its images as "
            "PNG data URIs.</p>")
    return section("images", "Images", note, *parts)


def problem_html(r: dict) -> str:
    """One record with images: frames, prompt, gold answer, greedy and first sampled answers."""
    n = len(r["samples"])
    frames = "".join(frame_html(im, i, len(r["images"])) for i, im in enumerate(r["images"]))
    answers = [("greedy", r["greedy"])] + ([("sample 1", r["samples"][0])] if n else [])
    rows = "".join(_answer_row(label, a) for label, a in answers)
    head = (f"<p><b>prompt</b> <code>{esc(r['prompt'])}</code> &nbsp; <b>gold</b> <code>{esc(r['answer'])}</code>"
            f' &nbsp; <span class="muted">{esc(r.get("source") or r["task"])}, difficulty {esc(r["difficulty"])}, '
            f"{r['n_correct']}/{n} samples correct</span></p>")
    table = ("<table><thead><tr><th class=\"l\"></th><th class=\"l\">completion</th><th>answer</th><th>score</th>"
             f"<th>verdict</th></tr></thead><tbody>{rows}</tbody></table>")
    cls = "solved" if r["n_correct"] else "unsolved"
    return (f'<div class="prob {cls}"><div style="display:flex;gap:8px;flex-wrap:wrap;align-items:flex-end">'
            f"{frames}</div>{head}{table}</div>")


def frame_html(im: dict, i: int, count: int) -> str:
    """One image of a record as a figure; a placeholder naming its size when it has no PNG."""
    h, w = (int(x) for x in im.get("size") or (0, 0))
    label = f"frame {i + 1}" if count > 1 else "image"
    caption = f"<figcaption class=\"muted\">{label}, {h}x{w}</figcaption>"
    png = im.get("png")
    if not isinstance(png, str) or not png.startswith("data:image/png;base64,"):
        return f'<figure style="margin:0"><p class="muted">[no thumbnail stored]</p>{caption}</figure>'
    shown = -(-MIN_WIDTH // w) * w if 0 < w < MIN_WIDTH else None
    width = f";width:{shown}px" if shown else ""
    return (f'<figure style="margin:0"><img alt="{esc(label)}" src="{esc(png)}" '
            f'style="image-rendering:pixelated{width}">{caption}</figure>')


def _answer_row(label: str, a: dict) -> str:
    ok = a["score"] >= 1
    parsed = "-" if a.get("parsed") is None else a["parsed"]
    return (f'<tr><td class="l">{label}</td><td class="l"><pre class="c">{esc(a["text"])}</pre></td>'
            f"<td><code>{esc(parsed)}</code></td><td>{a['score']:g}</td>"
            f'<td class="{"ok" if ok else "bad"}">{"correct" if ok else "wrong"}</td></tr>')
