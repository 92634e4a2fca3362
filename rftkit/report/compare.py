"""`rftkit compare RUN_A RUN_B ... --out DIR`: several runs side by side, from their run dirs alone.

Writes DIR/compare.html (self-contained: a table of each run's final and per-stage results,
pass@k curves of the final models overlaid, accuracy-vs-samples curves of test-time-scaling
selectors (runs evaluated with eval.scaling; one plot per split and selector, one line per
run), learning curves against steps and against wall time), DIR/compare.md (the tables) and
DIR/compare.json (the numbers).
"""

from __future__ import annotations

import json
from pathlib import Path

from rftkit.report import plots as P
from rftkit.report.htmlkit import num, page, pct, plots, section, table
from rftkit.report.rundata import SELECTOR_LABELS, RunData, load_run, pass_curve, selector_curves, split_label
from rftkit.report.summary import markdown_table

LEARNING_KEYS = ["reward/mean", "eval/test/pass@1", "eval/ood/pass@1", "eval/test/greedy_acc", "loss/sft",
                 "loss/policy", "policy/entropy", "rollout/len_mean"]


def labels(runs: list[RunData]) -> list[str]:
    """Run names, made unique with their parent folder when two runs share a name."""
    names = [r.name for r in runs]
    out = [f"{r.dir.parent.name}/{r.name}" if names.count(r.name) > 1 else r.name for r in runs]
    return [f"{lab} ({i + 1})" if out.count(lab) > 1 else lab for i, lab in enumerate(out)]


def result_columns(runs: list[RunData]) -> list[tuple[str, str]]:
    """(split, key) columns shared by the tables: greedy, pass@k for every configured k, maj@max k."""
    splits = list(dict.fromkeys(s for r in runs for s in r.splits))
    ks = sorted({k for r in runs for k in r.ks})
    keys = ["greedy_acc"] + [f"pass@{k}" for k in ks] + ([f"maj@{max(ks)}"] if max(ks, default=1) > 1 else [])
    return [(s, k) for s in splits for k in keys]


def final_rows(runs: list[RunData], names: list[str], cols: list[tuple[str, str]]) -> list[list[str]]:
    rows = []
    for run, name in zip(runs, names):
        last = run.results[-1] if run.results else {"stage": "-", "step": "-", "results": {}}
        wall = max((r["time"] for r in run.records if isinstance(r.get("time"), (int, float))), default=None)
        rows.append([name, last["stage"], last["step"], num(wall, 1)]
                    + [pct(last["results"].get(s, {}).get(k)) for s, k in cols])
    return rows


def stage_rows(runs: list[RunData], names: list[str], cols: list[tuple[str, str]]) -> list[list[str]]:
    return [[name, r["stage"], r["step"]] + [pct(r["results"].get(s, {}).get(k)) for s, k in cols]
            for run, name in zip(runs, names) for r in run.results]


def scaling_figures(runs: list[RunData], names: list[str], split: str,
                    selectors: list[str] | None = None) -> list[tuple[str, str | None]]:
    """Per selector (all found when `selectors` is None): its accuracy-vs-samples curve in the
    last stage of each run that has one, one line per run."""
    finals = {}
    for run, name in zip(runs, names):
        curves = [selector_curves(r["results"].get(split, {})) for r in run.results]
        finals[name] = next((c for c in reversed(curves) if c), {})
    found = list(dict.fromkeys(sel for c in finals.values() for sel in c))
    figs = []
    for sel in found if selectors is None else [s for s in selectors if s in found]:
        title = f"{SELECTOR_LABELS.get(sel, sel)} vs samples, final models, {split_label(split)}"
        lines = {name: c[sel] for name, c in finals.items() if sel in c}
        figs.append((title, P.passk_curves(lines, title, ylabel=f"curve/{sel}@k (%)")))
    return figs


def figures(runs: list[RunData], names: list[str], selectors: list[str] | None = None) -> list[tuple[str, str | None]]:
    figs = []
    for split in dict.fromkeys(s for r in runs for s in r.splits):
        curves = {name: pass_curve(run.results[-1]["results"].get(split, {}))
                  for run, name in zip(runs, names) if run.results}
        title = f"pass@k of the final models, {split_label(split)}"
        figs.append((title, P.passk_curves(curves, title)))
        figs += scaling_figures(runs, names, split, selectors)
    recs = [(name, run.records) for run, name in zip(runs, names)]
    for key in LEARNING_KEYS:
        for x in ("step", "time"):
            title = f"{key} vs {'wall time' if x == 'time' else 'step'}"
            figs.append((title, P.overlay(recs, key, x, title)))
    return figs


def compare_runs(run_dirs: list[Path], out_dir: Path, selectors: list[str] | None = None) -> Path:
    """Write the comparison of `run_dirs` into `out_dir`; returns compare.html. `selectors`:
    the test-time-scaling selectors to plot against samples (e.g. ["maj", "wmaj/rm"]); None = all."""
    runs = [load_run(Path(d)) for d in run_dirs]
    names, cols = labels(runs), result_columns(runs)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    head_final = ["run", "final stage", "step", "wall time (s)"] + [f"{s} {k}" for s, k in cols]
    head_stage = ["run", "stage", "step"] + [f"{s} {k}" for s, k in cols]
    final, per_stage = final_rows(runs, names, cols), stage_rows(runs, names, cols)
    body = [f"<h1>rftkit compare: {len(runs)} runs</h1>",
            '<p class="muted">' + " &middot; ".join(f"{n}: {r.dir}" for n, r in zip(names, runs)) + "</p>",
            section("final", "Final results (%)", table(head_final, final, "compare-final", left=2)),
            section("stages", "After each stage (%)", table(head_stage, per_stage, "compare-stages", left=2)),
            section("curves", "pass@k, accuracy vs samples, and learning curves (against steps and wall time)",
                    plots(figures(runs, names, selectors)))]
    html_path = out_dir / "compare.html"
    html_path.write_text(page("rftkit compare", body, [("final", "final"), ("stages", "stages"),
                                                       ("curves", "curves")]), encoding="utf-8")
    md = [[str(c) for c in row] for row in final], [[str(c) for c in row] for row in per_stage]
    (out_dir / "compare.md").write_text("# rftkit compare\n\n## Final results (%)\n\n"
                                        + markdown_table(head_final, md[0])
                                        + "\n\n## After each stage (%)\n\n" + markdown_table(head_stage, md[1]) + "\n")
    numbers = {name: {"dir": str(run.dir), "results": run.results} for name, run in zip(names, runs)}
    (out_dir / "compare.json").write_text(json.dumps(numbers, indent=1))
    return html_path
