"""Forgetting matrix, HTML report and run comparison on real (tiny) two-stage runs.

`toy_run` is also used by tests/test_report_browser.py: two labelled tasks (add, sub); stage A
trains on "add" only, stage B on "sub" only, and every evaluation covers both.
"""

import base64
import io
import json
import re
import shutil
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from rftkit.cli import app
from rftkit.config import validate
from rftkit.report.forgetting import forgetting_matrix
from rftkit.report.summary import eval_console_table, write_report
from rftkit.train.loop import train


def toy_tree(out_dir: Path, name: str = "toy", seed: int = 0, steps: int = 3) -> dict:
    task = {"name": "arithmetic", "difficulty": [1, 1], "ood_difficulty": [2, 2]}
    return {
        "seed": seed, "name": name, "out_dir": str(out_dir), "progress": False,
        "model": {"size": "nano", "max_seq_len": 64, "threads": 1},
        "data": {"tasks": [{**task, "label": "add", "params": {"op": "add"}},
                           {**task, "label": "sub", "params": {"op": "sub"}}],
                 "train_size": 64, "test_size": 4, "ood_size": 4},
        "rollout": {"group_size": 2, "max_new_tokens": 6},
        "stages": [{"name": "A", "steps": steps, "batch_size": 8, "tasks": ["add"], "objectives": [{"name": "sft"}]},
                   {"name": "B", "steps": steps, "batch_size": 4, "tasks": ["sub"],
                    "objectives": [{"name": "policy"}, {"name": "sft", "weight": 0.5}]}],
        "eval": {"n_samples": 4, "ks": [1, 2, 4], "every": 2},
        "checkpoint": {"every": 100, "keep": 1},
    }


def toy_run(out_dir: Path, name: str = "toy", seed: int = 0) -> Path:
    return train(validate(toy_tree(out_dir, name, seed), name)).dir


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    return toy_run(out, "toy_a", seed=0), toy_run(out, "toy_b", seed=1)


def test_forgetting_matrix_on_a_two_stage_run(runs):
    run = runs[0]
    fm = forgetting_matrix(run)
    assert fm["stages"] == ["A", "B"] and fm["sources"] == ["add", "sub"]
    assert fm["trained"] == {"A": ["add"], "B": ["sub"]}
    for i, stage in enumerate(["A", "B"]):
        res = json.loads((run / "eval" / f"{stage}.json").read_text())["results"]["test"]
        assert fm["matrix"][i] == [res["pass@1/src=add"], res["pass@1/src=sub"]]
    for j, src in enumerate(fm["sources"]):
        assert fm["forgetting"][src] == pytest.approx(fm["matrix"][0][j] - fm["matrix"][1][j])
    # the loop logged per-source results at the mid-stage evaluation too
    recs = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert any("eval/test/pass@1/src=sub" in r for r in recs)


def _fake_run(tmp_path: Path, values: list[dict[str, float]], tasks=("a", "b")) -> Path:
    cfg = {"data": {"tasks": [{"name": "arithmetic", "label": t} for t in tasks]},
           "stages": [{"name": f"s{i}", "steps": 1, "objectives": [{"name": "sft"}], "tasks": [tasks[i % len(tasks)]]}
                      for i in range(len(values))]}
    (tmp_path / "eval").mkdir(parents=True)
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    for i, v in enumerate(values):
        res = {f"pass@1/src={k}": x for k, x in v.items()} if len(tasks) > 1 else {"pass@1": v[tasks[0]]}
        record = {"stage": f"s{i}", "step": i, "results": {"test": res}}
        (tmp_path / "eval" / f"s{i}.json").write_text(json.dumps(record))
    return tmp_path


def test_forgetting_is_best_earlier_minus_final(tmp_path):
    fm = forgetting_matrix(_fake_run(tmp_path / "x", [{"a": 0.8, "b": 0.1}, {"a": 0.6, "b": 0.9},
                                                      {"a": 0.5, "b": 0.7}]))
    assert fm["matrix"] == [[0.8, 0.1], [0.6, 0.9], [0.5, 0.7]]
    assert fm["forgetting"]["a"] == pytest.approx(0.3) and fm["forgetting"]["b"] == pytest.approx(0.2)
    one = forgetting_matrix(_fake_run(tmp_path / "y", [{"a": 0.4}], tasks=("a",)))
    assert one["matrix"] == [[0.4]] and one["forgetting"] == {"a": None}


def _images(html: str) -> list[bytes]:
    return [base64.b64decode(b) for b in re.findall(r'src="data:image/png;base64,([^"]+)"', html)]


def test_report_from_a_saved_run_dir_alone(runs, tmp_path):
    from PIL import Image

    saved = tmp_path / "copied"
    saved.mkdir()
    for rel in ["config.yaml", "metrics.jsonl", "eval"]:  # no models, no checkpoints
        (shutil.copytree if (runs[0] / rel).is_dir() else shutil.copy)(runs[0] / rel, saved / rel)
    out = write_report(saved)
    assert out == saved / "report.html" and (saved / "report.md").is_file()
    html = out.read_text()
    for table_id in ["summary-table", "timeline-table", "forgetting-test", "forgetting-ood", "unsolved-table",
                     "behaviour-table", "breakdown-table"]:
        assert f'id="{table_id}"' in html, table_id
    for text in ["Sample inspector", "Resolved config", "pass@k by k", "objective weights", "time per phase",
                 "after A", "expected"]:
        assert text in html, text
    imgs = _images(html)
    assert len(imgs) >= 10
    assert "maj@4" in html and "distinct-2" in html  # completed from the stored records
    for raw in imgs:
        with Image.open(io.BytesIO(raw)) as im:
            im.load()
            assert im.format == "PNG" and im.width > 100
    assert "http://" not in html and "https://" not in html  # self-contained


def test_report_of_a_run_without_evaluations_yet(runs, tmp_path):
    shutil.copy(runs[0] / "config.yaml", tmp_path / "config.yaml")
    html = write_report(tmp_path).read_text()
    assert "no stage has been evaluated yet" in html and 'id="timeline-table"' in html


def test_report_and_compare_commands(runs, tmp_path):
    cli = CliRunner()
    res = cli.invoke(app, ["report", str(runs[1])])
    assert res.exit_code == 0, res.output
    assert (runs[1] / "report.html").is_file()
    res = cli.invoke(app, ["compare", str(runs[0]), str(runs[1]), "--out", str(tmp_path / "cmp")])
    assert res.exit_code == 0, res.output
    html = (tmp_path / "cmp" / "compare.html").read_text()
    assert 'id="compare-final"' in html and 'id="compare-stages"' in html
    assert "toy_a" in html and "toy_b" in html and "pass@k of the final models" in html
    assert "reward/mean vs wall time" in html and "eval/test/pass@1 vs step" in html
    assert len(_images(html)) >= 6
    numbers = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    assert set(numbers) == {"toy_a", "toy_b"} and numbers["toy_a"]["results"][-1]["stage"] == "B"
    bad = cli.invoke(app, ["compare", str(tmp_path), "--out", str(tmp_path / "c2")])
    assert bad.exit_code == 2 and "not a run directory" in bad.output


def test_console_summary_of_one_evaluation(runs):
    from rich.console import Console

    from rftkit.report.rundata import load_run

    results = load_run(runs[0]).results[-1]["results"]  # completed from eval/B_<split>.jsonl
    console = Console(width=120, record=True)
    console.print(eval_console_table("B", 6, results))
    text = console.export_text()
    for word in ["eval after step 6 (B)", "greedy", "pass@4", "maj@4", "test", "ood", "format"]:
        assert word in text, word
