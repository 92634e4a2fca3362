"""The CLI: expected errors are one paragraph without a traceback,
`--debug` (a global option) shows it; `rftkit tasks` says which knobs are required."""

from pathlib import Path

from typer.testing import CliRunner

from rftkit.cli import app
from rftkit.errors import ConfigError

TINY = str(Path(__file__).parent / "fixtures" / "tiny.yaml")


def invoke(*args: str):
    return CliRunner().invoke(app, list(args))


def test_bad_bound_is_a_message_before_anything_runs(tmp_path):
    r = invoke("run", TINY, f"out_dir={tmp_path}", "checkpoint.every=0")
    assert r.exit_code == 2, r.output
    assert "checkpoint.every" in r.output and "Traceback" not in r.output
    assert not any(tmp_path.iterdir())  # no run dir: nothing trained


def test_error_names_the_stage_as_typed(tmp_path):
    r = invoke("run", TINY, f"out_dir={tmp_path}", "stages.rl.batch_size=0")
    assert r.exit_code == 2 and "stages.rl.batch_size" in r.output, r.output


def test_global_debug_shows_the_traceback(tmp_path):
    r = invoke("--debug", "run", TINY, f"out_dir={tmp_path}", "checkpoint.keep=0")
    assert isinstance(r.exception, ConfigError), r.output
    r = invoke("run", TINY, f"out_dir={tmp_path}", "checkpoint.keep=0", "--debug")  # per command too
    assert isinstance(r.exception, ConfigError), r.output


def test_file_system_errors_are_messages(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    r = invoke("run", TINY, f"out_dir={blocker}", "stages.base.steps=0", "stages.rl.steps=0")
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output and str(blocker) in r.output.replace("\n", "")


def test_markup_in_messages_is_printed_as_is(tmp_path):
    r = invoke("run", TINY, f"out_dir={tmp_path}", 'stages.rl.batch_size="[red]x"')
    assert r.exit_code == 2 and "'[red]x'" in r.output, r.output  # not read as a rich style


def test_tasks_lists_required_knobs_as_required():
    r = invoke("tasks")
    assert r.exit_code == 0, r.output
    assert "inspect._empty" not in r.output
    assert "path (required)" in r.output, r.output
