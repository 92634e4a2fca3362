"""Preference data in TRL's formats through the "dataset" task: standard, conversational and
implicit-prompt rows load as Problem(demo=chosen, meta["rejected"]=rejected); a plain TRL file
needs only `path:`; every bad row is a DatasetError naming the file, the row and the field, or a
counted skip; rows without chosen/rejected load as before."""

import csv
import json
from pathlib import Path

import pytest

import rftkit.data.datasets  # noqa: F401  (registers the readers)
from rftkit.data.datasets import load_problems
from rftkit.tasks.base import TASKS
from rftkit.tasks.dataset_task import DatasetError, DatasetTask

FIXTURES = Path(__file__).parent / "fixtures" / "preference"


def _user(text):
    return {"role": "user", "content": text}


def _bot(text):
    return {"role": "assistant", "content": text}


def _jsonl(tmp_path, rows, name="data.jsonl"):
    path = tmp_path / name
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_standard_rows_load_with_just_a_path():
    path = str(FIXTURES / "standard.jsonl")
    task = TASKS.bind("dataset", {"path": path, "test_fraction": 0.0})()
    problems = task.rows("train")
    assert [p.prompt for p in problems] == ["The sky is", "2+2 =", "The capital of France is"]
    assert [p.demo for p in problems] == [" blue.", " 4", " Paris."]
    assert [p.meta for p in problems] == [{"rejected": " green."}, {"rejected": " 5"}, {"rejected": " Lyon."}]
    assert all(p.answer == "" and p.verifier == "exact" and p.task == "dataset" for p in problems)
    assert task.report()["skipped_total"] == 0


def test_conversational_rows_keep_the_prompt_messages():
    problems, _ = load_problems(str(FIXTURES / "conversational.jsonl"), template="Q: {prompt}")
    first, second = problems
    assert first.meta == {"rejected": "It is green.", "messages": [_user("Q: What color is the sky?")]}
    assert first.demo == "It is blue." and first.prompt == "Q: What color is the sky?"
    assert second.meta["messages"] == [{"role": "system", "content": "Be brief."}, _user("Q: What is 2+2?")]
    assert second.demo == "#4" and second.meta["rejected"] == "#5" and second.answer == ""


def test_implicit_prompt_is_the_shared_turns_and_the_last_message_the_completion():
    problems, _ = load_problems(str(FIXTURES / "implicit.jsonl"))
    first, second = problems
    assert first.meta == {"rejected": "It is green.", "messages": [_user("What color is the sky?")]}
    assert first.demo == "It is blue."
    assert [m["role"] for m in second.meta["messages"]] == ["system", "user", "assistant", "user"]
    assert second.demo == "6" and second.meta["rejected"] == "Let me think about it at length."


def test_mapped_columns_answer_and_other_file_formats(tmp_path):
    rows = [{"q": "1+1?", "good": "#2", "bad": "#3", "gold": 2, "prompt": "ignored"},
            {"q": "2+2?", "good": "#4", "bad": "#5", "gold": "4", "prompt": "ignored"}]
    cols = {"prompt": "q", "chosen": "good", "rejected": "bad", "answer": "gold"}
    problems, _ = load_problems(_jsonl(tmp_path, rows), columns=cols)
    assert [(p.prompt, p.answer, p.demo, p.meta["rejected"]) for p in problems] == [
        ("1+1?", "2", "#2", "#3"), ("2+2?", "4", "#4", "#5")]
    # a default answer column is read when the row has one
    (p,), _ = load_problems(_jsonl(tmp_path, [{"prompt": "1+1?", "chosen": "#2", "rejected": "#3", "answer": 2}]))
    assert p.answer == "2"
    path = tmp_path / "data.csv"
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["prompt", "chosen", "rejected"])
        w.writeheader()
        w.writerows(json.loads(line) for line in (FIXTURES / "standard.jsonl").read_text().splitlines())
    problems, _ = load_problems(str(path))
    assert [p.demo for p in problems] == [" blue.", " 4", " Paris."]


def test_parquet_conversational_rows_load_by_default_names(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    rows = [json.loads(line) for line in (FIXTURES / "conversational.jsonl").read_text().splitlines()]
    path = tmp_path / "data.parquet"
    pq.write_table(pa.Table.from_pylist([{**r, "extra": 1} for r in rows]), path)
    problems, _ = load_problems(str(path))  # only the mapped and default columns are read
    assert [(p.demo, p.meta["rejected"]) for p in problems] == [("It is blue.", "It is green."), ("#4", "#5")]


# --- bad rows: row 1 is good, row 2 is bad; the error names file, row and field -------------

GOOD = {"prompt": "2+2?", "chosen": "#4", "rejected": "#5"}
CHAT = {"prompt": [_user("2+2?")], "chosen": [_bot("#4")], "rejected": [_bot("#5")]}
BAD_CASES = {
    "missing rejected": ({"prompt": "a", "chosen": "b"}, "rejected", "missing column 'rejected'"),
    "null chosen": ({**GOOD, "chosen": None}, "chosen", r"missing value \(null\)"),
    "identical": ({**GOOD, "chosen": " #4\n", "rejected": "#4"}, "rejected",
                  "identical chosen and rejected carry no preference"),
    "empty completion": ({**GOOD, "chosen": "  "}, "chosen", "empty"),
    "empty message": ({**CHAT, "rejected": [_bot("")]}, "rejected", "empty"),
    "wrong type": ({**GOOD, "rejected": 5}, "rejected", "expected a string or a list of one assistant message"),
    "user completion": ({**CHAT, "chosen": [_user("#4")]}, "chosen", "message 0 has role 'user'"),
    "two assistant messages": ({**CHAT, "chosen": [_bot("#"), _bot("4")]}, "chosen", "2 assistant messages"),
    "non-string content": ({**CHAT, "rejected": [{"role": "assistant", "content": 5}]}, "rejected",
                           "message 0 has content of type int"),
    "prompt ends with assistant": ({**CHAT, "prompt": [_user("2+2?"), _bot("hm")]}, "prompt",
                                   "the prompt turns must end with a user message"),
    "bad prompt role": ({**CHAT, "prompt": [{"role": "bot", "content": "hi"}]}, "prompt", "has role 'bot'"),
    "implicit prefixes differ": ({"chosen": [_user("a"), _bot("b")], "rejected": [_user("x"), _bot("y")]},
                                 "rejected", "turns before the last differ"),
    "implicit ends with user": ({"chosen": [_user("a"), _bot("b")], "rejected": [_user("a"), _user("y")]},
                                "rejected", "the last message .* has role 'user'"),
    "implicit prompt without user": ({"chosen": [_bot("a")], "rejected": [_bot("b")]}, "chosen",
                                     "must end with a user message"),
    "text rows without prompt": ({"chosen": "a", "rejected": "b"}, "prompt", "split the prompt out"),
}


@pytest.mark.parametrize("case", list(BAD_CASES))
def test_bad_rows_name_file_row_and_field_or_are_counted_skips(tmp_path, case):
    bad, field, what = BAD_CASES[case]
    path = _jsonl(tmp_path, [GOOD, bad])
    with pytest.raises(DatasetError, match=rf"data\.jsonl: row 2 \(line 2\): field '{field}'.*{what}") as e:
        load_problems(path)
    assert str(tmp_path) in str(e.value) and "\n" not in str(e.value)
    problems, report = load_problems(path, on_error="skip")
    assert [p.demo for p in problems] == ["#4"]
    assert report["skipped"] == {path: 1} and f"field '{field}'" in report["first_errors"][0]


def test_mapped_pair_is_required_in_every_row(tmp_path):
    path = _jsonl(tmp_path, [{"prompt": "a", "answer": "1"}])
    with pytest.raises(DatasetError, match=r"row 1 \(line 1\): field 'chosen' \(column 'good'\): missing column"):
        load_problems(path, columns={"chosen": "good", "rejected": "bad"})


def test_column_config_errors_name_the_missing_key(tmp_path):
    path = _jsonl(tmp_path, [GOOD])
    with pytest.raises(DatasetError, match="`chosen` is mapped without `rejected`"):
        DatasetTask(path=path, columns={"chosen": "good"})
    with pytest.raises(DatasetError, match="`rejected` is mapped without `chosen`"):
        DatasetTask(path=path, columns={"rejected": "bad"})
    with pytest.raises(DatasetError, match="both name columns, or both be null"):
        DatasetTask(path=path, columns={"chosen": "good", "rejected": None})
    with pytest.raises(DatasetError, match="`demo` and `chosen` both give the demonstration"):
        DatasetTask(path=path, columns={"chosen": "good", "rejected": "bad", "demo": "solution"})


def test_rows_without_a_pair_and_opted_out_files_load_as_before(tmp_path):
    rows = [{"prompt": "1+1", "answer": "2", "chosen": "#2", "rejected": "#3", "solution": "#2"}]
    path = _jsonl(tmp_path, rows)
    for cols in ({"chosen": None, "rejected": None}, {"demo": "solution"}):  # explicit demo: no default pairs
        (p,), _ = load_problems(path, columns=cols)
        assert "rejected" not in p.meta and p.answer == "2"
    plain, _ = load_problems(_jsonl(tmp_path, [{"prompt": "1+1", "answer": "2"}], name="plain.jsonl"))
    assert plain[0].meta == {} and plain[0].demo is None
    with pytest.raises(DatasetError, match="field 'answer': missing column 'answer'"):  # still required there
        load_problems(_jsonl(tmp_path, [{"prompt": "1+1"}], name="no_answer.jsonl"))
