"""Agentic RL on the built-in model: does RL teach when and how to call a tool, and to use feedback?

    .venv/bin/python experiments/agentic.py --seeds 0 1 2

1. Calculator (agent_calc, 3-digit multiplication; OOD 4 digits): per seed, the recipe's base
   stage (pretraining on a mixture where half the demonstrations call the calculator and half
   guess the product) then its GRPO stage over whole episodes. Held-out pass@1 before and after
   RL, with the tool and without it (the same problems as one-turn tasks, `tool=false`: the
   model's answer is its first turn), and tool calls per episode over training.
2. Guessing game (agent_game, a secret in 1..8 or 1..16 with higher/lower feedback; OOD 1..32):
   per seed, the base stage then GRPO, SPEAR-style self-imitation (agent_spear) and the
   ArCHer-style turn-level critic (agent_archer) from the same base. Success over training.
3. Writes docs/agentic.md (tables between the results markers) and docs/img/agentic.png.
Rows are appended to runs/agentic/*.jsonl as runs finish, so an interrupted run resumes.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from rftkit.config import validate
from rftkit.train.build import check_names
from rftkit.train.loop import train

from runlog import ROOT, fmt, recipe_tree, run_all, write_results

GAME_METHODS = {"grpo": "agent_game", "spear": "agent_spear", "archer": "agent_archer"}


def _tree(recipe: str, stages: list[str], name: str, seed: int, out: Path, args, init: Path | None = None) -> dict:
    tree = recipe_tree(recipe)
    tree["stages"] = [s for s in tree["stages"] if s["name"] in stages]
    for s in tree["stages"]:
        if s["name"] == "rl":
            s["steps"] = args.rl_steps
    tree.update(out_dir=str(out), name=name, seed=seed, progress=False)
    tree["model"] = {**tree.get("model", {}), "threads": args.threads, **({"init": str(init)} if init else {})}
    tree["data"] = {**tree["data"], "test_size": args.test_size, "ood_size": args.test_size}
    return tree


def _train(tree: dict, label: str) -> Path:
    run_dir = Path(tree["out_dir"]) / tree["name"]
    if not (run_dir / "eval" / f"{tree['stages'][-1]['name']}.json").is_file():
        cfg = validate(tree, label)
        check_names(cfg)
        train(cfg)
    return run_dir


def _eval(run_dir: Path, stage: str) -> dict:
    return json.loads((run_dir / "eval" / f"{stage}.json").read_text())["results"]


def _eval_without_tool(model_dir: Path, args) -> dict:
    """`rftkit eval` of a model on the same problems as one-turn tasks (no calculator)."""
    cmd = [sys.executable, "-m", "rftkit", "eval", str(model_dir), "data.tasks.0.params.tool=false",
           f"model.threads={args.threads}"]
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads((model_dir / "eval_results.json").read_text())


def _curve(run_dir: Path, key: str) -> list[float]:
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r.get(key, 0.0) for r in rows if r.get("stage") == "rl" and "reward/mean" in r]


def run_calc(method: str, seed: int, out: Path, args) -> dict:
    run_dir = _train(_tree("agent_calc", ["base", "rl"], f"calc-s{seed}", seed, out, args), "agent_calc")
    before, after = _eval(run_dir, "base"), _eval(run_dir, "rl")
    no_before = _eval_without_tool(run_dir / "models" / "base", args)
    no_after = _eval_without_tool(run_dir / "models" / "rl", args)
    row = {"method": method, "seed": seed, "tool_calls": _curve(run_dir, "env/tool_calls_mean"),
           "train_acc": _curve(run_dir, "reward/acc")}
    for tag, res in (("before", before), ("after", after), ("before_notool", no_before), ("after_notool", no_after)):
        for split in ("test", "ood"):
            row[f"{tag}/{split}/pass@1"] = res[split]["pass@1"]
            row[f"{tag}/{split}/calls"] = res[split].get("episode/tool_calls_mean", 0.0)
    return row


def run_game(method: str, seed: int, out: Path, args) -> dict:
    base = _train(_tree("agent_game", ["base"], f"game-base-s{seed}", seed, out, args), "agent_game base")
    tree = _tree(GAME_METHODS[method], ["rl"], f"game-{method}-s{seed}", seed, out, args, init=base / "models" / "base")
    run_dir = _train(tree, GAME_METHODS[method])
    before, after = _eval(base, "base"), _eval(run_dir, "rl")
    row = {"method": method, "seed": seed, "success": _curve(run_dir, "reward/acc"),
           "turns": _curve(run_dir, "env/turns_mean")}
    for tag, res in (("before", before), ("after", after)):
        for split in ("test", "ood"):
            row[f"{tag}/{split}/pass@1"] = res[split]["pass@1"]
            row[f"{tag}/{split}/turns"] = res[split].get("episode/turns_mean", 0.0)
    return row


def calc_table(rows: list[dict]) -> str:
    lines = ["| model | tool | test pass@1 (%) | OOD pass@1 (%) | tool calls / episode (test) |",
             "|---|---|---|---|---|"]
    for tag, label, tool in (("before", "base (before RL)", "yes"), ("before_notool", "base (before RL)", "no"),
                             ("after", "after GRPO", "yes"), ("after_notool", "after GRPO", "no")):
        lines.append(f"| {label} | {tool} | {fmt([r[f'{tag}/test/pass@1'] for r in rows])} | "
                     f"{fmt([r[f'{tag}/ood/pass@1'] for r in rows])} | "
                     f"{fmt([r[f'{tag}/test/calls'] for r in rows], 1.0, 2)} |")
    return "\n".join(lines)


def game_table(rows: list[dict]) -> str:
    lines = ["| method | test pass@1 before -> after (%) | OOD pass@1 before -> after (%) | "
             "turns / episode after (test) |", "|---|---|---|---|"]
    for m in GAME_METHODS:
        rs = [r for r in rows if r["method"] == m]
        if rs:
            cell = [f"{fmt([r[f'before/{s}/pass@1'] for r in rs])} -> {fmt([r[f'after/{s}/pass@1'] for r in rs])}"
                    for s in ("test", "ood")]
            lines.append(f"| {m} | {cell[0]} | {cell[1]} | {fmt([r['after/test/turns'] for r in rs], 1.0, 2)} |")
    return "\n".join(lines)


def plot(calc: list[dict], game: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.5))
    for r in calc:
        line, = axes[0].plot(r["tool_calls"], label=f"tool calls, seed {r['seed']}")
        axes[0].plot(r["train_acc"], linestyle="--", color=line.get_color(), label=f"success, seed {r['seed']}")
    axes[0].set(title="calculator: tool calls / episode (solid), success (dashed)", xlabel="GRPO step")
    for i, m in enumerate(GAME_METHODS):
        for r in [r for r in game if r["method"] == m]:
            axes[1].plot(r["success"], color=f"C{i}", alpha=0.7, label=m if r["seed"] == game[0]["seed"] else None)
            axes[2].plot(r["turns"], color=f"C{i}", alpha=0.7, label=m if r["seed"] == game[0]["seed"] else None)
    axes[1].set(title="game: success of the step's episodes", xlabel="RL step")
    axes[2].set(title="game: turns per episode", xlabel="RL step")
    for ax in axes:
        ax.legend(fontsize=7)
        ax.title.set_fontsize(9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--rl-steps", type=int, default=40)
    ap.add_argument("--test-size", type=int, default=200)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--game-methods", nargs="+", default=list(GAME_METHODS))
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "agentic")
    args = ap.parse_args()
    calc = run_all(args.out / "calc.jsonl", "method", ["grpo"], args.seeds, lambda m, s: run_calc(m, s, args.out, args))
    game = run_all(args.out / "game.jsonl", "method", args.game_methods, args.seeds,
                   lambda m, s: run_game(m, s, args.out, args))
    plot(calc, game, ROOT / "docs" / "img" / "agentic.png")
    cmd = (f"python experiments/agentic.py --seeds {' '.join(map(str, args.seeds))} --rl-steps {args.rl_steps} "
           f"--test-size {args.test_size}")
    body = (f"Generated by `{cmd}` (recipes agent_calc, agent_game, agent_spear, agent_archer as shipped, RL "
            f"{args.rl_steps} steps x 32 prompts x 8 episodes; held-out {args.test_size} problems per split, 16 "
            f"samples each at temperature 1; mean ± std over {len(args.seeds)} seeds).\n\n"
            f"**Calculator** (agent_calc):\n\n{calc_table(calc)}\n\n**Guessing game** (agent_game):\n\n"
            f"{game_table(game)}\n\n![tool calls and success over training](img/agentic.png)")
    write_results(ROOT / "docs" / "agentic.md", body)
    print(calc_table(calc))
    print(game_table(game))


if __name__ == "__main__":
    main()
