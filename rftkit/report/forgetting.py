"""The forgetting matrix of a run, from its run dir alone (config.yaml, eval/<stage>.json).

Rows are the evaluations at the end of each stage, columns the sources (task labels of
data.tasks); cell (i, j) is the metric (default pass@1) on source j's held-out problems
after stage i. A stage may train on a subset of the sources (`stages[i].tasks`) while every
evaluation covers all of them, so the matrix shows what later stages do to earlier tasks.
Forgetting of source j (Chaudhry et al. 2018, "Riemannian Walk for Incremental Learning",
arXiv:1801.10112) is the best earlier value minus the final one:

    forgetting_j = max_{i < last} a[i, j] - a[last, j]

(positive = forgotten; None with fewer than two evaluated stages).
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml


def sources_of(cfg: dict) -> list[str]:
    """The task labels of a config (label, or the task name when unset)."""
    tasks = (cfg.get("data") or {}).get("tasks") or [{"name": "arithmetic"}]
    return [t.get("label") or t["name"] for t in tasks]


def source_value(res: dict, metric: str, source: str, single: bool) -> float | None:
    """metric on one source: its `/src=` key, or the overall value when there is one source."""
    v = res.get(f"{metric}/src={source}")
    if v is None and single:
        v = res.get(metric)
    return v


def forgetting_matrix(run_dir: Path, split: str = "test", metric: str = "pass@1") -> dict:
    """{"split", "metric", "stages", "sources", "matrix" [stage][source] (None = missing),
    "forgetting" {source: float | None}, "trained" {stage: [sources it trained on]}}."""
    run_dir = Path(run_dir)
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    sources = sources_of(cfg)
    stages, matrix, trained = [], [], {}
    for st in cfg["stages"]:
        p = run_dir / "eval" / f"{st['name']}.json"
        if not p.is_file():
            continue
        res = json.loads(p.read_text())["results"].get(split)
        if res is None:
            continue
        stages.append(st["name"])
        trained[st["name"]] = list(st.get("tasks") or sources)
        matrix.append([source_value(res, metric, s, len(sources) == 1) for s in sources])
    forgetting = {}
    for j, s in enumerate(sources):
        col = [row[j] for row in matrix]
        earlier = [v for v in col[:-1] if v is not None]
        forgetting[s] = max(earlier) - col[-1] if earlier and col[-1] is not None else None
    return {"split": split, "metric": metric, "stages": stages, "sources": sources, "matrix": matrix,
            "forgetting": forgetting, "trained": trained}
