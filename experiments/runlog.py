"""What the experiment scripts share: recipe trees, the shared base+SFT start, and a results
log that lets an interrupted experiment resume (one JSON row per finished run)."""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable
from pathlib import Path

from rftkit.config import validate
from rftkit.recipe_base import recipe_tree  # a shipped recipe, `base:` resolved (used by the experiments)
from rftkit.train.loop import train

ROOT = Path(__file__).resolve().parents[1]


def shared_start(out: Path, recipe: str, threads: int = 0) -> Path:
    """Train `recipe`'s stages before `rl` once, into out/start; return its models/sft."""
    model = out / "start" / "models" / "sft"
    if model.is_dir():
        return model
    tree = recipe_tree(recipe)
    tree["stages"] = [s for s in tree["stages"] if s["name"] != "rl"]
    tree.update(out_dir=str(out), name="start", progress=False)
    if threads:
        tree["model"] = {**tree.get("model", {}), "threads": threads}
    train(validate(tree, f"{recipe} (base+sft)"))
    return model


def run_all(results: Path, key: str, names: list[str], seeds: list[int],
            run: Callable[[str, int], dict]) -> list[dict]:
    """Rows for every (seed, name): read from `results` (JSONL) when done before, else
    `run(name, seed)`, appended to `results` as soon as it finishes."""
    done = {(r[key], r["seed"]): r for r in map(json.loads, results.read_text().splitlines())} \
        if results.is_file() else {}
    rows = []
    for seed in seeds:
        for name in names:
            if (name, seed) not in done:
                done[(name, seed)] = run(name, seed)
                results.parent.mkdir(parents=True, exist_ok=True)
                with results.open("a") as f:
                    f.write(json.dumps(done[(name, seed)]) + "\n")
                print(json.dumps({k: v for k, v in done[(name, seed)].items() if not isinstance(v, (list, dict))}),
                      flush=True)
            rows.append(done[(name, seed)])
    return rows


BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"


def write_results(doc: Path, body: str) -> None:
    """Put `body` between the results markers of `doc` (appended with markers if it has none),
    so a rerun refreshes the numbers and keeps the hand-written reading around them."""
    text = doc.read_text() if doc.is_file() else ""
    block = f"{BEGIN}\n{body.strip()}\n{END}"
    if BEGIN in text and END in text:
        text = text[: text.index(BEGIN)] + block + text[text.index(END) + len(END):]
    else:
        text += ("\n" if text else "") + block + "\n"
    doc.write_text(text)


def fmt(vals: list[float], scale: float = 100.0, digits: int = 1) -> str:
    """"mean ± std" of vals x scale over seeds (NaNs left out; "-" when none, no std for one)."""
    vals = [v for v in vals if v == v]
    if not vals:
        return "-"
    sd = f" ± {statistics.stdev(vals) * scale:.{digits}f}" if len(vals) > 1 else ""
    return f"{statistics.mean(vals) * scale:.{digits}f}{sd}"

