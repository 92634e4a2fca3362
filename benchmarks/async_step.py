"""GRPO step time, synchronous vs async (`dist.async.max_staleness=1`), on this machine's CPU.

    python benchmarks/async_step.py            # default recipe's GRPO stage, micro model, 12 steps
    python benchmarks/async_step.py --smoke    # seconds: nano model, 3 steps (the test suite runs this)

Each variant trains the same GRPO stage from the same random init with `model.threads=1` and
`rl.skip_inert_rows: false` (a random model's rewards are all 0: with the skip on, the update
would do nothing):

- `sync`: rollout then update, one after the other, on one core;
- `async, thread`: the rollout of step t+1 runs on a background thread of the driver (its own
  copy of the policy, one core) while step t's update runs on the main thread (the other core);
- `async, 1 Ray worker`: the same, with the rollout on a Ray actor process
  (`dist.rollout_workers=1`).

It prints the mean wall time per step (after the first, which includes start-up) and the
split of the synchronous step into rollout and update, so the best case of overlapping them
(max(rollout, update)) can be read next to what async reached.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from rftkit.config import validate
from rftkit.recipe_base import recipe_tree
from rftkit.train.loop import train

VARIANTS = {"sync": {}, "async, thread": {"async": {"max_staleness": 1}},
            "async, 1 Ray worker": {"rollout_workers": 1, "async": {"max_staleness": 1}}}


def run(name: str, dist: dict, steps: int, smoke: bool, out: Path) -> dict:
    tree = recipe_tree("default")
    rl = next(s for s in tree["stages"] if s["name"] == "rl")
    # random init: every reward is 0, so the inert-row skip would leave no update to overlap;
    # off, the update does the full work of a learning step
    rl.update(steps=steps, rl={**rl.get("rl", {}), "skip_inert_rows": False})
    if smoke:
        rl.update(batch_size=4)
        tree["model"] = {"size": "nano"}
        tree["rollout"] = {**tree["rollout"], "max_new_tokens": 12, "group_size": 4}
    tree.update(out_dir=str(out), name=name.replace(", ", "-").replace(" ", "_"), progress=False, stages=[rl],
                dist=dist, stage_cache=False)
    tree["model"] = {**tree.get("model", {}), "threads": 1}
    tree["checkpoint"] = {"every": steps + 1}  # no checkpoint inside the timed steps (async drains at one)
    tree["data"] = {**tree["data"], "train_size": 2000, "test_size": 1, "ood_size": 1}
    tree["eval"] = {"n_samples": 1, "ks": [1], "splits": ["test"]}
    r = train(validate(tree, name))
    records = [json.loads(x) for x in (r.dir / "metrics.jsonl").read_text().splitlines() if '"reward/mean"' in x]
    times = [b["time"] - a["time"] for a, b in zip(records, records[1:])]
    return {"variant": name, "step_s": statistics.mean(times),
            "rollout_s": statistics.mean(x.get("time/rollout", 0.0) for x in records[1:]),
            "update_s": statistics.mean(x["time/update"] for x in records[1:])}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS))
    args = ap.parse_args()
    steps = 3 if args.smoke else args.steps
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.variants:
            t0 = time.perf_counter()
            rows.append(run(name, VARIANTS[name], steps, args.smoke, Path(tmp)))
            rows[-1]["wall_s"] = time.perf_counter() - t0
    base = rows[0]["step_s"]
    print("| variant | s / step | vs sync | rollout s | update s |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['variant']} | {r['step_s']:.2f} | {base / r['step_s']:.2f}x | {r['rollout_s']:.2f} | "
              f"{r['update_s']:.2f} |")


if __name__ == "__main__":
    main()
