"""The report's sample inspector: stored completions with their verdicts (eval/<stage>_<split>.jsonl).

For each evaluated stage and split, a collapsible block with up to MAX_PROBLEMS problems
(half solved by at least one sample, half unsolved, when there are both): the prompt, the
reference answer, the greedy completion and up to MAX_SAMPLES samples, each with its parsed
answer, whether it is correct and the verifier's reason.
"""

from __future__ import annotations

from rftkit.report.htmlkit import Raw, esc, section, table
from rftkit.report.rundata import RunData, split_label

MAX_PROBLEMS = 8
MAX_SAMPLES = 8


def pick(records: list[dict], limit: int = MAX_PROBLEMS) -> list[dict]:
    """Up to `limit` records, alternating solved and unsolved ones, in file order."""
    solved = [r for r in records if r["n_correct"] > 0]
    unsolved = [r for r in records if r["n_correct"] == 0]
    out: list[dict] = []
    while len(out) < limit and (solved or unsolved):
        for bucket in (solved, unsolved):
            if bucket and len(out) < limit:
                out.append(bucket.pop(0))
    return out


def _verdict(score: float) -> tuple[str, str]:
    return ("correct", "ok") if score >= 1 else ("wrong", "bad")


def _code(text: str) -> Raw:
    return Raw(f'<pre class="c">{esc(text)}</pre>')


def problem_html(r: dict) -> str:
    n = len(r["samples"])
    g = r["greedy"]
    head = (f"<div class=\"prob {'solved' if r['n_correct'] else 'unsolved'}\"><b>prompt</b> <code>{esc(r['prompt'])}"
            f"</code> &nbsp; <b>answer</b> <code>{esc(r['answer'])}</code> &nbsp; <span class=\"muted\">source "
            f"{esc(r.get('source') or r['task'])}, difficulty {esc(r['difficulty'])}, {r['n_correct']}/{n} samples "
            "correct</span>")
    rows = [["greedy", _code(g["text"]), "-" if g["parsed"] is None else g["parsed"], _verdict(g["score"]),
             g["reason"], "", ""]]
    for i, s in enumerate(r["samples"][:MAX_SAMPLES]):
        rows.append([f"sample {i + 1}", _code(s["text"]), "-" if s["parsed"] is None else s["parsed"],
                     _verdict(s["score"]), s["reason"], s.get("len", ""),
                     "yes" if s.get("truncated") else ("no" if "truncated" in s else "")])
    more = f'<p class="muted">{n - MAX_SAMPLES} more samples in the JSONL file</p>' if n > MAX_SAMPLES else ""
    tab = table(["", "completion", "parsed", "verdict", "reason", "tokens", "truncated"], rows,
                left=5)
    return head + tab + more + "</div>"


def inspector(run: RunData) -> str:
    if not run.samples:
        return ""
    blocks = ['<p class="muted">Stored completions with their verdicts; every problem and sample is in '
              "<code>eval/&lt;stage&gt;_&lt;split&gt;.jsonl</code>.</p>"]
    keys = list(run.samples)
    last_stage = keys[-1][0]
    opened_key = (last_stage, "test") if (last_stage, "test") in run.samples else keys[-1]
    for stage, split in run.samples:
        records = run.sample_records(stage, split)
        shown = pick(records)
        body = "".join(problem_html(r) for r in shown)
        opened = " open" if (stage, split) == opened_key else ""
        blocks.append(f'<details{opened}><summary>after {esc(stage)}, {esc(split_label(split))}: '
                      f"{len(shown)} of {len(records)} problems</summary>{body}</details>")
    return section("samples", "Sample inspector", *blocks)
