"""Problem pools: the training pool and the held-out test / OOD sets, built from task specs.

Everything is generated from the run seed, so a run rebuilds the same pools on resume and
`rftkit eval` rebuilds the same test sets. Training prompts that also occur in the test set
are dropped from the pool, so "held-out" means never trained on.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field, replace

import rftkit.data.datasets  # noqa: F401  (registers the dataset readers)
from rftkit.errors import ConfigError
from rftkit.registry import RegistryError
from rftkit.tasks.base import TASKS
from rftkit.types import Problem


@dataclass(frozen=True)
class TaskSpec:
    """Plain arguments for one task of the mixture (built from config.TaskCfg)."""

    name: str
    label: str
    weight: float
    difficulty: tuple[int, int] | None
    ood_difficulty: tuple[int, int] | None
    params: dict


@dataclass
class Pools:
    train: list[Problem]
    test: list[Problem]
    ood: list[Problem]
    notes: dict[str, float] = field(default_factory=dict)
    """Counts to log once (data/<label>/skipped, data/<label>/duplicates)."""
    skipped: dict[str, list[str]] = field(default_factory=dict)
    """label -> why a dataset task skipped rows (on_error: skip; at most 100 kept), for the run's report."""

    def split(self, name: str) -> list[Problem]:
        return {"train": self.train, "test": self.test, "ood": self.ood}[name]


def make_task(spec: TaskSpec, where: str):
    try:
        return TASKS.bind(spec.name, spec.params, where=where)()
    except (RegistryError, TypeError) as e:
        raise ConfigError(f"{where}: {e}") from None


def _draw(task, rng: random.Random, rng_range: tuple[int, int], n: int, exclude: set[str],
          max_tries: int) -> list[Problem]:
    out, seen, tries = [], set(exclude), 0
    while len(out) < n and tries < max_tries:
        tries += 1
        p = task.sample(rng, rng.randint(*rng_range))
        if p.key in seen:
            continue
        seen.add(p.key)
        out.append(p)
    return out


def build_pools(specs: list[TaskSpec], train_size: int, test_size: int, ood_size: int, seed: int) -> Pools:
    """Distinct problems per task: test and OOD first, then the train pool without them.

    A small task space may hold fewer distinct problems than asked; the pool then holds what
    exists (a train pool may repeat prompts only through the sampler, never duplicates here).
    """
    labels = [s.label for s in specs]
    if len(set(labels)) != len(labels):
        raise ConfigError(f"data.tasks: labels must be unique (set `label:` on repeated tasks), got {labels}")
    total_w = sum(s.weight for s in specs)
    pools = Pools([], [], [])
    for i, spec in enumerate(specs):
        where = f"data.tasks[{i}] ({spec.name})"
        task = make_task(spec, where)
        if hasattr(task, "rows"):  # fixed rows (datasets): their own splits, read and validated now
            train, test, oods = _fixed_rows(task, spec, test_size, ood_size, where, pools.notes)
            pools.train += [replace(p, source=spec.label) for p in train]
            pools.test += [replace(p, source=spec.label) for p in test]
            pools.ood += [replace(p, source=spec.label) for p in oods]
            if getattr(task, "errors", None):
                pools.skipped[spec.label] = list(task.errors)
            continue
        lo_hi = spec.difficulty or task.default_difficulty
        ood = spec.ood_difficulty or task.default_ood
        rng = random.Random(f"{seed}/{i}/{spec.name}")
        test = _draw(task, rng, lo_hi, test_size, set(), 50 * test_size + 100)
        oods = _draw(task, rng, ood, ood_size, set(), 50 * ood_size + 100)
        n_train = round(train_size * spec.weight / total_w)
        train = _draw(task, rng, lo_hi, n_train, {p.key for p in test}, 20 * n_train + 100)
        if n_train > 0 and not train:
            raise ConfigError(f"{where}: generated no training problems at difficulty {lo_hi}")
        pools.train += [replace(p, source=spec.label) for p in train]
        pools.test += [replace(p, source=spec.label) for p in test]
        pools.ood += [replace(p, source=spec.label) for p in oods]
    return pools


def _fixed_rows(task, spec: TaskSpec, test_size: int, ood_size: int, where: str, notes: dict):
    """All train rows (test prompts and repeats removed, counted), the first test/ood rows."""
    from rftkit.tasks.dataset_task import DatasetError

    try:
        test, oods, rows = task.rows("test")[:test_size], task.rows("ood")[:ood_size], task.rows("train")
    except DatasetError as e:
        raise ConfigError(f"{where}: {e}") from None
    seen, train = {p.key for p in test}, []
    for p in rows:
        if p.key not in seen:
            seen.add(p.key)
            train.append(p)
    report = task.report() if hasattr(task, "report") else {}
    notes[f"data/{spec.label}/rows"] = float(len(train))
    notes[f"data/{spec.label}/skipped"] = float(report.get("skipped_total", 0))
    if report.get("images"):
        notes[f"data/{spec.label}/images_resized"] = float(report["images"].get("resized", 0))
    notes[f"data/{spec.label}/duplicates"] = float(len(rows) - len(train))
    if not train:
        raise ConfigError(f"{where}: the dataset has no training rows")
    return train, test, oods
