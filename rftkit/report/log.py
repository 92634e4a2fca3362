"""Metric logging: flat namespaced keys, one JSON object per line.

`metrics.jsonl` is the source of truth for reports and comparisons. Each record holds
`step` (global optimizer-loop step), `stage`, `time` (seconds since the run started, summed
over resumes) and the metrics (`reward/mean`, `loss/policy`, `eval/test/pass@1`, ...).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Protocol


class MetricLogger(Protocol):
    def log(self, record: dict) -> None: ...

    def close(self) -> None: ...


def _clean(v):
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)  # JSON has no NaN; keep it visible as a string
    return v


class JsonlLogger:
    """Appends records to a JSONL file; `lines` counts what has been written (for resume)."""

    def __init__(self, path: Path, keep_lines: int | None = None) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if keep_lines is not None and self.path.exists():
            kept = self.path.read_text().splitlines(keepends=True)[:keep_lines]
            self.path.write_text("".join(kept))
        self.lines = len(self.path.read_text().splitlines()) if self.path.exists() else 0
        self._f = self.path.open("a")

    def log(self, record: dict) -> None:
        self._f.write(json.dumps({k: _clean(v) for k, v in record.items()}) + "\n")
        self._f.flush()
        self.lines += 1

    def close(self) -> None:
        self._f.close()


def read_metrics(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
