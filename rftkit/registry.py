"""A small typed registry: every swappable part of rftkit is looked up by name here.

Parts register under a name (`@ADVANTAGES.register("grpo")`); recipes name them in YAML.
Duplicates are an error, unknown names list the valid ones (verl's registries, minus
`__subclasses__()` discovery). `bind` turns a registered function plus its YAML `params`
into a `functools.partial`, validating the keyword-only knobs against the function's own
signature, so a part's knobs live next to its math and never in a global config.
"""

from __future__ import annotations

import difflib
import functools
import inspect
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class RegistryError(KeyError):
    """An unknown or duplicate name; the message says what is valid."""

    def __str__(self) -> str:  # KeyError quotes its message; we want it plain
        return str(self.args[0])


def closest(name: str, options: list[str]) -> str:
    """' Did you mean X?' for the closest option, or '' when none is close."""
    match = difflib.get_close_matches(name, options, n=1, cutoff=0.5)
    return f" Did you mean '{match[0]}'?" if match else ""


class Registry(Generic[T]):
    """Name -> part. `kind` names the registry in error messages ("advantage estimator")."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def deco(obj: T) -> T:
            if name in self._items:
                raise RegistryError(f"{self.kind} '{name}' is already registered")
            self._items[name] = obj
            return obj

        return deco

    def get(self, name: str) -> T:
        if name not in self._items:
            valid = ", ".join(sorted(self._items)) or "(none)"
            raise RegistryError(
                f"unknown {self.kind} '{name}'.{closest(name, list(self._items))} Valid: {valid}"
            )
        return self._items[name]

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def bind(self, name: str, params: Mapping[str, Any] | None = None, where: str = "") -> Any:
        """`functools.partial(get(name), **params)` after checking params name real knobs.

        Only keyword-only parameters of the function (or class constructor) are knobs;
        positional ones are the data the caller passes. `where` is the config path used in
        error messages (e.g. "stages[1].objectives[0].params").
        """
        obj = self.get(name)
        params = dict(params or {})
        knobs = knob_defaults(obj)
        for key in params:
            if key not in knobs:
                valid = ", ".join(sorted(knobs)) or "(none)"
                raise RegistryError(
                    f"{where or self.kind} '{name}': unknown parameter '{key}'."
                    f"{closest(key, list(knobs))} Valid parameters: {valid}"
                )
        return functools.partial(obj, **params) if params else obj


def knob_defaults(obj: Any) -> dict[str, Any]:
    """Keyword-only parameters of a function or class and their defaults (or `inspect._empty`)."""
    target = obj.__init__ if inspect.isclass(obj) else obj
    sig = inspect.signature(target)
    return {
        p.name: p.default for p in sig.parameters.values() if p.kind is inspect.Parameter.KEYWORD_ONLY
    }
