"""A small typed registry: every swappable part of rftkit is looked up by name here.

Parts register under a name with what they need from the step and any marks the loop reads:

    @OBJECTIVES.register("kl", needs={"rollout", "ref"})
    def kl_objective(inp, *, estimator: KLName = "k3", agg: AggName = "token_mean"): ...

Recipes name parts in YAML as `{name, params}`. `bind(name, params)` checks every param is a
keyword-only knob of the part and returns a `Bound` (function, knobs, needs, marks), a small
frozen object the loop calls and reads; nothing opens a `functools.partial`. A knob annotated
`Annotated[str, PartName(REG)]` must name a part of REG, `Annotated[..., PartParams("loss")]`
holds the params of the part named by the knob `loss` (checked against that part's knobs),
`Annotated[float | dict, PartSpec(REG)]` is a number or a `{name, params}` part of REG, and a
`Literal[...]` knob takes one of its values.
So a typo anywhere in a nested spec fails when the config is checked, naming the key and the
closest valid name. Duplicates and unknown names are `RegistryError`s (a `ConfigError`).
"""

from __future__ import annotations

import enum
import inspect
import typing
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from rftkit.errors import ConfigError, closest

T = TypeVar("T")


class Need(enum.StrEnum):
    """What a part needs the step to compute for it (the whole vocabulary; a str, so
    `"ref" in needs` works)."""

    ROLLOUT = "rollout"  # on-policy samples with rewards and advantages
    DEMOS = "demos"  # demonstrations of the step's prompts
    REF = "ref"  # reference-policy log-probs of the rollout tokens
    REF_DEMOS = "ref_demos"  # reference-policy log-probs of the demonstrations
    VALUES = "values"  # critic values at rollout time (and a critic to train)
    TEACHER = "teacher"  # a teacher's log-probs of the rollout tokens
    GREEDY = "greedy"  # the reward of each prompt's greedy completion (ReMax)
    DEMO_DIST = "demo_dist"  # full next-token log-softmax on the demonstrations
    PAIRS = "pairs"  # preference pairs (chosen, rejected) of the step's prompts
    REF_PAIRS = "ref_pairs"  # reference-policy log-probs of the pairs
    SCORES = "scores"  # a scalar-head reward model's scores (and the reward model to train)
    STEP_LABELS = "step_labels"  # Math-Shepherd step labels of the rollout rows (training a PRM)
    PRM = "prm"  # a trained process reward model's step scores of the rollout rows (stage key `prm`)


def needs_set(needs: Iterable[str]) -> frozenset[Need]:
    """Validate a needs vocabulary; an unknown word is an error at registration."""
    try:
        return frozenset(Need(n) for n in needs)
    except ValueError as e:
        raise RegistryError(f"{e}; valid needs: {', '.join(n.value for n in Need)}") from None


class RegistryError(ConfigError, KeyError):
    """An unknown or duplicate name, or an unknown knob; the message says what is valid."""

    def __str__(self) -> str:  # KeyError quotes its message; we want it plain
        return str(self.args[0])


@dataclass(frozen=True)
class PartName:
    """Knob annotation: the value names a part of `registry`."""

    registry: Registry


@dataclass(frozen=True)
class PartParams:
    """Knob annotation: the value is the params of the part named by knob `of`."""

    of: str


@dataclass(frozen=True)
class PartSpec:
    """Knob annotation: a number, or `{name, params}` of a part of `registry`."""

    registry: Registry


@dataclass(frozen=True)
class Entry:
    obj: Any
    needs: frozenset[Need]
    marks: Mapping[str, Any]


@dataclass(frozen=True)
class Bound:
    """A registered part with its knobs: call it with the data; read `needs` and `marks`."""

    name: str
    fn: Callable
    knobs: Mapping[str, Any] = field(default_factory=dict)
    needs: frozenset[Need] = frozenset()
    marks: Mapping[str, Any] = field(default_factory=dict)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.fn(*args, **self.knobs, **kwargs)


class Registry(Generic[T]):
    """Name -> part. `kind` names the registry in error messages ("advantage estimator")."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, Entry] = {}

    def register(self, name: str, *, needs: Iterable[str] = (), **marks: Any) -> Callable[[T], T]:
        """Decorator: register `obj` under `name` with its needs and marks (read by the loop,
        e.g. an estimator's `group_relative`, a loss's `extra_inputs`)."""
        checked = needs_set(needs)

        def deco(obj: T) -> T:
            if name in self._items:
                raise RegistryError(f"{self.kind} '{name}' is already registered")
            self._items[name] = Entry(obj, checked, dict(marks))
            return obj

        return deco

    def entry(self, name: str, where: str = "") -> Entry:
        if name not in self._items:
            valid = ", ".join(sorted(self._items)) or "(none)"
            at = f"{where}: " if where else ""
            raise RegistryError(f"{at}unknown {self.kind} '{name}'.{closest(str(name), list(self._items))} "
                                f"Valid: {valid}")
        return self._items[name]

    def get(self, name: str) -> T:
        return self.entry(name).obj

    def needs(self, name: str) -> frozenset[Need]:
        return self.entry(name).needs

    def mark(self, name: str, key: str, default: Any = None) -> Any:
        return self.entry(name).marks.get(key, default)

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def bind(self, name: str, params: Mapping[str, Any] | None = None, where: str = "") -> Bound:
        """The part `name` with `params` as knobs, after checking that each param is a
        keyword-only knob and that nested part names and params are valid (`check_knobs`).
        `where` is the config path used in error messages ("stages.rl.objectives.0")."""
        entry = self.entry(name, where)
        params = dict(params or {})
        check_knobs(entry.obj, params, f"{where or self.kind} '{name}'")
        return Bound(name, entry.obj, params, entry.needs, entry.marks)


def knob_defaults(obj: Any) -> dict[str, Any]:
    """Keyword-only parameters of a function or class and their defaults (or `inspect._empty`)."""
    target = obj.__init__ if inspect.isclass(obj) else obj
    sig = inspect.signature(target)
    return {p.name: p.default for p in sig.parameters.values() if p.kind is inspect.Parameter.KEYWORD_ONLY}


def _markers(obj: Any) -> dict[str, Any]:
    """Knob name -> its PartName / PartParams / PartSpec annotation, if any."""
    target = obj.__init__ if inspect.isclass(obj) else obj
    try:
        hints = typing.get_type_hints(target, include_extras=True)
    except (NameError, TypeError):  # a user part with unresolvable annotations: no nested checks
        return {}
    out: dict[str, Any] = {}
    for knob, hint in hints.items():
        if typing.get_origin(hint) is typing.Literal:
            out[knob] = typing.get_args(hint)
        for meta in getattr(hint, "__metadata__", ()):
            if isinstance(meta, PartName | PartParams | PartSpec):
                out[knob] = meta
    return out


def check_knobs(obj: Any, params: Mapping[str, Any], where: str) -> None:
    """Every key of `params` is a knob of `obj`, and every annotated knob (given or default)
    names a real part with real params."""
    knobs = knob_defaults(obj)
    for key in params:
        if key not in knobs:
            valid = ", ".join(sorted(knobs)) or "(none)"
            raise RegistryError(f"{where}: unknown parameter '{key}'.{closest(key, list(knobs))} "
                                f"Valid parameters: {valid}")
    values = {**knobs, **params}
    for knob, meta in _markers(obj).items():
        value = values.get(knob, inspect.Parameter.empty)
        if value is inspect.Parameter.empty or value is None:
            continue
        at = f"{where} {knob}"
        if isinstance(meta, tuple):  # a Literal
            if value not in meta:
                raise RegistryError(f"{at}: '{value}' is not one of {', '.join(map(str, meta))}."
                                    f"{closest(str(value), [str(m) for m in meta])}")
        elif isinstance(meta, PartName):
            meta.registry.bind(value, {}, where=at)
        elif isinstance(meta, PartParams):
            if not isinstance(value, Mapping):
                raise RegistryError(f"{at}: expected a mapping of parameters, got {value!r}")
            owner = meta_registry(obj, meta.of)
            if owner is not None:
                owner.bind(values[meta.of], value, where=f"{where} {meta.of}")
        elif isinstance(value, Mapping):
            bind_spec(meta.registry, value, at)
        elif not isinstance(value, int | float):
            raise RegistryError(f"{at}: expected a number or {{name, params}} of a {meta.registry.kind}, got {value!r}")


def meta_registry(obj: Any, knob: str) -> Registry | None:
    meta = _markers(obj).get(knob)
    return meta.registry if isinstance(meta, PartName) else None


def bind_spec(registry: Registry, spec: Mapping[str, Any], where: str) -> Bound:
    """`{name, params}` -> Bound, with a clear error for any other shape."""
    if "name" not in spec or not set(spec) <= {"name", "params"}:
        raise RegistryError(f"{where}: expected {{name, params}} of a {registry.kind}, got {dict(spec)!r}")
    return registry.bind(spec["name"], spec.get("params") or {}, where=where)
