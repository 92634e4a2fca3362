"""User reward functions from a file: `load_reward_fn("path/to/rewards.py:fn")`.

The function is called in batches, TRL / OpenRLHF style:

    def fn(prompts: list[str], completions: list[str], answers: list[str]) -> list[float]

`load_reward_fn` imports the file by path (not through sys.path), checks that `fn` exists and is
callable, and returns a `FileRewardFn`: a picklable handle (it pickles as its path and name and
re-imports the file where it is called), so the RewardRunner can run it in a worker process with
a timeout (its declared isolation is "process"). Every error names the file and the function.
"""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import math
import reprlib
import sys
from collections.abc import Mapping, Set
from pathlib import Path

from rftkit.errors import ConfigError


class RewardFnError(RuntimeError):
    """A user reward function failed or returned something other than one float per sample."""


def as_scores(out, n: int, label: str) -> list[float]:
    """A batch reward fn's output as n finite floats, else RewardFnError naming `label`.

    A str, bytes, mapping or set is refused before anything is read from it: "101" would
    otherwise become the scores [1.0, 0.0, 1.0], one per character, and a dict its keys."""
    if isinstance(out, (str, bytes, bytearray, Mapping, Set)):
        raise RewardFnError(f"reward fn {label} returned a {type(out).__name__} ({reprlib.repr(out)}), "
                            f"not a list of {n} floats")
    try:
        vals = [float(x) for x in out]
    except (TypeError, ValueError) as e:
        raise RewardFnError(f"reward fn {label} must return a list of floats, got {type(out).__name__}: {e}") from None
    if len(vals) != n:
        raise RewardFnError(f"reward fn {label} returned {len(vals)} scores for {n} completions")
    if not all(math.isfinite(v) for v in vals):
        raise RewardFnError(f"reward fn {label} returned a non-finite score")
    return vals


def _split(spec: str) -> tuple[Path, str]:
    path, sep, name = spec.rpartition(":")
    if not sep or not path or not name.isidentifier():
        raise ConfigError(f"reward fn '{spec}': expected 'path/to/file.py:function_name'")
    return Path(path), name


def _import(path: Path, name: str):
    file = path.expanduser().resolve()
    if not file.is_file():
        raise ConfigError(f"reward fn '{path}:{name}': file not found ({file})")
    mod_name = "rftkit_reward_" + hashlib.sha1(str(file).encode()).hexdigest()[:12]
    module = sys.modules.get(mod_name)
    if module is None:
        spec = importlib.util.spec_from_file_location(mod_name, file)
        module = importlib.util.module_from_spec(spec)
        try:
            spec.loader.exec_module(module)
        except Exception as e:
            raise ConfigError(f"reward fn '{path}:{name}': importing {file} failed: {type(e).__name__}: {e}") from None
        sys.modules[mod_name] = module
    fn = getattr(module, name, None)
    if fn is None:
        public = sorted(k for k, v in vars(module).items() if callable(v) and not k.startswith("_"))
        raise ConfigError(f"reward fn '{path}:{name}': {file} has no '{name}' "
                          f"(callables: {', '.join(public) or 'none'})")
    if not callable(fn):
        raise ConfigError(f"reward fn '{path}:{name}': '{name}' is a {type(fn).__name__}, not a function")
    return fn


class FileRewardFn:
    """A reward function living in a user file; call it like the function itself."""

    isolation = "process"

    def __init__(self, path: Path, name: str) -> None:
        self.path, self.name = Path(path).expanduser().resolve(), name
        self._fn = None

    @property
    def label(self) -> str:
        return f"{self.path}:{self.name}"

    def __getstate__(self) -> dict:
        return {"path": self.path, "name": self.name}

    def __setstate__(self, state: dict) -> None:
        self.path, self.name, self._fn = state["path"], state["name"], None

    def __call__(self, prompts: list[str], completions: list[str], answers: list[str]) -> list[float]:
        if self._fn is None:
            self._fn = _import(self.path, self.name)
        try:
            out = self._fn(prompts, completions, answers)
        except Exception as e:
            raise RewardFnError(f"reward fn {self.label} raised {type(e).__name__}: {e}") from None
        return as_scores(out, len(completions), self.label)

    def __repr__(self) -> str:
        return f"FileRewardFn({self.label!r})"


def load_reward_fn(spec: str, base: Path | None = None) -> FileRewardFn:
    """'path.py:fn' (relative to `base`, then to the working directory) -> FileRewardFn, checked now."""
    path, name = _split(spec)
    if not path.is_absolute() and base is not None and (base / path).is_file():
        path = base / path
    fn = _import(path, name)
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        params = None
    if params is not None and len(params) < 3 and not any(p.kind is p.VAR_POSITIONAL for p in params.values()):
        raise ConfigError(f"reward fn '{spec}': must accept (prompts, completions, answers), "
                          f"has ({', '.join(params)})")
    return FileRewardFn(path, name)


__all__ = ["load_reward_fn", "FileRewardFn", "RewardFnError", "as_scores"]
