"""A progress bar per stage with the numbers a user watches (rich), or plain lines when off."""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

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
