"""Matplotlib figures for the HTML report and the run comparison, returned as base64 PNG.

Every function returns None when there is nothing to draw or matplotlib (the `report` extra)
is missing, so a report degrades to tables instead of failing.
"""

from __future__ import annotations

import base64
import io
import math
import re

MAX_LINES = 10


def _plt():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def have_matplotlib() -> bool:
    return _plt() is not None


def to_b64(fig) -> str:
    plt = _plt()
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=80)
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def is_num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def series(records: list[dict], key: str, x: str = "step") -> list[tuple[float, float]]:
    return [(r[x], r[key]) for r in records if is_num(r.get(key)) and is_num(r.get(x))]


def match_keys(records: list[dict], patterns: list[str]) -> list[str]:
    """Keys of `records` matching any regex of `patterns` (full match), in pattern order."""
    keys = list(dict.fromkeys(k for r in records for k in r))
    out = []
    for pat in patterns:
        out += [k for k in keys if re.fullmatch(pat, k) and k not in out]
    return out[:MAX_LINES]


def curve(records: list[dict], keys: list[str], title: str, x: str = "step",
          bounds: list[tuple[str, float]] = (), label_prefix: str = "") -> str | None:
    """Lines of `keys` against `x`; sparse series (evaluations) get markers; stage ends dashed."""
    plt = _plt()
    lines = [(k, series(records, k, x)) for k in keys]
    lines = [(k, pts) for k, pts in lines if pts]
    if plt is None or not lines:
        return None
    fig, ax = plt.subplots(figsize=(6.4, 3.2))
    for k, pts in lines:
        xs, ys = zip(*pts)
        ax.plot(xs, ys, lw=1.2, marker="o" if len(pts) <= 12 else None, ms=3, label=label_prefix + k)
    for name, at in bounds:
        ax.axvline(at, color="0.6", ls="--", lw=0.8)
        ax.annotate(name, (at, 1), xycoords=("data", "axes fraction"), fontsize=7, ha="right", va="top",
                    color="0.4", rotation=90)
    ax.set_xlabel("wall time (s)" if x == "time" else x)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    return to_b64(fig)


def passk_curves(curves: dict[str, dict[int, float]], title: str, ylabel: str = "pass@k (%)",
                 dashed: tuple[str, ...] = ()) -> str | None:
    """Accuracy against k (log2 axis), one line per label ({label: {k: value}}); the labels in
    `dashed` (a reference, e.g. pass@k as the oracle above the selectors) drawn dashed."""
    plt = _plt()
    curves = {lab: c for lab, c in curves.items() if c}
    if plt is None or not curves:
        return None
    fig, ax = plt.subplots(figsize=(6.4, 3.2))
    for lab, c in list(curves.items())[: 2 * MAX_LINES]:
        ks = sorted(c)
        ax.plot(ks, [100 * c[k] for k in ks], marker="o", ms=3, lw=1.2, label=lab,
                ls="--" if lab in dashed else "-", color="0.3" if lab in dashed else None)
    if max(max(c) for c in curves.values()) > 1:
        ax.set_xscale("log", base=2)
    ax.set_xlabel("k")
    ax.set_ylabel(ylabel)
    ax.set_ylim(-2, 102)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return to_b64(fig)


def heatmap(matrix: list[list[float | None]], rows: list[str], cols: list[str], title: str) -> str | None:
    """A row x column matrix of fractions, shown in %, with the values written in the cells."""
    plt = _plt()
    if plt is None or not matrix or not cols:
        return None
    vals = [[float("nan") if v is None else 100 * v for v in row] for row in matrix]
    fig, ax = plt.subplots(figsize=(1.2 + 1.1 * len(cols), 0.9 + 0.45 * len(rows)))
    im = ax.imshow(vals, cmap="viridis", vmin=0, vmax=100, aspect="auto")
    ax.set_xticks(range(len(cols)), cols, fontsize=8)
    ax.set_yticks(range(len(rows)), [f"after {r}" for r in rows], fontsize=8)
    for i, row in enumerate(vals):
        for j, v in enumerate(row):
            if not math.isnan(v):
                ax.text(j, i, f"{v:.0f}", ha="center", va="center", fontsize=8, color="w" if v < 60 else "k")
    ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.05)
    return to_b64(fig)


def timeline(spans: list[tuple[str, float, float]]) -> str | None:
    """Stages as bars over wall time: (name, start s, end s)."""
    plt = _plt()
    spans = [s for s in spans if s[2] >= s[1]]
    if plt is None or not spans:
        return None
    fig, ax = plt.subplots(figsize=(6.4, 0.6 + 0.35 * len(spans)))
    for i, (name, t0, t1) in enumerate(spans):
        ax.barh(i, max(t1 - t0, 1e-3), left=t0, color=f"C{i % 10}")
        ax.text(t0, i, f" {name} ({t1 - t0:.0f}s)", va="center", fontsize=8)
    ax.set_yticks([])
    ax.invert_yaxis()
    ax.set_xlabel("wall time (s)")
    ax.set_title("stage timeline", fontsize=10)
    return to_b64(fig)


def overlay(runs: list[tuple[str, list[dict]]], key: str, x: str = "step", title: str = "") -> str | None:
    """One metric of several runs against `x` (step or wall time), one line per run."""
    plt = _plt()
    lines = [(label, series(recs, key, x)) for label, recs in runs]
    lines = [(label, pts) for label, pts in lines if pts]
    if plt is None or not lines:
        return None
    fig, ax = plt.subplots(figsize=(6.4, 3.2))
    for label, pts in lines:
        xs, ys = zip(*pts)
        ax.plot(xs, ys, lw=1.2, marker="o" if len(pts) <= 12 else None, ms=3, label=label)
    ax.set_xlabel("wall time (s)" if x == "time" else x)
    ax.set_title(title or f"{key} vs {'wall time' if x == 'time' else x}", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return to_b64(fig)
