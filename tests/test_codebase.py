"""Structure rules from STYLE.md: import direction (G5/G11) and size budgets (G8)."""

import ast
from pathlib import Path

PKG = Path(__file__).parents[1] / "rftkit"
LEAVES = ("model", "tasks", "algos")
FORBIDDEN_FOR_LEAVES = ("rftkit.config", "rftkit.train", "rftkit.dist", "rftkit.cli", "ray", "torch.distributed")


def _imports(path: Path) -> list[str]:
    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.append(node.module)
    return names


def test_leaves_import_nothing_above_them():
    bad = []
    for leaf in LEAVES:
        for f in (PKG / leaf).rglob("*.py"):
            for name in _imports(f):
                if name.startswith(FORBIDDEN_FOR_LEAVES) or (name.startswith("rftkit.") and
                                                             name.split(".")[1] not in (*LEAVES, "registry", "types", "errors")):
                    bad.append(f"{f.relative_to(PKG)} imports {name}")
    assert not bad, "\n".join(bad)


def test_files_and_functions_stay_small():
    too_long = []
    for f in PKG.rglob("*.py"):
        src = f.read_text()
        if len(src.splitlines()) > 400:
            too_long.append(f"{f.relative_to(PKG)}: {len(src.splitlines())} lines (max 400)")
        for node in ast.walk(ast.parse(src)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > 60:
                    too_long.append(f"{f.relative_to(PKG)}:{node.lineno} {node.name}: {n} lines (max 60)")
    assert not too_long, "\n".join(too_long)
