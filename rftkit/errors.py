"""User-facing errors: the CLI prints their message as one paragraph, without a traceback.

Config errors are worded here, in one form for every check (pydantic's field constraints,
the config's validators, the bounds checked where parts are built):

    invalid config in <file>:
      'stages.rl.minibatches': should be at most 8: ... (got 9)

naming the dotted key as a recipe or an override writes it (list elements by their `name`),
what was expected, and the value given.
"""

from __future__ import annotations

import difflib
from typing import Any

from pydantic import BaseModel, ValidationError


def closest(name: str, options: list[str]) -> str:
    """' Did you mean X?' for the closest option, or '' when none is close."""
    match = difflib.get_close_matches(name, options, n=1, cutoff=0.5)
    return f" Did you mean '{match[0]}'?" if match else ""


class RftkitError(Exception):
    """Base of every error caused by user input (config, files, names)."""


class ConfigError(RftkitError):
    """A recipe or override is invalid; the message names the key and what was expected."""


class CheckpointError(RftkitError):
    """A run or checkpoint directory is missing or unreadable."""


class TrainingAborted(RftkitError):
    """Training stopped on purpose (e.g. too many non-finite steps); the last checkpoint is intact."""


class Bound(ValueError):
    """A bound between fields, raised by a config validator: `key` (dotted, below the model
    being validated) holds `value`; the message says what was expected."""

    def __init__(self, key: str, value: Any, expected: str) -> None:
        super().__init__(expected)
        self.key, self.value = key, value


def bound_error(where: str, value: Any, expected: str) -> ConfigError:
    """A bound checked where parts are built (`train.build`), worded like pydantic's."""
    return ConfigError(f"invalid config:\n{_bound_line(where, value, expected)}")


def format_validation_error(err: ValidationError, source: str, tree: Any, root: type[BaseModel]) -> str:
    """One line per error of validating `tree` (the raw recipe) against the `root` model."""
    lines = [f"invalid config in {source}:"]
    for e in err.errors():
        loc, value, msg = list(e["loc"]), e.get("input"), e["msg"].removeprefix("Value error, ")
        bound = (e.get("ctx") or {}).get("error")
        if isinstance(bound, Bound):  # a model validator's bound: point at the field it names
            loc, value, msg = loc + bound.key.split("."), bound.value, str(bound)
        where = ".".join(_named_path(tree, loc))
        if e["type"] == "extra_forbidden":
            valid = _valid_keys(root, [str(x) for x in loc[:-1]])
            hint = closest(str(loc[-1]), valid)
            lines.append(f"  unknown key '{where}'.{hint} Valid keys here: {', '.join(valid)}")
        elif e["type"] == "missing":
            lines.append(f"  missing required key '{where}'")
        else:
            lines.append(_bound_line(where, value, msg))
    return "\n".join(lines)


def _bound_line(where: str, value: Any, expected: str) -> str:
    return f"  '{where}': {expected} (got {value!r})"


def _named_path(tree: Any, loc: list) -> list[str]:
    """`loc` with list indices replaced by the element's `name` when it is unique, so an
    error says `stages.rl.steps` as the recipe and overrides do, not `stages.1.steps`."""
    out, node = [], tree
    for key in loc:
        if isinstance(key, int) and isinstance(node, list) and 0 <= key < len(node):
            names = [it.get("name") if isinstance(it, dict) else None for it in node]
            name, node = names[key], node[key]
            unique = isinstance(name, str) and names.count(name) == 1 and not name.lstrip("-").isdigit()
            out.append(name if unique else str(key))
        else:
            out.append(str(key))
            node = node.get(key) if isinstance(node, dict) else None
    return out


def _valid_keys(root: type[BaseModel], loc: list[str]) -> list[str]:
    """Field names of the model found by walking the config classes from `root` along `loc`."""
    model: Any = root
    for key in loc:
        if key.isdigit():
            continue
        field = model.model_fields.get(key)
        if field is None:
            return []
        ann = field.annotation
        args = getattr(ann, "__args__", ())
        candidates = [ann, *args] + [a for x in args for a in getattr(x, "__args__", ())]
        model = next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None)
        if model is None:
            return []
    return sorted(model.model_fields)
