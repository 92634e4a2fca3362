"""Shared by the findings tests: run one finding of the gallery in quick mode (a couple of steps
per stage, tiny test sets) into a temporary runs folder and docs folder, the way
`python -m experiments.findings --only ID --quick` does."""

from __future__ import annotations

from pathlib import Path

from experiments.findings import FINDINGS
from experiments.findings.__main__ import main
from experiments.findings.common import VERDICTS

HALF = (len(FINDINGS) + 1) // 2
FIRST, SECOND = list(FINDINGS)[:HALF], list(FINDINGS)[HALF:]


def run_quick(fid: str, root: Path) -> str:
    """Run `fid` quick with one seed; check its plot and its section; return the section."""
    docs = root / "docs"
    main(["--only", fid, "--quick", "--seeds", "0", "--out", str(root / "runs"), "--docs", str(docs)])
    text = (docs / "findings.md").read_text()
    begin, end = f"<!-- {fid}:begin -->", f"<!-- {fid}:end -->"
    assert begin in text and end in text, f"{fid} wrote no section"
    section = text[text.index(begin):text.index(end)]
    assert f"python -m experiments.findings --only {fid} --seeds 0" in section
    assert any(f"**Verdict: {v}.**" in section for v in VERDICTS), section
    assert (docs / "img" / "findings" / f"{fid.lower()}.png").stat().st_size > 1000
    return section
