"""Structure rules: the import direction between rftkit's parts, and size budgets.

A part is a subpackage of rftkit (`model/`, `train/`, ...) or a top-level module (`config.py`,
`cli.py`, ...). The parts stand on floors, bottom first:

  0  __init__, types, errors     import nothing from rftkit (__init__ runs on every import)
  1  registry                    named parts and their knobs (errors: ConfigError, did-you-mean)
  2  model, tasks, algos         the leaves: the policy and its log-probs, tasks and
                                 verifiers, the algorithm algebra
  3  rollout, data, rewards      generators (model), problem pools and samplers (tasks, algos),
                                 the reward library (tasks, algos)
  4  envs                        environments, tools and the multi-turn rollout loop (generates
                                 through rollout, runs tools in rewards' pools and sandbox)
  5  eval                        evaluating a policy: generates (rollout, envs), verifies (tasks)
  6  report                      metrics logs, sinks, HTML reports (reads eval's records)
  7  dist                        scale-out: Ray rollout/reward workers, the learner group
                                 (torch.distributed), async rollouts; train hands it its
                                 update and rollout functions
  8  plugins, recipe_base,      reading user files: Python imports; recipe YAML, `base:` chains,
     config_moved, config_parts config keys that moved (the error showing their new spelling);
                                 config sections outside the spine (scaling, episodes)
  9  config                      the typed config tree (model sizes, recipe files)
 10  train                       builders (config -> parts), the step, the update, the loop
 11  cli                         the command line
 12  __main__                    `python -m rftkit`

A module imports its own part and parts on lower floors only: never a higher floor, never
another part of its own floor. Module-level and function-local imports both count (`ast.walk`
sees both), relative imports are resolved, and every part must be placed on a floor. Leaves
also stay off the distributed runtime (ray, torch.distributed). docs/architecture.md shows
the same floors.
"""

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).parents[1] / "rftkit"
FLOORS = (
    ("__init__", "types", "errors"),
    ("registry",),
    ("model", "tasks", "algos"),
    ("rollout", "data", "rewards"),
    ("envs",),
    ("eval",),
    ("report",),
    ("dist",),
    ("plugins", "recipe_base", "config_moved", "config_parts"),
    ("config",),
    ("train",),
    ("cli",),
    ("__main__",),
)
FLOOR = {part: i for i, parts in enumerate(FLOORS) for part in parts}
LEAVES = FLOORS[2]
FORBIDDEN_FOR_LEAVES = ("ray", "torch.distributed")


def _part(path: Path) -> str:
    rel = path.relative_to(PKG)
    return rel.parts[0] if len(rel.parts) > 1 else rel.stem


def _imports(path: Path) -> list[str]:
    """Absolute names of every module `path` imports (relative ones resolved; `from rftkit
    import x` gives rftkit.x)."""
    package = list(path.relative_to(PKG.parent).parts[:-1])  # e.g. ["rftkit", "train"]
    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # `from . import x` in rftkit/train/a.py is rftkit.train.x
                up = package[:len(package) - node.level + 1]
                base = ".".join(up + ([base] if base else []))
            names += [f"{base}.{a.name}" for a in node.names] if base == "rftkit" else [base]
    return names


def _target_part(name: str) -> str | None:
    """The rftkit part a module name belongs to, None outside rftkit."""
    parts = name.split(".")
    if parts[0] != "rftkit":
        return None
    if len(parts) == 1 or not ((PKG / parts[1]).is_dir() or (PKG / f"{parts[1]}.py").is_file()):
        return "__init__"  # `import rftkit`, or a name defined in rftkit/__init__.py
    return parts[1]


def test_every_part_stands_on_one_floor():
    parts = {_part(f) for f in PKG.rglob("*.py")}
    assert sum(len(p) for p in FLOORS) == len(FLOOR), "a part is listed on two floors"
    assert not parts - FLOOR.keys(), f"place these parts on a floor in FLOORS: {sorted(parts - FLOOR.keys())}"
    assert not FLOOR.keys() - parts, f"FLOORS lists parts that do not exist: {sorted(FLOOR.keys() - parts)}"


def test_no_part_imports_its_own_floor_or_above():
    bad = []
    for f in sorted(PKG.rglob("*.py")):
        src = _part(f)
        for name in _imports(f):
            dst = _target_part(name)
            if dst is None or dst == src or dst not in FLOOR or src not in FLOOR:
                continue  # outside rftkit, own part, or unplaced (the test above names it)
            if FLOOR[dst] >= FLOOR[src]:
                bad.append(f"{f.relative_to(PKG)} (floor {FLOOR[src]}, {src}) imports {name} "
                           f"(floor {FLOOR[dst]}, {dst})")
    assert not bad, "\n".join(bad)


def test_leaves_stay_off_the_distributed_runtime():
    bad = [f"{f.relative_to(PKG)} imports {name}" for leaf in LEAVES for f in (PKG / leaf).rglob("*.py")
           for name in _imports(f) if name.startswith(FORBIDDEN_FOR_LEAVES)]
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("folder", [PKG, PKG.parent / "experiments" / "findings"], ids=["rftkit", "findings"])
def test_files_and_functions_stay_small(folder):
    too_long = []
    for f in folder.rglob("*.py"):
        src = f.read_text()
        if len(src.splitlines()) > 400:
            too_long.append(f"{f.relative_to(folder)}: {len(src.splitlines())} lines (max 400)")
        for node in ast.walk(ast.parse(src)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > 60:
                    too_long.append(f"{f.relative_to(folder)}:{node.lineno} {node.name}: {n} lines (max 60)")
    assert not too_long, "\n".join(too_long)
