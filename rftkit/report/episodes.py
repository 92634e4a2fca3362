"""The report's episodes section: a few full multi-turn episodes per evaluation (model turns,
tool calls and what the environment answered), read from eval/<stage>_<split>.jsonl records
(`rftkit.eval.evaluate.add_episodes` stores each sample's segments)."""

from __future__ import annotations

from rftkit.report.htmlkit import esc, section
from rftkit.report.rundata import RunData

PER_EVAL = 2
"""Episodes shown per (stage, split): the first solved and the first failed sample."""


def episodes_section(run: RunData) -> str:
    parts = []
    for r in run.results:
        for split in run.splits:
            if (r["stage"], split) not in run.samples:
                continue
            shown = _pick(run.sample_records(r["stage"], split))
            if shown:
                parts.append(f"<h3>{esc(r['stage'])}, {esc(split)}</h3>" + "".join(_episode(p, s) for p, s in shown))
    if not parts:
        return ""
    note = ('<p class="muted">Sampled episodes of multi-turn problems: <b>model turns</b> (trained) and '
            '<i>environment observations</i> (tool results, feedback; never trained); the verifier scores the '
            "last model turn.</p>")
    return section("episodes", "Episodes", note, *parts)


def _pick(records: list[dict]) -> list[tuple[dict, dict]]:
    """The first solved and the first failed episode among the records' samples."""
    found: dict[bool, tuple[dict, dict]] = {}
    for rec in records:
        for s in rec["samples"]:
            if "segments" in s and (s["score"] >= 1.0) not in found:
                found[s["score"] >= 1.0] = (rec, s)
        if len(found) == PER_EVAL:
            break
    return [found[k] for k in (True, False) if k in found]


def _episode(rec: dict, s: dict) -> str:
    turns = "".join(f'<span class="{"turn" if model else "obs"}">{esc(text)}</span>' for text, model in s["segments"])
    info = ", ".join(f"{k} {v:g}" for k, v in sorted(s.get("env", {}).items()))
    head = (f"<p><code>{esc(rec['prompt'])}</code> expected <code>{esc(rec['answer'])}</code>: score {s['score']:g}, "
            f"{s['turns']} turns, ended {esc(s['end'])}{'; ' + esc(info) if info else ''}</p>")
    return head + f'<pre class="episode">{turns}</pre>'
