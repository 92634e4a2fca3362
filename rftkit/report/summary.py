"""The end-of-run summary table and the reports (report.html, report.md), from the run dir alone.

Reads config.yaml, eval/<stage>.json, eval/<stage>_<split>.jsonl, metrics.jsonl and
data_skipped.json; never live objects. `note_skipped_rows` is the one writer here:
at the start of a run it records the dataset rows skipped with `on_error: skip` for the
reports and gives the text the run prints. `write_report` writes the self-contained HTML report
(report/html.py) and a short Markdown one. Plots need matplotlib (the `report` extra);
without it the reports have tables only.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml
from rich import box
from rich.table import Table

from rftkit.report.log import read_metrics
from rftkit.report.rundata import load_skipped, save_skipped


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
    """(split, key): greedy_acc, pass@k for the configured ks (those with a maj@k), the largest maj@k.

    Results written before maj@k existed show every pass@k they hold.
    """
    cols: list[tuple[str, str]] = []
    for r in results:
        for split, res in r["results"].items():
            ks = [k[4:] for k in res if re.fullmatch(r"maj@\d+", k)]
            keys = ["greedy_acc"] + [k for k in res if re.fullmatch(r"pass@\d+", k) and (not ks or k[5:] in ks)]
            keys += [f"maj@{max(ks, key=int)}"] if ks else []
            cols += [(split, k) for k in keys if k in res and (split, k) not in cols]
    return cols


def summary_rows(results: list[dict]) -> tuple[list[str], list[list[str]]]:
    cols = _columns(results)
    header = ["stage", "step"] + [f"{s} {k}" for s, k in cols]
    rows = [[r["stage"], str(r["step"])]
            + [f"{100 * r['results'].get(s, {}).get(k, float('nan')):.1f}" for s, k in cols]
            for r in results]
    return header, rows


def summary_table(run_dir: Path) -> Table:
    return rich_table(stage_results(run_dir), f"{run_dir}: held-out results (%)")


def eval_console_table(stage: str, step: int, results: dict[str, dict]) -> Table:
    """The console summary of one evaluation (`results`: {split: summary}, as run_eval returns):
    a row per split with greedy / pass@k / maj@k in %, then length, truncation, format, entropy."""
    keys = list(dict.fromkeys(k for split, k in _columns([{"results": results}])))
    extra = [k for k in ("len_mean", "truncated_frac", "format_frac", "entropy")
             if any(k in res for res in results.values())]
    table = Table(title=f"eval after step {step} ({stage})")
    table.add_column("split")
    for k in keys + extra:
        table.add_column({"greedy_acc": "greedy", "len_mean": "len", "truncated_frac": "trunc",
                          "format_frac": "format"}.get(k, k), justify="right")
    for split, res in results.items():
        cells = [f"{100 * res[k]:.1f}" if k in res else "-" for k in keys]
        cells += [f"{res[k]:.2f}" if k in ("len_mean", "entropy") else f"{100 * res[k]:.1f}" for k in extra]
        table.add_row(split, *cells)
    return table


def rich_table(results: list[dict], title: str) -> Table:
    """One row per metric, one column per stage end: narrow enough for any terminal."""
    header, rows = summary_rows(results)
    table = Table(title=title, box=box.SIMPLE_HEAD)
    table.add_column("held-out (%)")
    for r in rows:
        table.add_column(f"{r[0]}\nstep {r[1]}", justify="right")
    for i, h in enumerate(header[2:], start=2):
        table.add_row(h.replace("greedy_acc", "greedy"), *[r[i] for r in rows])
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


def note_skipped_rows(run_dir: Path, reasons: dict[str, list[str]], notes: dict[str, float]) -> str:
    """Record the skipped dataset rows in the run dir and return the console text ("" if none).

    reasons: label -> kept reasons (`Pools.skipped`); notes: `Pools.notes`, whose
    data/<label>/skipped holds the full count when more rows were skipped than kept.
    """
    counts = {label: int(notes.get(f"data/{label}/skipped", len(r))) for label, r in reasons.items()}
    save_skipped(run_dir, reasons, counts)
    return skipped_rows_text(load_skipped(run_dir))


def skipped_rows_text(skipped: dict[str, dict], per_task: int = 10) -> str:
    """A few lines per task: how many rows were skipped and the first reasons (file, row, field)."""
    total = sum(v["skipped"] for v in skipped.values())
    if not total:
        return ""
    lines = [f"data: skipped {total} row{'' if total == 1 else 's'} (on_error: skip); report.html lists them"]
    for label, v in skipped.items():
        lines.append(f"  {label}: {v['skipped']} skipped")
        lines += [f"    {r}" for r in v["reasons"][:per_task]]
        if v["skipped"] > per_task:
            lines.append(f"    ... and {v['skipped'] - per_task} more")
    return "\n".join(lines)


def write_report(run_dir: Path) -> Path:
    """Write report.html (returned) and report.md into the run dir, from the run dir alone."""
    from rftkit.report.html import write_html

    run_dir = Path(run_dir)
    header, rows = summary_rows(stage_results(run_dir))
    plots = _plot(read_metrics(run_dir / "metrics.jsonl"), run_dir) if (run_dir / "metrics.jsonl").is_file() else []
    cfg_text = (run_dir / "config.yaml").read_text()
    parts = [f"# rftkit run `{run_dir.name}`", "", "The full report with every curve, the forgetting matrix and "
             "the sample inspector: [report.html](report.html).", "", "## Held-out results (%)", "",
             "greedy_acc: greedy decoding; pass@k: unbiased estimator from n samples (Chen et al. 2021); "
             "maj@k: majority vote over k samples.", "", markdown_table(header, rows), ""]
    parts += [f"![{p}]({p})" for p in plots]
    skipped = skipped_rows_text(load_skipped(run_dir), per_task=100)
    parts += ["", "## Skipped rows", "", "```", skipped, "```"] if skipped else []
    parts += ["", "## Resolved config", "", "```yaml", cfg_text, "```"]
    (run_dir / "report.md").write_text("\n".join(parts))
    return write_html(run_dir)
