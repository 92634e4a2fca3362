"""Prompt datasets: every format loads, column mapping and templates, splits, and the promised
error for every malformed-row case (file, row, field), or a counted skip."""

import csv
import json
import random

import pytest

import rftkit.data.datasets  # noqa: F401  (registers the readers)
from rftkit.data.datasets import load_problems
from rftkit.data.pool import TaskSpec, build_pools
from rftkit.tasks.base import TASKS
from rftkit.tasks.dataset_task import DatasetError, DatasetTask

ROWS = [
    {"question": "What is 2+3?", "answer": "5", "solution": "2+3=5 #5", "level": 1, "src": "toy"},
    {"question": "What is 10*4?", "answer": 40, "solution": "10*4=40 #40", "level": 2, "src": "toy"},
    {"question": "Reverse abc.", "answer": "cba", "solution": None, "level": 3, "src": "strings"},
]
COLS = {"prompt": "question", "answer": "answer", "solution": "solution", "difficulty": "level", "source": "src"}


def _write(tmp_path, fmt, rows=ROWS, name=None):
    path = tmp_path / (name or f"data.{fmt}")
    if fmt == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows) + "\n")  # a trailing blank line
    elif fmt == "json":
        path.write_text(json.dumps({"data": rows}))
    elif fmt in ("csv", "tsv"):
        with path.open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(rows[0]), delimiter="," if fmt == "csv" else "\t")
            w.writeheader()
            w.writerows([{k: "" if v is None else v for k, v in r.items()} for r in rows])
    elif fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        rows = [{**r, "answer": str(r["answer"])} for r in rows]  # one Arrow type per column
        pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=2)  # several row groups
    elif fmt == "hf_disk":
        datasets = pytest.importorskip("datasets")
        rows = [{**r, "answer": str(r["answer"])} for r in rows]
        datasets.DatasetDict({"train": datasets.Dataset.from_list(rows),
                              "test": datasets.Dataset.from_list(rows[:1])}).save_to_disk(str(path))
    return str(path)


@pytest.mark.parametrize("fmt", ["jsonl", "json", "csv", "tsv", "parquet", "hf_disk"])
def test_each_format_loads_with_a_column_mapping(tmp_path, fmt):
    if fmt == "parquet":
        pytest.importorskip("pyarrow")
    path = _write(tmp_path, fmt)
    problems, report = load_problems(path, columns=COLS, template="Question: {prompt}\nAnswer:")
    assert report["skipped_total"] == 0
    assert [p.prompt for p in problems] == [f"Question: {r['question']}\nAnswer:" for r in ROWS]
    assert [p.answer for p in problems] == ["5", "40", "cba"]
    assert [p.difficulty for p in problems] == [1, 2, 3]
    assert problems[0].demo == "2+3=5 #5" and problems[0].meta["source"] == "toy"
    assert problems[2].demo is None  # null, or an empty CSV cell: no demonstration for this row
    assert all(p.verifier == "exact" and p.task == "dataset" for p in problems)


def test_datasets_folder_split_suffix(tmp_path):
    path = _write(tmp_path, "hf_disk", name="ds")
    test, _ = load_problems(path + "#test", columns=COLS)
    assert [p.answer for p in test] == ["5"]
    task = DatasetTask(path=path, test_path=path + "#test", columns=COLS)
    assert len(task.rows("train")) == 3 and len(task.rows("test")) == 1
    with pytest.raises(DatasetError, match="holds splits"):
        load_problems(path + "#validation", columns=COLS)


def test_chat_rows_give_messages_and_demo(tmp_path):
    rows = [{"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"},
                          {"role": "assistant", "content": "#4"}], "answer": "4"}]
    path = _write(tmp_path, "jsonl", rows)
    (p,), _ = load_problems(path, columns={"messages": "messages"}, template="Q: {prompt}")
    assert p.meta["messages"] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Q: 2+2?"}]
    assert p.demo == "#4" and p.answer == "4" and p.prompt.endswith("Q: 2+2?")


def test_splits_are_disjoint_deterministic_and_complete(tmp_path):
    rows = [{"prompt": f"p{i}", "answer": str(i)} for i in range(200)]
    path = _write(tmp_path, "jsonl", rows)
    task = DatasetTask(path=path, test_fraction=0.25)
    train, test = task.rows("train"), task.rows("test")
    assert {p.prompt for p in train}.isdisjoint({p.prompt for p in test})
    assert len(train) + len(test) == 200 and 25 < len(test) < 75
    assert [p.prompt for p in DatasetTask(path=path, test_fraction=0.25).rows("test")] == [p.prompt for p in test]
    assert task.rows("ood") == []
    ood = _write(tmp_path, "jsonl", rows[:5], name="ood.jsonl")
    assert len(DatasetTask(path=path, ood_path=ood).rows("ood")) == 5


def test_large_jsonl_streams_and_stops_at_limit(tmp_path):
    path = tmp_path / "big.jsonl"
    with path.open("w") as f:
        for i in range(5000):
            f.write(json.dumps({"prompt": f"q{i}", "answer": str(i)}) + "\n")
        f.write("{not json\n")  # never reached with a limit: rows are read one at a time
    problems, _ = load_problems(str(path), limit=10)
    assert len(problems) == 10


def test_task_is_registered_and_works_with_the_current_pool_builder(tmp_path):
    path = _write(tmp_path, "jsonl", [{"prompt": f"p{i}", "answer": str(i)} for i in range(30)])
    task = TASKS.bind("dataset", {"path": path, "limit": 20})()
    assert len(task.rows("train")) + len(task.rows("test")) == 20
    # before build_pools uses `rows()` it samples the train rows (10 here); after, it takes all of them
    params = {"path": path, "test_fraction": 0.4}
    pools = build_pools([TaskSpec("dataset", "mine", 1.0, None, None, params)], 10, 5, 0, seed=0)
    assert len(pools.test) == 5 and len(pools.train) >= 10 and not pools.ood
    assert {p.prompt for p in pools.train}.isdisjoint({p.prompt for p in pools.test})
    assert {p.source for p in pools.train + pools.test} == {"mine"}
    assert task.sample(random.Random(0), 0).prompt.startswith("p")
    with pytest.raises(Exception, match="unknown verifier 'nope'"):
        DatasetTask(path=path, verifier="nope")


# --- malformed rows: the error names the file, the row and the field ------------------------

BAD_CASES = {
    "missing column": ("jsonl", [{"prompt": "a", "answer": "1"}, {"prompt": "b"}],
                       r"data\.jsonl: row 2 \(line 2\): field 'answer': missing column 'answer'"),
    "empty prompt": ("jsonl", [{"prompt": "a", "answer": "1"}, {"prompt": "   ", "answer": "2"}],
                     r"data\.jsonl: row 2 \(line 2\): field 'prompt': empty"),
    "wrong type": ("json", [{"prompt": ["a list"], "answer": "1"}],
                   r"data\.json: row 1: field 'prompt': expected a string, got list"),
    "bool answer": ("json", [{"prompt": "a", "answer": True}],
                    r"data\.json: row 1: field 'answer': expected a string or a number, got bool"),
    "bad difficulty": ("csv", [{"prompt": "a", "answer": "1", "difficulty": "hard"}],
                       r"data\.csv: row 1 \(line 2\): field 'difficulty': expected an integer, got 'hard'"),
    "bad role": ("jsonl", [{"messages": [{"role": "bot", "content": "hi"}], "answer": "1"}],
                 r"data\.jsonl: row 1 \(line 1\): field 'messages': message 0 has role 'bot'"),
    "parquet type": ("parquet", [{"prompt": "a", "answer": "1"}, {"prompt": None, "answer": "2"}],
                     r"data\.parquet: row 2: field 'prompt': expected a string, got NoneType"),
}


@pytest.mark.parametrize("case", list(BAD_CASES))
def test_malformed_rows_name_file_row_and_field(tmp_path, case):
    fmt, rows, pattern = BAD_CASES[case]
    if fmt == "parquet":
        pytest.importorskip("pyarrow")
    cols = {"messages": "messages"} if case == "bad role" else {"difficulty": "difficulty"} if fmt == "csv" else None
    path = _write(tmp_path, fmt, rows)
    with pytest.raises(DatasetError, match=pattern) as e:
        load_problems(path, columns=cols)
    assert isinstance(e.value, ValueError) and str(tmp_path) in str(e.value)


def test_unparsable_rows_and_skip_counting(tmp_path):
    path = tmp_path / "data.jsonl"
    path.write_text('{"prompt": "a", "answer": "1"}\n\n{"prompt": "b", "answer": \n[1, 2]\n'
                    '{"prompt": "c", "answer": "3"}\n{"prompt": "", "answer": "4"}\n')
    with pytest.raises(DatasetError, match=r"data\.jsonl: row 2 \(line 3\): field 'row': unparsable JSON"):
        load_problems(str(path))
    problems, report = load_problems(str(path), on_error="skip")
    assert [p.prompt for p in problems] == ["a", "c"]
    assert report["skipped_total"] == 3 and report["skipped"] == {str(path): 3}
    assert "row 3 (line 4): field 'row': expected a JSON object, got list" in report["first_errors"][1]
    assert "row 5 (line 6): field 'prompt': empty" in report["first_errors"][2]


def test_csv_wrong_field_count_and_file_level_errors(tmp_path):
    path = tmp_path / "data.csv"
    path.write_text("prompt,answer\na,1\nb,2,extra\nc\n")
    with pytest.raises(DatasetError, match=r"data\.csv: row 2 \(line 3\): field 'row': 3 fields, the header has 2"):
        load_problems(str(path))
    _, report = load_problems(str(path), on_error="skip")
    assert report["skipped_total"] == 2 and "row 3 (line 4): field 'row': 1 fields" in report["first_errors"][1]
    with pytest.raises(DatasetError, match=r"missing\.jsonl: no such file"):
        load_problems(str(tmp_path / "missing.jsonl"))
    (tmp_path / "bad.json").write_text('[{"prompt": "a",]')
    with pytest.raises(DatasetError, match=r"bad\.json: unparsable JSON \(.* line 1"):
        load_problems(str(tmp_path / "bad.json"))
    (tmp_path / "all_bad.jsonl").write_text('{"answer": "1"}\n')
    with pytest.raises(DatasetError, match=r"all_bad\.jsonl: no usable rows \(1 skipped"):
        load_problems(str(tmp_path / "all_bad.jsonl"), on_error="skip")


def test_template_and_column_errors(tmp_path):
    path = _write(tmp_path, "jsonl", [{"prompt": "a", "answer": "1"}])
    with pytest.raises(DatasetError, match=r"row 1 \(line 1\): field 'template \{topic\}': the row has no column"):
        load_problems(path, template="{topic}: {prompt}")
    with pytest.raises(DatasetError, match="no {prompt} placeholder"):
        DatasetTask(path=path, template="Answer:")
    with pytest.raises(DatasetError, match="literal braces"):
        DatasetTask(path=path, template="\\boxed{} {prompt}")
    with pytest.raises(DatasetError, match="unknown field 'question'"):
        DatasetTask(path=path, columns={"question": "q"})


def test_meta_columns_keep_or_rename(tmp_path):
    rows = [{"text": "Add one.", "answer": "x", "test_list": ["assert f(0) == 1"], "id": 7}]
    path = _write(tmp_path, "jsonl", rows)
    (p,), _ = load_problems(path, columns={"prompt": "text", "meta": {"tests": "test_list", "task_id": "id"}})
    assert p.meta == {"tests": ["assert f(0) == 1"], "task_id": 7}  # what the unit_tests verifier reads
    (q,), _ = load_problems(path, columns={"prompt": "text", "meta": ["test_list", "id"]})
    assert q.meta == {"test_list": ["assert f(0) == 1"], "id": 7}
    with pytest.raises(DatasetError, match="meta must be"):
        load_problems(path, columns={"prompt": "text", "meta": {"tests": 3}})
