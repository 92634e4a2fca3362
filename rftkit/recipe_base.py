"""Recipes compose: `base: <recipe>` deep-merges a parent recipe under this one.

A recipe may start with `base: default` (a shipped recipe's name) or `base: ../common.yaml` (a
YAML file, relative to the recipe that names it) and then state only what differs. The parent
may have its own `base`; a cycle is an error naming the chain. Merge rules (`merge`):

- mappings merge key by key, the child's value winning;
- lists whose items are all mappings with a distinct `name` (stages, objectives, data.tasks,
  reward components...) merge by name: a child item whose name the parent has deep-merges into
  that item, in the parent's place; new names are appended in the child's order;
  `{name: x, drop: true}` removes the parent's item `x`; `{name: x, replace: true, ...}`
  replaces it whole, in place (nothing of the parent's `x` is kept);
- any other value (a scalar, a list of values, an empty list, a list with a repeated name,
  null) replaces the parent's whole.

Paths inside a parent (`imports`, dataset files) are not rebased: they are read as if written
in the recipe that was run. `rftkit run NAME` and `base: NAME` resolve names the same way
(`find_recipe`). Everything that reads a recipe reads it through `recipe_tree` (a name or a
path) or `load_recipe` (a file).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from rftkit.errors import ConfigError

RECIPES_DIR = Path(__file__).parent / "recipes"
BASE, DROP, REPLACE = "base", "drop", "replace"


def shipped_recipes() -> list[Path]:
    """The shipped recipe files, sorted by name."""
    return sorted(RECIPES_DIR.glob("*.yaml"))


def find_recipe(ref: str | Path, rel_to: Path | None = None, where: str = "") -> Path:
    """The file of recipe `ref`: a YAML path (relative to the folder `rel_to`, else to the
    working directory) when it ends in .yaml/.yml or names an existing file, else the shipped
    recipe of that name. `where` prefixes error messages (e.g. "child.yaml: 'base: x'")."""
    p = Path(ref)
    if rel_to is not None and not p.is_absolute():
        p = rel_to / p
    prefix = f"{where}: " if where else ""
    if p.suffix in (".yaml", ".yml") or p.exists():
        if not p.is_file():
            raise ConfigError(f"{prefix}recipe file '{p}' does not exist; `rftkit recipes` lists the shipped ones")
        return p
    shipped = RECIPES_DIR / f"{ref}.yaml"
    if not shipped.is_file():
        names = ", ".join(q.stem for q in shipped_recipes())
        raise ConfigError(f"{prefix}no recipe '{ref}': not a file, and not a shipped recipe ({names})")
    return shipped


def read_recipe(path: Path, where: str = "") -> dict:
    """One recipe file as a plain dict, `base` left in; errors name the file (and `where`:
    which recipe's `base` led here)."""
    via = f" ({where})" if where else ""
    if not path.is_file():
        raise ConfigError(f"recipe file '{path}'{via} does not exist; `rftkit recipes` lists the shipped ones")
    try:
        tree = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}{via}: not valid YAML: {e}") from None
    if not isinstance(tree, dict):
        raise ConfigError(f"{path}{via}: expected a mapping of config sections at the top level")
    return tree


def recipe_tree(recipe: str | Path) -> dict:
    """The recipe with its bases resolved: a plain dict, ready for `validate` or overrides.
    `recipe` is a shipped name or a YAML path (as `rftkit run` takes it)."""
    return load_recipe(find_recipe(recipe))


def load_recipe(path: Path) -> dict:
    """The recipe file `path` with its bases resolved (`base` removed), as a plain dict."""
    return _resolve(Path(path), ())


def _resolve(path: Path, chain: tuple[Path, ...], where: str = "") -> dict:
    tree = read_recipe(path, where)
    if BASE not in tree:
        return tree
    ref = tree.pop(BASE)
    key = f"{path}: 'base: {ref}'"
    if not isinstance(ref, str) or not ref.strip():
        raise ConfigError(f"{path}: 'base' should be a shipped recipe name or a YAML path relative to "
                          f"this file, got {ref!r}")
    parent = find_recipe(ref, path.parent, key)
    chain = (*chain, path.resolve())
    if parent.resolve() in chain:
        names = " -> ".join(str(p) for p in (*chain, parent.resolve()))
        raise ConfigError(f"{key}: the bases form a cycle: {names}")
    return _merge(_resolve(parent, chain, f"the base of {path}"), tree, "", str(path))  # both read fresh


def merge(parent: Any, child: Any, path: str = "", source: str = "recipe") -> Any:
    """`child` deep-merged over `parent` by the rules of this module's docstring: a new tree,
    sharing nothing with the inputs. `path` (dotted, list items by name) and `source` only word
    errors."""
    return _merge(copy.deepcopy(parent), copy.deepcopy(child), path, source)


def _merge(parent: Any, child: Any, path: str, source: str) -> Any:
    if isinstance(parent, dict) and isinstance(child, dict):
        out = dict(parent)
        for k, v in child.items():
            out[k] = _merge(parent[k], v, _join(path, k), source) if k in parent else v
        return out
    if isinstance(parent, list) and isinstance(child, list) and _by_name(parent) and _by_name(child) and child:
        return _merge_named(parent, child, path, source)
    return child


def _by_name(items: list) -> bool:
    """Whether a list merges by name: every item a mapping with a `name`, no name twice."""
    names = [it.get("name") for it in items if isinstance(it, dict)]
    return len(names) == len(items) and None not in names and len(set(map(str, names))) == len(names)


def _merge_named(parent: list[dict], child: list[dict], path: str, source: str) -> list[dict]:
    """Merge two lists of named mappings: in place by name, new names appended, markers applied."""
    out: list[dict | None] = list(parent)
    index = {str(it["name"]): i for i, it in enumerate(parent)}
    for item in child:
        name, where = str(item["name"]), _join(path, str(item["name"]))
        drop, replace = bool(item.get(DROP, False)), bool(item.get(REPLACE, False))
        if any(not isinstance(item.get(m, False), bool) for m in (DROP, REPLACE)):
            raise ConfigError(f"{source}: '{where}': '{DROP}' and '{REPLACE}' take true or false")
        body = {k: v for k, v in item.items() if k not in (DROP, REPLACE)}
        if drop and (replace or set(body) != {"name"}):
            raise ConfigError(f"{source}: '{where}': an item with '{DROP}: true' removes the base's "
                              f"'{name}' and takes no other key (got {', '.join(sorted(set(item) - {'name'}))})")
        if name not in index:
            if drop or replace:
                marker = DROP if drop else REPLACE
                raise ConfigError(f"{source}: '{where}': '{marker}: true' but the base has no item named "
                                  f"'{name}' in '{path}' (it has: {', '.join(index) or 'none'})")
            index[name] = len(out)
            out.append(body)
        elif drop:
            out[index[name]] = None
        else:
            out[index[name]] = body if replace else _merge(out[index[name]], body, where, source)
    return [it for it in out if it is not None]


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else str(key)
