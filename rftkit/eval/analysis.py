"""Analyses that compare stored evaluation records (eval/<stage>_<split>.jsonl).

`base_unsolved(base, trained)`: the problems a starting model never solves with its n
samples (pass@n = 0, i.e. no correct sample), and how many of those the trained model
solves (at least one correct sample of its n, or its greedy answer when `count_greedy`).
This is the boundary question of Yue et al. 2025, "Does Reinforcement Learning Really
Incentivize Reasoning Capacity in LLMs Beyond the Base Model?" (arXiv:2504.13837).
Problems are matched by (source, prompt); problems missing from either side are ignored.
"""

from __future__ import annotations

import json
from pathlib import Path

from rftkit.algos.groups import group_rows


def read_records(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def _key(r: dict) -> tuple[str, str]:
    return (r.get("source") or r["task"], r["prompt"])


def _solved(r: dict, count_greedy: bool) -> bool:
    return r["n_correct"] > 0 or (count_greedy and r["greedy"]["score"] >= 1)


def base_unsolved(base: list[dict], trained: list[dict], count_greedy: bool = False) -> dict:
    """{"problems", "base_unsolved", "trained_solved", "trained_solved_frac",
    "trained_pass@1" (mean sample accuracy of the trained model on the unsolved set),
    "by_source": {label: {"base_unsolved", "trained_solved"}}, "solved_prompts": [...]}."""
    after = {_key(r): r for r in trained}
    shared = [r for r in base if _key(r) in after]
    unsolved = [r for r in shared if not _solved(r, count_greedy)]
    solved_now = [after[_key(r)] for r in unsolved if _solved(after[_key(r)], count_greedy)]
    by_source = {label: {"base_unsolved": len(rows),
                         "trained_solved": sum(_solved(after[_key(unsolved[i])], count_greedy) for i in rows)}
                 for label, rows in group_rows(_key(r)[0] for r in unsolved).items()}
    acc = [after[_key(r)]["n_correct"] / max(1, len(after[_key(r)]["samples"])) for r in unsolved]
    return {"problems": len(shared), "base_unsolved": len(unsolved), "trained_solved": len(solved_now),
            "trained_solved_frac": len(solved_now) / len(unsolved) if unsolved else 0.0,
            "trained_pass@1": sum(acc) / len(acc) if acc else 0.0, "by_source": by_source,
            "solved_prompts": [r["prompt"] for r in solved_now]}


def base_unsolved_files(base_jsonl: Path, trained_jsonl: Path, count_greedy: bool = False) -> dict:
    """`base_unsolved` on two eval/<stage>_<split>.jsonl files (of one run or two runs)."""
    return base_unsolved(read_records(base_jsonl), read_records(trained_jsonl), count_greedy)
