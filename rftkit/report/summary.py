"""The end-of-run summary table and the Markdown report, built from the run dir alone.

Reads config.yaml, eval/<stage>.json and metrics.jsonl; never live objects (STYLE G14).
Plots need matplotlib (the `report` extra); without it the report has tables only.
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from rich.table import Table

from rftkit.report.log import read_metrics


def stage_results(run_dir: Path) -> list[dict]:
    """eval/<stage>.json of each stage, in the order of the run's config."""
    cfg = yaml.safe_load((Path(run_dir) / "config.yaml").read_text())
    out = []
    for s in cfg["stages"]:
        p = Path(run_dir) / "eval" / f"{s['name']}.json"
        if p.is_file():
            out.append(json.loads(p.read_text()))
    return out


def final_model_dir(run_dir: Path) -> Path | None:
    cfg_path = Path(run_dir) / "config.yaml"
    if not cfg_path.is_file():
        return None
    stages = [s["name"] for s in yaml.safe_load(cfg_path.read_text())["stages"]]
    for name in reversed(["init", *stages]):
        if (Path(run_dir) / "models" / name / "model.json").is_file():
            return Path(run_dir) / "models" / name
    return None


def _columns(results: list[dict]) -> list[tuple[str, str]]:
    cols: list[tuple[str, str]] = []
    for r in results:
        for split, res in r["results"].items():
            for k in res:
                if "/d" not in k and k != "reward_mean" and (split, k) not in cols:
                    cols.append((split, k))
    return cols


def summary_rows(results: list[dict]) -> tuple[list[str], list[list[str]]]:
    cols = _columns(results)
    header = ["stage", "step"] + [f"{s} {k}" for s, k in cols]
    rows = [[r["stage"], str(r["step"])] + [f"{100 * r['results'].get(s, {}).get(k, float('nan')):.1f}" for s, k in cols]
            for r in results]
    return header, rows


def summary_table(run_dir: Path) -> Table:
    header, rows = summary_rows(stage_results(run_dir))
    table = Table(title=f"{run_dir}: held-out results (%)")
    for h in header:
        table.add_column(h, justify="right" if h not in ("stage",) else "left")
    for row in rows:
        table.add_row(*row)
    return table


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def _plot(records: list[dict], out: Path) -> list[str]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    made = []
    for key, title in (("reward/mean", "reward (RL stages)"), ("loss/sft", "SFT loss")):
        pts = [(r["step"], r[key]) for r in records if isinstance(r.get(key), (int, float))]
        if not pts:
            continue
        fig, ax = plt.subplots(figsize=(6, 3))
        ax.plot(*zip(*pts), lw=1)
        ax.set_xlabel("step")
        ax.set_title(title)
        fig.tight_layout()
        name = key.replace("/", "_") + ".png"
        fig.savefig(out / name, dpi=100)
        plt.close(fig)
        made.append(name)
    return made


def write_report(run_dir: Path) -> Path:
    run_dir = Path(run_dir)
    header, rows = summary_rows(stage_results(run_dir))
    plots = _plot(read_metrics(run_dir / "metrics.jsonl"), run_dir)
    cfg_text = (run_dir / "config.yaml").read_text()
    parts = [f"# rftkit run `{run_dir.name}`", "", "## Held-out results (%)", "",
             "greedy_acc: greedy decoding; pass@k: unbiased estimator from n samples (Chen et al. 2021).", "",
             markdown_table(header, rows), ""]
    parts += [f"![{p}]({p})" for p in plots]
    parts += ["", "## Resolved config", "", "```yaml", cfg_text, "```"]
    out = run_dir / "report.md"
    out.write_text("\n".join(parts))
    return out
