"""The self-contained HTML report of a run (report.html), built from the run dir alone.

Sections: summary table (after each stage, ID and OOD: greedy, pass@1, pass@k, maj@k),
dataset rows skipped at the start (when any), stage timeline, curves (reward, accuracy, pass@k
by k, entropy, KL, clipfrac, response length, objective weights, curriculum probabilities, time
per phase), test-time scaling (selectors at n, accuracy vs samples; when evaluated with
eval.scaling), forgetting matrix, base-unsolved analysis, behaviour and breakdown tables,
episodes (multi-turn), images (visual problems), sample inspector, resolved config.
Plots are PNGs embedded as base64, so the file opens anywhere with no other files.
"""

from __future__ import annotations

import datetime as _dt
from pathlib import Path

from rftkit.eval.analysis import base_unsolved
from rftkit.report import plots as P
from rftkit.report.episodes import episodes_section
from rftkit.report.forgetting import forgetting_matrix
from rftkit.report.htmlkit import esc, num, page, pct, plots, section, table
from rftkit.report.images import images_section
from rftkit.report.inspector import inspector
from rftkit.report.rundata import ORACLE, RunData, load_run, pass_curve, selector_lines, split_label

CURVES: list[tuple[str, list[str]]] = [
    ("reward (training rollouts)", [r"reward/mean", r"reward/acc"]),
    ("held-out accuracy", [r"eval/[^/]+/greedy_acc", r"eval/[^/]+/pass@1"]),
    ("held-out pass@1 per source", [r"eval/[^/]+/pass@1/src=.*"]),
    ("loss", [r"loss/.*"]),
    ("entropy (nats / token)", [r"policy/entropy", r"eval/[^/]+/entropy"]),
    ("KL", [r"policy/kl", r"policy/approx_kl", r"policy/kl_reward"]),
    ("clip fraction", [r"policy/clipfrac"]),
    ("response length (tokens)", [r"rollout/len_mean", r"eval/[^/]+/len_mean"]),
    ("objective weights", [r"weight/.*"]),
    ("curriculum probabilities", [r"curriculum/.*"]),
    ("time per phase (s)", [r"time/.*"]),
    ("throughput", [r"perf/tokens_per_s"]),
]
BEHAVIOUR = [("avg@n", "avg@n", pct), ("best-of-n (verifier)", "best_of_n", pct),
             ("distinct answers", "distinct_answers", num),
             ("distinct-1", "distinct_1", num), ("distinct-2", "distinct_2", num), ("distinct-3", "distinct_3", num),
             ("length", "len_mean", num), ("truncated %", "truncated_frac", pct), ("format %", "format_frac", pct),
             ("entropy", "entropy", num)]


def summary_columns(run: RunData) -> list[tuple[str, str]]:
    """(label, key) of the summary table's per-split columns."""
    ks = [k for k in run.ks if k > 1]
    cols = [("greedy", "greedy_acc"), ("pass@1", "pass@1")] + [(f"pass@{k}", f"pass@{k}") for k in ks]
    return cols + ([(f"maj@{max(ks)}", f"maj@{max(ks)}")] if ks else [])


def summary_section(run: RunData) -> str:
    if not run.results:
        return section("summary", "Held-out results (%)", '<p class="muted">no stage has been evaluated yet</p>')
    cols, splits = summary_columns(run), run.splits
    header = ["after stage", "step"] + [lab for _ in splits for lab, _ in cols]
    groups = [("", 2)] + [(split_label(s), len(cols)) for s in splits]
    rows = [[r["stage"], r["step"]] + [pct(r["results"].get(s, {}).get(key)) for s in splits for _, key in cols]
            for r in run.results]
    note = ('<p class="muted">greedy: accuracy of the greedy completion; pass@k: unbiased estimator from n samples '
            '(Chen et al. 2021); maj@k: majority vote over k samples (docs/evaluation.md).</p>')
    return section("summary", "Held-out results (%)", table(header, rows, "summary-table", groups=groups), note)


def skipped_section(run: RunData) -> str:
    """The dataset rows skipped with on_error: skip, each with its file, row and reason."""
    if not run.skipped:
        return ""
    rows = [[label, r] for label, v in run.skipped.items() for r in v["reasons"]]
    counts = ", ".join(f"{esc(label)}: {v['skipped']}" for label, v in run.skipped.items())
    note = (f'<p class="muted">Rows left out of training and evaluation when the run started ({counts}); '
            "at most 100 reasons are kept per task. Fix the file or the column mapping, or keep on_error: "
            "skip (docs/real_models.md).</p>")
    return section("skipped", "Skipped rows", note, table(["task", "file: row (line): reason"], rows,
                                                          "skipped-table", left=2))


def timeline_section(run: RunData) -> str:
    rows, spans = [], []
    for sp, st in zip(run.spans(), run.stages):
        objs = ", ".join(_objective(o) for o in st.get("objectives") or [])
        dur = sp["t1"] - sp["t0"] if sp["t1"] is not None else None
        rows.append([sp["stage"], sp["steps"], "-" if sp["first"] is None else f"{sp['first']}-{sp['last']}",
                     num(dur, 1), objs, ", ".join(st.get("tasks") or ["all"]),
                     (st.get("sampler") or {}).get("name", "uniform"), "yes" if any(
                         r["stage"] == st["name"] for r in run.results) else "no"])
        if dur is not None:
            spans.append((sp["stage"], sp["t0"], sp["t1"]))
    tab = table(["stage", "steps", "logged steps", "wall time (s)", "objectives", "trains on", "sampler", "evaluated"],
                rows, "timeline-table", left=1)
    return section("timeline", "Stage timeline", tab, plots([("stage timeline", P.timeline(spans))]))


def _objective(o: dict) -> str:
    w = o.get("weight", 1)
    if isinstance(w, dict):
        return f"{o['name']} ({w.get('name', 'schedule')})"
    return o["name"] if w == 1 else f"{o['name']} x{w}"


def curves_section(run: RunData) -> str:
    bounds = run.stage_bounds()
    figs = [(title, P.curve(run.records, P.match_keys(run.records, pats), title, bounds=bounds))
            for title, pats in CURVES]
    for i, split in enumerate(run.splits):
        curves = {r["stage"]: pass_curve(r["results"].get(split, {})) for r in run.results}
        title = f"pass@k by k after each stage, {split_label(split)}"
        figs.insert(3 + i, (f"pass@k by k, {split}", P.passk_curves(curves, title)))
    return section("curves", "Curves", plots(figs))


SELECTORS_AT_N = [("best-of-n verifier", "bon/verifier@n"), ("best-of-n log-prob", "bon/logprob@n"),
                  ("best-of-n RM", "bon/rm@n"), ("best-of-n PRM", "bon/prm@n"), ("RM-weighted vote", "wmaj/rm@n"),
                  ("log-prob-weighted vote", "wmaj/logprob@n")]


def scaling_section(run: RunData) -> str:
    """Selectors at n after each stage, and per split the accuracy-vs-samples curves of the last
    stage evaluated with curves (eval.scaling; rftkit/eval/selection.py)."""
    results = [(r, split, res) for r in run.results for split, res in r["results"].items()]
    used = [(lab, key) for lab, key in SELECTORS_AT_N if any(key in res for _, _, res in results)]
    figs = []
    for split in run.splits:
        with_curves = [r for r in run.results if selector_lines(r["results"].get(split, {}))]
        if with_curves:
            last = with_curves[-1]
            title = f"accuracy vs samples after {last['stage']}, {split_label(split)}"
            figs.append((title, P.passk_curves(selector_lines(last["results"][split]), title,
                                                            ylabel="accuracy (%)", dashed=(ORACLE,))))
    if not used and not figs:
        return ""
    rows = [[r["stage"], split] + [pct(res.get(key)) for _, key in used] for r, split, res in results]
    note = ('<p class="muted">Selectors over the n samples (docs/evaluation.md): best-of-n by the verifier (an '
            "oracle), the policy's mean token log-prob, a reward model, a process reward model (weakest step); "
            "votes weighted by sigmoid(RM) or exp(log-prob). Curves: expected accuracy of each selector on a "
            "random k of the n samples; pass@k (dashed) is the oracle.</p>")
    return section("scaling", "Test-time scaling (%)", note,
                   table(["stage", "split"] + [lab for lab, _ in used], rows, "scaling-table", left=2), plots(figs))


def forgetting_section(run: RunData) -> str:
    parts = ['<p class="muted">pass@1 (%) on each source after each stage; shaded cells: the stage trained on '
             "that source. Forgetting = best earlier value - final value, in points (Chaudhry et al. 2018).</p>"]
    for split in run.splits:
        fm = forgetting_matrix(run.dir, split=split)
        if not fm["stages"]:
            continue
        rows = [[f"after {st}"] + [(pct(v), "trained" if src in fm["trained"][st] else "")
                                   for src, v in zip(fm["sources"], row)]
                for st, row in zip(fm["stages"], fm["matrix"])]
        rows.append(["forgetting (points)"] + [num(None if f is None else 100 * f, 1) for f in
                                               fm["forgetting"].values()])
        body = table(["", *fm["sources"]], rows, f"forgetting-{split}")
        heat = P.heatmap(fm["matrix"], fm["stages"], fm["sources"], f"pass@1 per source, {split_label(split)}")
        parts += [f"<h3>{esc(split_label(split))}</h3>", body, plots([(f"forgetting {split}", heat)])]
    return section("forgetting", "Forgetting matrix", *parts)


def unsolved_section(run: RunData) -> str:
    rows = []
    for split in run.splits:
        stages = [r["stage"] for r in run.results if (r["stage"], split) in run.samples]
        if len(stages) < 2:
            continue
        res = base_unsolved(run.sample_records(stages[0], split), run.sample_records(stages[-1], split))
        rows.append([split_label(split), stages[0], stages[-1], res["problems"], res["base_unsolved"],
                     res["trained_solved"], pct(res["trained_solved_frac"]), pct(res["trained_pass@1"])])
    if not rows:
        return ""
    note = ('<p class="muted">Problems the first evaluated stage never solves in its n samples (pass@n = 0), and how '
            "many of them the last stage solves at least once in its n samples (Yue et al. 2025).</p>")
    tab = table(["split", "base", "trained", "problems", "base unsolved", "trained solves", "solved %",
                 "trained pass@1 on them %"], rows, "unsolved-table", left=3)
    return section("unsolved", "Base-unsolved problems", note, tab)


def behaviour_section(run: RunData) -> str:
    if not run.results:
        return ""
    rows, brk_rows, brk_keys = [], [], []
    for r in run.results:
        for split, res in r["results"].items():
            rows.append([r["stage"], split] + [f(res.get(key)) for _, key, f in BEHAVIOUR])
            brk_keys += [k.split("/", 1)[1] for k in res if k.startswith("pass@1/") and k not in brk_keys]
    brk_keys = list(dict.fromkeys(brk_keys))
    for r in run.results:
        for split, res in r["results"].items():
            brk_rows.append([r["stage"], split] + [pct(res.get(f"pass@1/{k}")) for k in brk_keys])
    used = [i for i, (_, key, _) in enumerate(BEHAVIOUR) if any(key in res for r in run.results
                                                                for res in r["results"].values())]
    header = ["stage", "split"] + [BEHAVIOUR[i][0] for i in used]
    rows = [row[:2] + [row[2 + i] for i in used] for row in rows]
    parts = [table(header, rows, "behaviour-table", left=2)]
    if brk_keys:
        parts += ["<h3>pass@1 (%) per difficulty (d&lt;level&gt;) and source (src=&lt;label&gt;)</h3>",
                  table(["stage", "split", *brk_keys], brk_rows, "breakdown-table", left=2)]
    return section("behaviour", "Diversity, behaviour and breakdowns", *parts)


def build_html(run: RunData) -> str:
    stamp = _dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    head = (f"<h1>rftkit run <code>{esc(run.name)}</code></h1><p class=\"muted\">{esc(run.dir)} - "
            f"{len(run.stages)} stages, {len(run.records)} metric records - report built {stamp}"
            + ("" if P.have_matplotlib() else " - plots need matplotlib: pip install rftkit[report]") + "</p>")
    body = [head, summary_section(run), skipped_section(run), timeline_section(run), curves_section(run),
            scaling_section(run), forgetting_section(run), unsolved_section(run), behaviour_section(run),
            episodes_section(run), images_section(run), inspector(run),
            section("config", "Resolved config", f"<pre>{esc(run.cfg_text)}</pre>")]
    nav = [("summary", "results"), ("skipped", "skipped rows"), ("timeline", "timeline"), ("curves", "curves"),
           ("scaling", "scaling"), ("forgetting", "forgetting"), ("unsolved", "base-unsolved"),
           ("behaviour", "behaviour"), ("episodes", "episodes"), ("images", "images"),
           ("samples", "samples"), ("config", "config")]
    body = [b for b in body if b]
    optional = ("skipped", "scaling", "episodes", "images")
    shown = {a for a in optional if any(b.startswith(f'<section id="{a}">') for b in body)}
    nav = [n for n in nav if n[0] not in optional or n[0] in shown]
    return page(f"rftkit report: {run.name}", body, nav)


def write_html(run_dir: Path) -> Path:
    run = load_run(Path(run_dir))
    out = Path(run_dir) / "report.html"
    out.write_text(build_html(run), encoding="utf-8")
    return out

