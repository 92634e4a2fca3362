"""Progress (rich): a bar per stage with the numbers a user watches, a bar per evaluated
split; plain lines when the output is not a terminal; nothing when off."""

from __future__ import annotations

from collections.abc import Callable

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

console = Console(stderr=True)


class StageProgress:
    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled and console.is_terminal
        self.plain = not self.enabled and enabled
        self._progress: Progress | None = None
        self._task = None

    def start(self, stage: str, total: int, done: int) -> None:
        self.stage, self.total = stage, total
        if self.enabled:
            self._progress = Progress(
                TextColumn("[bold]{task.fields[stage]}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TextColumn("eta"),
                TimeRemainingColumn(), console=console, transient=False)
            self._progress.start()
            self._task = self._progress.add_task("", total=total, completed=done, stage=stage, info="")

    def advance(self, step: int, metrics: dict) -> None:
        info = _info(metrics)
        if self._progress is not None:
            self._progress.update(self._task, completed=step, info=info)
        elif self.plain and (step == self.total or step % max(1, self.total // 10) == 0):
            console.print(f"[{self.stage}] step {step}/{self.total} {info}")

    def stop(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None


class EvalProgress:
    """Evaluation progress, as a context manager: `split(label)` is the `progress` callback
    of `rftkit.eval.evaluate`. On a terminal each split gets a (transient) bar of its current
    phase; the spinner shows life during a phase that reports only its start and end (the one
    generate call of "sampling"). Otherwise one line as each split's sampling starts."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled and console.is_terminal
        self.plain = enabled and not self.enabled
        self._progress: Progress | None = None

    def __enter__(self) -> EvalProgress:
        if self.enabled:
            self._progress = Progress(
                SpinnerColumn(), TextColumn("[bold]eval {task.fields[label]}"), TextColumn("{task.fields[phase]:<8}"),
                BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console, transient=True)
            self._progress.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    def split(self, label: str) -> Callable[[str, int, int], None]:
        task = None

        def tick(phase: str, done: int, total: int) -> None:
            nonlocal task
            if self._progress is not None:
                if task is None:
                    task = self._progress.add_task("", total=total, label=label, phase=phase)
                self._progress.update(task, completed=done, total=total, phase=phase)
            elif self.plain and phase == "sampling" and done == 0:
                console.print(f"eval {label}: sampling {total} completions", highlight=False)

        return tick


def _info(m: dict) -> str:
    parts = []
    if "reward/mean" in m:
        parts.append(f"reward {m['reward/mean']:.3f}")
    if "reward/acc" in m:
        parts.append(f"acc {m['reward/acc']:.3f}")
    for key in ("loss/sft", "loss/policy"):
        if key in m:
            parts.append(f"{key.split('/')[1]} {m[key]:.3f}")
    return " ".join(parts)
