"""The findings gallery (experiments/findings, docs/findings.md): the writer and the CLI, and
every finding of the first half run end to end in quick mode (the second half is in
test_findings_second.py, so pytest-xdist runs the two files side by side)."""

from __future__ import annotations

import json

import pytest

from experiments.findings import FINDINGS
from experiments.findings.__main__ import load, main
from experiments.findings.common import Ctx, Result
from experiments.findings.gallery import write_section

from findings_quick import FIRST, run_quick


class Fake:
    ID, TITLE, SHORT, PAPER, CLAIM, SETUP = "F7", "t", "short claim", "p", "c", "s"


def test_sections_keep_finding_order_and_the_summary_follows_the_verdicts(tmp_path):
    ctx = Ctx(root=tmp_path, docs=tmp_path / "docs", seeds=[0, 1, 2])
    for fid, verdict in (("F12", "partly"), ("F7", "reproduced"), ("F1b", "not reproduced")):
        Fake.ID = fid
        write_section(ctx, Fake, Result(verdict, "why", f"head {fid}", "| a |\n|---|"), {"minutes": 1.0})
    Fake.ID = "F7"
    write_section(ctx, Fake, Result("inconclusive", "rerun", "new head", "| b |\n|---|"), {"minutes": 2.0, "cpu": 1.5})
    text = (tmp_path / "docs" / "findings.md").read_text()
    assert text.index("## F1b.") < text.index("## F7.") < text.index("## F12.")
    assert text.count("## F7.") == 1 and "rerun" in text and "**Verdict: reproduced.**" not in text
    assert "| [F7](#f7) | short claim | **inconclusive** | new head |" in text
    assert "| [F12](#f12) | short claim | **partly** | head F12 |" in text
    assert "--only F7` (3 seeds; 2 min wall, 2 CPU-min on" in text


def test_a_verdict_outside_the_four_is_refused():
    with pytest.raises(ValueError, match="verdict must be one of"):
        Result("mostly", "", "", "")


def test_list_names_every_finding_and_unknown_ids_are_refused(capsys):
    main(["--list"])
    out = capsys.readouterr().out
    assert all(line.split()[0] in FINDINGS for line in out.strip().splitlines())
    assert len(out.strip().splitlines()) == len(FINDINGS) >= 16
    with pytest.raises(SystemExit, match="unknown finding 'F99'"):
        load("F99")


def test_every_finding_states_what_the_gallery_shows():
    for fid in FINDINGS:
        mod = load(fid)
        assert mod.ID == fid
        for name in ("TITLE", "SHORT", "PAPER", "CLAIM", "SETUP", "BUDGET"):
            assert getattr(mod, name).strip(), f"{fid} has no {name}"
        assert "arXiv" in mod.PAPER or "arxiv" in mod.PAPER, f"{fid}: PAPER should cite the paper"


@pytest.mark.parametrize("fid", FIRST)
def test_finding_runs_quick(fid, tmp_path_factory):
    run_quick(fid, tmp_path_factory.getbasetemp() / "findings_first")


def test_a_rerun_reads_finished_runs_back(tmp_path):
    run_quick("F1", tmp_path)
    log = tmp_path / "runs" / "F1" / "runs.jsonl"
    rows = log.read_text().splitlines()
    trained = tmp_path / "runs" / "F1" / "default-s0" / "metrics.jsonl"
    stamp = trained.stat().st_mtime_ns
    run_quick("F1", tmp_path)
    assert log.read_text().splitlines() == rows and trained.stat().st_mtime_ns == stamp
    assert json.loads(rows[0])["seed"] == 0
