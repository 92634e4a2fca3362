"""Bad data: a UTF-8 BOM file loads; invalid UTF-8 and duplicate JSON keys
are row errors naming the file, the line and the key (or counted skips with on_error: skip);
a prompt longer than the model's context minus the generation budget is rejected or skipped
at load time, measured with the run's tokenizer; skipped rows reach the console at the start
of the run and the HTML report."""

import gzip
import json

import pytest
from typer.testing import CliRunner

from rftkit.cli import app
from rftkit.config import validate
from rftkit.data.datasets import load_problems
from rftkit.errors import RftkitError
from rftkit.model.tokenizer import CharTokenizer
from rftkit.report.rundata import load_run
from rftkit.report.summary import write_report
from rftkit.tasks.dataset_task import DatasetError
from rftkit.train import build
from rftkit.train.loop import train
from rftkit.types import Problem

ROWS = [{"prompt": "1+1", "answer": "2"}, {"prompt": "2+2", "answer": "4"}]
BOM = b"\xef\xbb\xbf"


def _bytes(fmt: str, rows: list[dict]) -> bytes:
    if fmt.startswith("jsonl"):
        return "".join(json.dumps(r) + "\n" for r in rows).encode()
    if fmt == "json":
        return json.dumps(rows).encode()
    sep = "\t" if fmt == "tsv" else ","
    return ("".join(sep.join(map(str, r.values())) + "\n" for r in [dict(zip(rows[0], rows[0])), *rows])).encode()


@pytest.mark.parametrize("fmt", ["jsonl", "json", "csv", "tsv", "jsonl.gz"])
def test_utf8_bom_files_load(tmp_path, fmt):
    path = tmp_path / f"data.{fmt}"
    data = BOM + _bytes(fmt, ROWS)
    path.write_bytes(gzip.compress(data) if fmt.endswith(".gz") else data)
    problems, report = load_problems(str(path))
    assert [(p.prompt, p.answer) for p in problems] == [("1+1", "2"), ("2+2", "4")]
    assert report["skipped_total"] == 0


# the second row holds a Latin-1 byte (0xe9, "é" in Latin-1): not UTF-8
BAD_UTF8 = {
    "jsonl": (b'{"prompt": "1+1", "answer": "2"}\n{"prompt": "caf\xe9", "answer": "3"}\n'
              b'{"prompt": "2+2", "answer": "4"}\n', r"row 2 \(line 2\)"),
    "csv": (b"prompt,answer\n1+1,2\ncaf\xe9,3\n2+2,4\n", r"row 2 \(line 3\)"),
    "json": (b'[{"prompt": "1+1", "answer": "2"},\n{"prompt": "caf\xe9", "answer": "3"},\n'
             b'{"prompt": "2+2", "answer": "4"}]', r"row 2"),
}


@pytest.mark.parametrize("fmt", list(BAD_UTF8))
def test_invalid_utf8_is_a_one_paragraph_row_error_or_a_counted_skip(tmp_path, fmt):
    data, where = BAD_UTF8[fmt]
    path = tmp_path / f"data.{fmt}"
    path.write_bytes(data)
    with pytest.raises(DatasetError, match=where + r": field 'row': invalid UTF-8 \(byte 0xe9") as e:
        load_problems(str(path))
    msg = str(e.value)
    assert isinstance(e.value, RftkitError) and str(path) in msg and "\n" not in msg
    problems, report = load_problems(str(path), on_error="skip")
    assert [p.prompt for p in problems] == ["1+1", "2+2"]
    assert report["skipped_total"] == 1 and "invalid UTF-8" in report["first_errors"][0]


def test_invalid_utf8_in_a_multiline_csv_field_is_that_rows_error(tmp_path):
    path = tmp_path / "data.csv"
    path.write_bytes(b'prompt,answer\n"two\nlines \xff",1\n2+2,4\n')
    problems, report = load_problems(str(path), on_error="skip")
    assert [p.prompt for p in problems] == ["2+2"]
    assert "row 1 (line 2): field 'row': invalid UTF-8 (byte 0xff" in report["first_errors"][0]


@pytest.mark.parametrize("fmt", ["jsonl", "json"])
def test_duplicate_json_keys_name_the_row_and_the_key(tmp_path, fmt):
    path = tmp_path / f"data.{fmt}"
    second = '{"prompt": "2+2", "answer": "4", "meta": {"a": 1}, "answer": "5"}'
    first = json.dumps(ROWS[0])
    path.write_text(f"{first}\n{second}\n" if fmt == "jsonl" else f"[{first},\n{second}]")
    where = r"row 2 \(line 2\)" if fmt == "jsonl" else r"row 2"
    with pytest.raises(DatasetError, match=where + r": field 'row': duplicate key 'answer'"):
        load_problems(str(path))
    problems, report = load_problems(str(path), on_error="skip")
    assert [p.prompt for p in problems] == ["1+1"] and report["skipped_total"] == 1


def test_nested_duplicate_keys_are_found_too(tmp_path):
    path = tmp_path / "data.jsonl"
    path.write_text('{"prompt": "1+1", "answer": "2", "info": {"k": 1, "k": 2}}\n' + json.dumps(ROWS[1]) + "\n")
    with pytest.raises(DatasetError, match=r"row 1 \(line 1\): field 'row': duplicate key 'k'"):
        load_problems(str(path))


def test_prompt_longer_than_the_budget_is_rejected_or_skipped_naming_the_row(tmp_path):
    path = tmp_path / "data.jsonl"
    path.write_bytes(_bytes("jsonl", [ROWS[0], {"prompt": "9" * 50, "answer": "9"}, ROWS[1]]))
    # without a tokenizer a prompt counts as the built-in model sees it: bos + one id per character
    with pytest.raises(DatasetError, match=r"data\.jsonl: row 2 \(line 2\): field 'prompt': 51 tokens; at most 20"):
        load_problems(str(path), max_prompt_tokens=20)
    problems, report = load_problems(str(path), max_prompt_tokens=20, on_error="skip")
    assert [p.prompt for p in problems] == ["1+1", "2+2"] and report["skipped_total"] == 1
    assert "51 tokens" in report["first_errors"][0]
    problems, _ = load_problems(str(path), max_prompt_tokens=20, count_tokens=lambda p: 3)  # the given counter
    assert len(problems) == 3
    with pytest.raises(DatasetError, match="count_tokens"):
        load_problems(str(path), count_tokens="chars")


def _dataset_tree(tmp_path, path, on_error: str) -> dict:
    return {
        "seed": 0, "name": f"bad_{on_error}", "out_dir": str(tmp_path / "runs"), "progress": False,
        "model": {"size": "nano", "max_seq_len": 64, "threads": 1},
        "data": {"tasks": [{"name": "dataset", "label": "rows",
                            "params": {"path": str(path), "test_fraction": 0.4, "on_error": on_error}}],
                 "train_size": 16, "test_size": 3, "ood_size": 0},
        "rollout": {"group_size": 2, "max_new_tokens": 6},
        "stages": [{"name": "rl", "steps": 2, "batch_size": 2, "objectives": [{"name": "policy"}]}],
        "eval": {"n_samples": 1, "ks": [1], "every": 0, "splits": ["test"], "max_new_tokens": 8},
        "checkpoint": {"every": 100, "keep": 1},
    }


def test_builder_passes_the_context_budget_and_the_runs_tokenizer(tmp_path):
    cfg = validate(_dataset_tree(tmp_path, tmp_path / "x.jsonl", "skip"), "t")
    tok = CharTokenizer()
    (spec,) = build.task_specs(cfg, context=64, tok=tok)
    assert spec.params["max_prompt_tokens"] == 64 - 8  # the longest generation: eval's 8 > rollout's 6
    p = Problem(task="dataset", prompt="12+3", answer="15", verifier="exact")
    assert spec.params["count_tokens"](p) == 5
    cfg.data.tasks[0].params["max_prompt_tokens"] = 10  # a recipe's own lower cap is kept
    assert build.task_specs(cfg, context=64, tok=tok)[0].params["max_prompt_tokens"] == 10
    params = build.task_specs(cfg)[0].params
    assert "max_prompt_tokens" in params and "count_tokens" not in params


def test_context_length_of_a_hugging_face_model(tmp_path):
    pytest.importorskip("transformers")
    from rftkit.model.hf import load_hf_policy
    from rftkit.model.hf_tokenizer import load_hf_tokenizer

    from hf_fixtures import tiny_hf_model

    folder = tiny_hf_model(tmp_path / "qwen", "qwen2", max_pos=48)
    model, tok = load_hf_policy(str(folder), device="cpu"), load_hf_tokenizer(folder)
    assert build.context_length(model, tok) == 48
    model.cfg = type(model.cfg)(**{**model.cfg.__dict__, "max_seq_len": 1 << 20})  # config without max positions
    tok.hf.model_max_length = 40
    assert build.context_length(model, tok) == 40
    cfg = validate(_dataset_tree(tmp_path, tmp_path / "x.jsonl", "skip"), "t")
    (spec,) = build.task_specs(cfg, context=48, tok=tok)
    p = Problem(task="dataset", prompt="1+1", answer="2", verifier="exact")
    assert spec.params["count_tokens"](p) == len(tok.prompt_ids("1+1")) > 4  # the chat template counts


def test_a_run_skips_long_prompts_before_training_prints_and_reports_them(tmp_path, capsys):
    rows = [{"prompt": f"{a}+{b}=", "answer": str(a + b)} for a in range(5) for b in range(4)]
    rows.insert(7, {"prompt": "1" * 80, "answer": "1"})  # 81 tokens with bos > 64 - 8
    path = tmp_path / "rows.jsonl"
    path.write_bytes(_bytes("jsonl", rows))
    with pytest.raises(RftkitError, match=r"rows\.jsonl: row 8 \(line 8\): field 'prompt': 81 tokens; at most 56"):
        train(validate(_dataset_tree(tmp_path, path, "raise"), "t"))
    run = train(validate(_dataset_tree(tmp_path, path, "skip"), "t"))
    err = capsys.readouterr().err
    assert "skipped 1 row" in err and "row 8 (line 8): field 'prompt': 81 tokens" in err
    reason = f"{path}: row 8 (line 8): field 'prompt': 81 tokens; at most 56 fit (the model's context minus the " \
             "generation budget)"
    assert load_run(run.dir).skipped == {"rows": {"skipped": 1, "reasons": [reason]}}
    html = write_report(run.dir).read_text()
    assert "Skipped rows" in html and "row 8 (line 8)" in html
    assert "Skipped rows" in (run.dir / "report.md").read_text()
    # `rftkit eval` rebuilds the run's test rows: the long one (third in the test split) stays out
    result = CliRunner().invoke(app, ["eval", str(run.dir)])
    assert result.exit_code == 0, result.output


def test_an_empty_test_split_fails_before_training(tmp_path):
    """A small file whose hash split leaves no test rows: a clear error before any stage runs,
    not `max() arg is an empty sequence` at the first evaluation."""
    rows = [{"prompt": f"{a}+1=", "answer": str(a + 1)} for a in range(3)]
    path = tmp_path / "rows.jsonl"
    path.write_bytes(_bytes("jsonl", rows))
    tree = _dataset_tree(tmp_path, path, "raise")
    tree["data"]["tasks"][0]["params"]["test_fraction"] = 0.01
    with pytest.raises(RftkitError, match="the test split has no problems after loading"):
        train(validate(tree, "t"))
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").rglob("models"))
