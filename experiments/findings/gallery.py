"""docs/findings.md: one generated section per finding, in finding order, under a summary
table of verdicts; the README's gallery table is the same summary.

A section holds everything its module states (paper, claim, setup, reading) and what its last
run found (command, plot, numbers, verdict); rerunning a finding rewrites its section only.
"""

from __future__ import annotations

import re
from pathlib import Path

from experiments.findings.common import Ctx, Result

INTRO = """# Findings gallery

Claims from the papers behind rftkit, each checked at small scale on the built-in testbed
(a char-level transformer of about 1.8M parameters, synthetic tasks with exact verifiers, a
2-core CPU). One command per finding; every number below was produced by the command shown in
its section, with mean ± standard deviation over seeds. The catalog of findings (F1-F24) and
their expected signatures is `../shared/methods/catalog-seeds-000-002.md` §3.

```bash
python -m experiments.findings --list          # the findings and their budgets
python -m experiments.findings --only F1 F12   # run some (resumable: finished runs are kept)
python -m experiments.findings                 # all of them
```

A verdict says whether the paper's signature appears here: **reproduced**, **partly**
(some of the signature, or only in some settings), **not reproduced** (measured, and the
signature is absent or reversed) or **inconclusive** (the spread over seeds is larger than the
effect). A tiny model on a synthetic task is not the paper's setting: a verdict is about this
testbed, and each section says what differs.

**Cost.** Each section's command line gives the wall minutes its runs took here. They were
measured with up to five findings running at once on the 2 cores (load about 10), so they are
several times what a finding takes alone; CPU minutes (one torch thread per run), where kept,
are close to the time alone. `--list` shows each finding's estimated budget; no finding was
timed alone on an idle machine.
"""

FINDINGS_DOC = "findings.md"
_BLOCK = re.compile(r"<!-- (F[\w]+):begin -->\n.*?<!-- \1:end -->\n", re.S)
_VERDICT = re.compile(r"<!-- verdict: (F[\w]+) \| ([^|]+) \| ([^|]+) \| (.+?) -->")


def order_key(fid: str) -> tuple[int, str]:
    digits = re.sub(r"\D", "", fid)
    return (int(digits) if digits else 999, fid)


def sep(text: str) -> str:
    """A list starts on its own line after its bold label; prose continues the label's line."""
    return "\n\n" if text.strip().startswith(("- ", "* ", "1. ")) else " "


def took_text(took: dict) -> str:
    """What the finding's runs cost: wall minutes on the 2-core machine (shared with the other
    findings running then) and, where kept, CPU minutes (one torch thread: about the wall time
    on an idle core). Runs shared between findings count where they were trained."""
    if "note" in took:  # a cost measured outside this command (its runs were trained elsewhere and read back)
        return took["note"]
    cpu = f", {took['cpu']:.0f} CPU-min" if "cpu" in took else ""
    return (f"{took['minutes']:.0f} min wall{cpu} on the 2-core machine, other findings running beside it; "
            "runs shared with another finding counted where they were trained")


def section(mod, result: Result, took: dict, seeds: list[int]) -> str:
    fid = mod.ID
    seeds_arg = "" if seeds == [0, 1, 2] else " --seeds " + " ".join(map(str, seeds))
    lines = [f"<!-- {fid}:begin -->", f'<a id="{fid.lower()}"></a>', f"## {fid}. {mod.TITLE}", "",
             f"**Paper.** {mod.PAPER}", "", f"**Claim.** {mod.CLAIM}", "",
             f"**Setup.**{sep(mod.SETUP)}{mod.SETUP.strip()}", "",
             f"**Command.** `python -m experiments.findings --only {fid}{seeds_arg}` ({len(seeds)} seeds; "
             f"{took_text(took)})", ""]
    if result.plot is not None:
        lines += [f"![{fid}](img/findings/{result.plot.name})", ""]
    lines += [result.table.strip(), "", f"**Verdict: {result.verdict}.** {result.reason}", ""]
    lines += [f"- {n}" for n in result.notes]
    reading = getattr(mod, "READING", "").strip()
    if reading:
        lines += ["", reading]
    lines += ["", f"<!-- verdict: {fid} | {result.verdict} | {mod.SHORT} | {result.headline} -->",
              f"<!-- {fid}:end -->", ""]
    return "\n".join(lines)


def summary(blocks: dict[str, str], link: str) -> str:
    rows = ["| finding | claim (paper) | verdict | what we measured |", "|---|---|---|---|"]
    for fid in sorted(blocks, key=order_key):
        m = _VERDICT.search(blocks[fid])
        if m:
            rows.append(f"| [{fid}]({link}#{fid.lower()}) | {m.group(3).strip()} | **{m.group(2).strip()}** | "
                        f"{m.group(4).strip()} |")
    return "\n".join(rows)


def write_section(ctx: Ctx, mod, result: Result, took: dict) -> Path:
    """Put this finding's section into docs/findings.md (the others kept), rebuild the summary,
    and the README's gallery table when the docs are the repository's."""
    doc = ctx.docs / FINDINGS_DOC
    text = doc.read_text() if doc.is_file() else ""
    blocks = {m.group(1): m.group(0) for m in _BLOCK.finditer(text)}
    blocks[mod.ID] = section(mod, result, took, ctx.seeds)
    body = "\n".join(blocks[f] for f in sorted(blocks, key=order_key))
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text(f"{INTRO}\n## Summary\n\n{summary(blocks, '')}\n\n{body}")
    readme = ctx.docs.parent / "README.md"
    if ctx.docs.resolve() == (Path(__file__).resolve().parents[2] / "docs") and readme.is_file():
        _write_readme(readme, summary(blocks, "docs/findings.md"))
    return doc


def _write_readme(readme: Path, table: str) -> None:
    begin, end = "<!-- findings:begin -->", "<!-- findings:end -->"
    text = readme.read_text()
    if begin in text and end in text:
        text = text[: text.index(begin)] + f"{begin}\n{table}\n{end}" + text[text.index(end) + len(end):]
        readme.write_text(text)
