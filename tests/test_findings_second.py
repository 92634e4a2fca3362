"""The second half of the findings gallery, each run end to end in quick mode (see test_findings.py)."""

from __future__ import annotations

import pytest

from findings_quick import SECOND, run_quick


@pytest.mark.parametrize("fid", SECOND)
def test_finding_runs_quick(fid, tmp_path_factory):
    run_quick(fid, tmp_path_factory.getbasetemp() / "findings_second")
