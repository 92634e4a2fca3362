"""Everything a report reads, loaded from a run dir alone (config.yaml, metrics.jsonl, eval/,
data_skipped.json)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from rftkit.eval.analysis import read_records
from rftkit.eval.evaluate import summarize
from rftkit.report.log import read_metrics

SPLIT_NAMES = {"test": "ID", "ood": "OOD"}
SKIPPED_FILE = "data_skipped.json"
"""{label: {"skipped": n, "reasons": [...]}} of the dataset rows a run skipped (on_error: skip)."""


@dataclass
class RunData:
    dir: Path
    cfg: dict
    cfg_text: str
    records: list[dict]
    results: list[dict]
    """eval/<stage>.json of each evaluated stage, in config order: {"stage", "step", "results"}."""
    samples: dict[tuple[str, str], Path] = field(default_factory=dict)
    """(stage, split) -> eval/<stage>_<split>.jsonl."""
    skipped: dict[str, dict] = field(default_factory=dict)
    """SKIPPED_FILE's content: the dataset rows skipped when the run started."""
    _cache: dict = field(default_factory=dict, repr=False)

    def sample_records(self, stage: str, split: str) -> list[dict]:
        """The per-problem records of eval/<stage>_<split>.jsonl (read once)."""
        if (stage, split) not in self._cache:
            self._cache[(stage, split)] = read_records(self.samples[(stage, split)])
        return self._cache[(stage, split)]

    @property
    def name(self) -> str:
        return self.dir.name

    @property
    def stages(self) -> list[dict]:
        return list(self.cfg.get("stages") or [])

    @property
    def ks(self) -> list[int]:
        return list((self.cfg.get("eval") or {}).get("ks") or [1])

    @property
    def splits(self) -> list[str]:
        return list(dict.fromkeys(s for r in self.results for s in r["results"]))

    def stage_bounds(self) -> list[tuple[str, float]]:
        """(stage, last global step) of every stage with records, for dashed lines on curves."""
        last: dict[str, float] = {}
        for r in self.records:
            if "stage" in r and isinstance(r.get("step"), (int, float)):
                last[r["stage"]] = r["step"]
        return list(last.items())

    def spans(self) -> list[dict]:
        """Per stage in config order: first/last step and wall time seen in metrics.jsonl."""
        out = []
        for st in self.stages:
            rs = [r for r in self.records if r.get("stage") == st["name"]]
            if not rs:
                out.append({"stage": st["name"], "steps": st.get("steps"), "first": None, "last": None,
                            "t0": None, "t1": None})
                continue
            steps = [r["step"] for r in rs if isinstance(r.get("step"), (int, float))]
            times = [r["time"] for r in rs if isinstance(r.get("time"), (int, float))]
            t_prev = max((r["time"] for r in self.records[: self.records.index(rs[0])]
                          if isinstance(r.get("time"), (int, float))), default=0.0)
            out.append({"stage": st["name"], "steps": st.get("steps"), "first": min(steps, default=None),
                        "last": max(steps, default=None), "t0": t_prev, "t1": max(times, default=None)})
        return out


def load_run(run_dir: Path) -> RunData:
    run_dir = Path(run_dir)
    cfg_text = (run_dir / "config.yaml").read_text()
    cfg = yaml.safe_load(cfg_text) or {}
    metrics = run_dir / "metrics.jsonl"
    records = read_metrics(metrics) if metrics.is_file() else []
    results, samples = [], {}
    for st in cfg.get("stages") or []:
        p = run_dir / "eval" / f"{st['name']}.json"
        if p.is_file():
            results.append(json.loads(p.read_text()))
        for split in SPLIT_NAMES:
            q = run_dir / "eval" / f"{st['name']}_{split}.jsonl"
            if q.is_file():
                samples[(st["name"], split)] = q
    run = RunData(run_dir, cfg, cfg_text, records, results, samples, skipped=load_skipped(run_dir))
    complete_results(run)
    return run


def save_skipped(run_dir: Path, reasons: dict[str, list[str]], counts: dict[str, int]) -> None:
    """Write SKIPPED_FILE (label -> count and kept reasons); remove a stale one when none was skipped."""
    path = Path(run_dir) / SKIPPED_FILE
    if not reasons:
        path.unlink(missing_ok=True)
        return
    data = {label: {"skipped": counts.get(label, len(r)), "reasons": r} for label, r in reasons.items()}
    path.write_text(json.dumps(data, indent=1))


def load_skipped(run_dir: Path) -> dict[str, dict]:
    path = Path(run_dir) / SKIPPED_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


def complete_results(run: RunData) -> None:
    """Add the extended metrics (maj@k, avg@n, pass@k curve, diversity, behaviour) that a stage's
    summary lacks, recomputed from its stored records; keys already there are kept."""
    for r in run.results:
        for split, res in r["results"].items():
            if (r["stage"], split) not in run.samples or "format_frac" in res:
                continue
            recs = run.sample_records(r["stage"], split)
            if recs:
                full = summarize(recs, len(recs[0]["samples"]), run.ks, extended=True)
                res.update({k: v for k, v in full.items() if k not in res})


def pass_curve(summary: dict[str, float]) -> dict[int, float]:
    """{k: pass@k} from a summary's overall keys."""
    out = {}
    for key, v in summary.items():
        m = re.fullmatch(r"pass@(\d+)", key)
        if m:
            out[int(m.group(1))] = v
    return dict(sorted(out.items()))


def selector_curves(summary: dict[str, float]) -> dict[str, dict[int, float]]:
    """{selector: {k: accuracy}} from a summary's curve/<selector>@k keys (eval/selection.py)."""
    out: dict[str, dict[int, float]] = {}
    for key, v in summary.items():
        m = re.fullmatch(r"curve/(.+)@(\d+)", key)
        if m:
            out.setdefault(m.group(1), {})[int(m.group(2))] = v
    return {sel: dict(sorted(c.items())) for sel, c in out.items()}


SELECTOR_LABELS = {"verifier": "best-of-k by verifier", "logprob": "best-of-k by log-prob",
                   "rm": "best-of-k by RM", "prm": "best-of-k by PRM", "maj": "majority vote",
                   "wmaj/rm": "RM-weighted vote", "wmaj/logprob": "log-prob-weighted vote"}
ORACLE = "pass@k (oracle)"


def selector_lines(summary: dict[str, float]) -> dict[str, dict[int, float]]:
    """The lines of an accuracy-vs-samples plot: the oracle first (best-of-k by verifier, which
    is pass@k), then every other selector."""
    curves = selector_curves(summary)
    lines = {ORACLE: curves.pop("verifier")} if "verifier" in curves else {}
    return lines | {SELECTOR_LABELS.get(sel, sel): c for sel, c in curves.items()}


def split_label(split: str) -> str:
    return f"{SPLIT_NAMES.get(split, split)} ({split})"
