"""Run findings of the gallery (docs/findings.md).

    python -m experiments.findings --list
    python -m experiments.findings --only F1 F12 [--seeds 0 1 2]
    python -m experiments.findings               # every finding, in order

Each finding trains what it needs under runs/findings/ (resumable: a finished run is read back
from the finding's results log), prints its numbers and verdict, writes its plot to
docs/img/findings/ and its section of docs/findings.md.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
from pathlib import Path

from experiments.findings import FINDINGS
from experiments.findings.common import Ctx
from experiments.findings.gallery import write_section


def load(fid: str):
    if fid not in FINDINGS:
        raise SystemExit(f"unknown finding {fid!r}; --list shows them: {', '.join(FINDINGS)}")
    return importlib.import_module(f"experiments.findings.{FINDINGS[fid]}")


def spent(ctx: Ctx, fid: str, wall: float, cpu: float) -> dict:
    """Wall and CPU minutes this finding has taken over all its invocations (a resumed run adds
    its part). CPU is this process's time; the runs use one torch thread, so it is about the
    wall time the finding would take alone on one core. A log written before CPU time was kept
    has no "cpu" and keeps none; a "note" (a cost measured outside the command) is kept."""
    log = ctx.dir(fid, "minutes.json")
    old = json.loads(log.read_text()) if log.is_file() else {"minutes": 0.0, "cpu": 0.0}
    total = {"minutes": old["minutes"] + wall}
    if "cpu" in old:
        total["cpu"] = old["cpu"] + cpu
    if "note" in old:  # written by hand where the runs were trained outside this command
        total["note"] = old["note"]
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text(json.dumps(total))
    return total


def run_one(fid: str, ctx: Ctx) -> None:
    mod = load(fid)
    print(f"== {fid}. {mod.TITLE}", flush=True)
    t0, c0 = time.perf_counter(), time.process_time()
    result = mod.run(ctx)
    took = spent(ctx, fid, (time.perf_counter() - t0) / 60, (time.process_time() - c0) / 60)
    print(result.table)
    print(f"{fid} verdict: {result.verdict}. {result.reason}", flush=True)
    doc = write_section(ctx, mod, result, took)
    print(f"{fid}: {took['minutes']:.1f} min; wrote {doc}" + (f" and {result.plot}" if result.plot else ""),
          flush=True)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m experiments.findings", description=__doc__.splitlines()[0])
    ap.add_argument("--list", action="store_true", help="list the findings and exit")
    ap.add_argument("--only", nargs="+", metavar="ID", help="run these findings (e.g. F1 F12)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--quick", action="store_true", help="a few steps each (a smoke test; numbers mean nothing)")
    ap.add_argument("--out", type=Path, default=None, help="runs folder (default runs/findings)")
    ap.add_argument("--docs", type=Path, default=None, help="docs folder to write (default docs/)")
    args = ap.parse_args(argv)
    if args.list:
        for fid in FINDINGS:
            mod = load(fid)
            print(f"{fid:4} {mod.SHORT}  [estimate: {mod.BUDGET}]")
        return
    ctx = Ctx(seeds=args.seeds, quick=args.quick)
    if args.out:
        ctx.root = args.out
    if args.docs:
        ctx.docs = args.docs
    for fid in args.only or list(FINDINGS):
        run_one(fid, ctx)


if __name__ == "__main__":
    main(sys.argv[1:])
