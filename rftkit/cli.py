"""The `rftkit` command: run recipes, list parts, evaluate checkpoints, rebuild reports.

Expected errors (an invalid config, a missing file, an unknown name, a full disk, a missing
optional extra) print one paragraph and exit with code 2; `rftkit --debug ...` (or `--debug`
after a command) shows the traceback instead. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import contextlib
import inspect
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Optional

import typer
import yaml
from rich.console import Console
from rich.markup import escape

from rftkit.config import Config, load_config, validate
from rftkit.errors import ConfigError, RftkitError

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__.splitlines()[0])
out = Console()
err = Console(stderr=True)
RECIPES_DIR = Path(__file__).parent / "recipes"


EXPECTED = (RftkitError, OSError, ImportError, yaml.YAMLError)
"""Errors a user can fix: bad input (RftkitError), the file system (permissions, a full disk,
a path under a file), an optional extra not installed (its ImportError says what to install),
a run's config.yaml broken by hand."""
_global = {"debug": False}  # set by the app callback, which typer runs before each command


@app.callback()
def _options(debug: bool = typer.Option(False, "--debug", help="Show tracebacks instead of one-paragraph errors")
             ) -> None:
    _global["debug"] = debug


@contextlib.contextmanager
def _expected_errors(debug: bool, interrupted: str = "interrupted") -> Iterator[None]:
    """Turn an expected error into one paragraph and exit code 2 (a traceback with --debug)."""
    try:
        yield
    except EXPECTED as e:
        if debug or _global["debug"]:
            raise
        what = str(e) if isinstance(e, RftkitError) else f"{type(e).__name__}: {e}"
        err.print(f"[bold red]error:[/] {escape(what)}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    except KeyboardInterrupt:
        if debug or _global["debug"]:
            raise
        err.print(escape(interrupted), highlight=False, soft_wrap=True)
        raise typer.Exit(130) from None


def recipe_path(recipe: str) -> Path:
    """A YAML path or a shipped recipe's name -> its file (as `base:` names resolve)."""
    from rftkit.recipe_base import find_recipe

    return find_recipe(recipe)


def prepare(cfg: Config, base: Path | None) -> Config:
    """Import user files and check every registered name, before anything runs."""
    from rftkit.plugins import import_file
    from rftkit.train.build import check_names

    for f in cfg.imports:
        import_file(f, base)
    check_names(cfg)
    return cfg


def _fresh_name(cfg: Config) -> Config:
    """Never overwrite a run: runs/default exists -> runs/default-1, -2, ..."""
    base, i = cfg.name, 0
    while cfg.run_dir.exists() and any(cfg.run_dir.iterdir()):
        i += 1
        cfg.name = f"{base}-{i}"
    return cfg


@app.command()
def run(
    recipe: Annotated[str, typer.Argument(help="Shipped recipe name or YAML path")] = "default",
    overrides: Annotated[Optional[list[str]], typer.Argument(help="key.sub=value ...")] = None,
    resume: Annotated[Optional[Path], typer.Option(help="Continue the run in this directory")] = None,
    debug: bool = typer.Option(False, help="Show tracebacks (as `rftkit --debug`)"),
) -> None:
    """Train a recipe (default: base -> SFT -> GRPO on the built-in model) and evaluate it."""
    from rftkit.report.summary import summary_table, write_report
    from rftkit.train.build import check_bounds
    from rftkit.train.loop import train

    if "=" in recipe:  # `rftkit run a.b=c` means the default recipe with an override
        recipe, overrides = "default", [recipe, *(overrides or [])]
    with _expected_errors(debug, "interrupted; `rftkit run --resume RUN_DIR` continues from the last checkpoint"):
        if resume is not None:
            cfg_file = resume / "config.yaml"
            if not cfg_file.is_file():
                raise ConfigError(f"--resume '{resume}': no config.yaml there; is it a run directory?")
            cfg = validate(yaml.safe_load(cfg_file.read_text()), str(cfg_file))
            cfg.out_dir, cfg.name = str(resume.parent), resume.name
            prepare(cfg, resume)
        else:
            path = recipe_path(recipe)
            cfg = _fresh_name(prepare(load_config(path, overrides or []), path.parent))
        check_bounds(cfg)  # also done by train; here so that an error comes before "run dir:"
        err.print(f"run dir: {cfg.run_dir}")
        r = train(cfg, resume=resume is not None)
        out.print(summary_table(r.dir))
        out.print(f"report: {write_report(r.dir)}")


@app.command()
def recipes() -> None:
    """List the shipped recipes."""
    for p in sorted(RECIPES_DIR.glob("*.yaml")):
        first = p.read_text().splitlines()[0].lstrip("# ").strip() if p.read_text() else ""
        out.print(f"[bold]{p.stem:<16}[/] {first}")


@app.command()
def tasks() -> None:
    """List the built-in tasks, their difficulty knob and their parameters (with defaults)."""
    from rftkit.registry import knob_defaults
    from rftkit.tasks.base import TASKS

    for name in TASKS.names():
        cls = TASKS.get(name)
        knobs = ", ".join(f"{k} (required)" if v is inspect.Parameter.empty else f"{k}={v!r}"
                          for k, v in knob_defaults(cls).items())
        out.print(f"[bold]{name}[/]: difficulty = {cls.difficulty_doc} "
                  f"(default {cls.default_difficulty}, ood {cls.default_ood}); params: {knobs or '-'}")


@app.command("eval")
def eval_cmd(
    path: Annotated[Path, typer.Argument(help="Run dir, checkpoint or models/<stage> folder")],
    overrides: Annotated[Optional[list[str]], typer.Argument(help="key.sub=value (eval.*, data.*)")] = None,
    recipe: Annotated[Optional[str], typer.Option(help="Recipe for the test sets if PATH is outside a run")] = None,
    debug: bool = typer.Option(False, help="Show tracebacks (as `rftkit --debug`)"),
) -> None:
    """Evaluate a checkpoint: greedy accuracy and pass@k on the test and OOD splits."""
    from rftkit.train.evaluate_cli import evaluate_path

    with _expected_errors(debug):
        table = evaluate_path(path, overrides or [], recipe_path(recipe) if recipe else None, prepare)
        out.print(table)


@app.command()
def report(
    run_dir: Path,
    screenshot: Annotated[Optional[Path], typer.Option(help="Also save a PNG of report.html (needs Chromium)")] = None,
    debug: bool = typer.Option(False, help="Show tracebacks (as `rftkit --debug`)"),
) -> None:
    """Rebuild a run's report (report.html, report.md) from its directory."""
    from rftkit.report.summary import summary_table, write_report

    with _expected_errors(debug):
        if not (run_dir / "config.yaml").is_file():
            raise ConfigError(f"'{run_dir}' is not a run directory (no config.yaml)")
        out.print(summary_table(run_dir))
        html = write_report(run_dir)
        out.print(f"report: {html}")
        if screenshot is not None:
            from rftkit.report.browser import screenshot as shoot

            out.print(f"screenshot: {shoot(html, screenshot)}")


@app.command()
def compare(
    runs: Annotated[list[Path], typer.Argument(help="Run directories to compare")],
    out_dir: Annotated[Path, typer.Option("--out", help="Folder for compare.html / .md / .json")] = Path("compare"),
    selector: Annotated[Optional[list[str]], typer.Option(
        help="Test-time-scaling selectors to plot against samples (verifier, logprob, rm, prm, maj, "
             "wmaj/rm, wmaj/logprob); repeat for several; default: every one the runs have")] = None,
    debug: bool = typer.Option(False, help="Show tracebacks (as `rftkit --debug`)"),
) -> None:
    """Compare runs: a results table, pass@k curves overlaid, learning curves vs steps and wall time,
    and accuracy vs samples per test-time-scaling selector (runs evaluated with eval.scaling)."""
    from rftkit.report.compare import compare_runs

    with _expected_errors(debug):
        for r in runs:
            if not (r / "config.yaml").is_file():
                raise ConfigError(f"'{r}' is not a run directory (no config.yaml)")
        out.print(f"comparison: {compare_runs(runs, out_dir, selectors=selector or None)}")


@app.command()
def export(
    path: Annotated[Path, typer.Argument(help="Run dir (its last stage), models/<stage> or a checkpoint")],
    out_dir: Annotated[Path, typer.Option("--out", help="Folder for the Hugging Face model")],
    stage: Annotated[Optional[str], typer.Option(help="Stage to export from a run dir (default: the last)")] = None,
    debug: bool = typer.Option(False, help="Show tracebacks (as `rftkit --debug`)"),
) -> None:
    """Write a standard Hugging Face model folder (LoRA merged; the built-in model as Llama)."""
    with _expected_errors(debug):
        from rftkit.model.export import export_run

        out.print(f"exported: {export_run(path, out_dir, stage=stage)}")


def main() -> None:  # pragma: no cover - console entry
    app(sys.argv[1:])
