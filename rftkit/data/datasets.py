"""Readers of prompt datasets: JSONL, JSON, CSV/TSV, Parquet, `datasets` folders and hub names.

Each reader yields `Record(row, line, value)` one at a time: `value` is the row as a dict,
or `BadRow(reason)` when the row cannot be parsed, so the "dataset" task
(`rftkit.tasks.dataset_task`) reports the file, row and field of every problem. Importing
this module registers the readers in `READERS`.

Memory: JSONL and CSV are read line by line, Parquet one record batch at a time (only the
mapped columns when no template needs others), `datasets` folders are memory-mapped Arrow
files iterated row by row. A JSON array file is parsed whole (JSON has no row boundary to
stream on): use JSONL or Parquet for large data. `load_problems` is the same path as the
task, for scripts and checks.
"""

from __future__ import annotations

import csv
import gzip
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rftkit.tasks.dataset_task import READERS, BadRow, DatasetError, DatasetTask, Record

PARQUET_BATCH = 1024


def _open_text(path: str):
    p = Path(path)
    if not p.is_file():
        raise DatasetError(f"{path}: no such file")
    if p.name.endswith(".gz"):
        return gzip.open(p, "rt", encoding="utf-8", newline="")
    return p.open("r", encoding="utf-8", newline="")


@READERS.register("jsonl")
def read_jsonl(path: str, *, columns: list[str] | None = None) -> Iterator[Record]:
    """One JSON object per line; blank lines are not rows. row = n-th non-blank line."""
    row = 0
    with _open_text(path) as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            row += 1
            try:
                value = json.loads(line)
            except json.JSONDecodeError as e:
                yield Record(row, line_no, BadRow(f"unparsable JSON ({e.msg} at column {e.colno})"))
                continue
            if not isinstance(value, dict):
                yield Record(row, line_no, BadRow(f"expected a JSON object, got {type(value).__name__}"))
                continue
            yield Record(row, line_no, value)


@READERS.register("json")
def read_json(path: str, *, columns: list[str] | None = None) -> Iterator[Record]:
    """A JSON array of objects, or an object with exactly one array of objects (e.g. {"data": [...]})."""
    with _open_text(path) as f:
        try:
            data = json.load(f)
        except json.JSONDecodeError as e:
            raise DatasetError(f"{path}: unparsable JSON ({e.msg} at line {e.lineno}, column {e.colno})") from None
    if isinstance(data, dict):
        lists = [v for v in data.values() if isinstance(v, list)]
        if len(lists) != 1:
            raise DatasetError(f"{path}: expected a JSON array of rows, or an object holding one array; "
                               f"got an object with keys {list(data)[:8]}")
        data = lists[0]
    if not isinstance(data, list):
        raise DatasetError(f"{path}: expected a JSON array of rows, got {type(data).__name__}")
    for i, value in enumerate(data, 1):
        yield Record(i, None, value if isinstance(value, dict) else
                     BadRow(f"expected a JSON object, got {type(value).__name__}"))


def _read_delimited(path: str, delimiter: str) -> Iterator[Record]:
    with _open_text(path) as f:
        reader = csv.DictReader(f, delimiter=delimiter, restkey="\0extra", restval="\0missing")
        if reader.fieldnames is None:
            raise DatasetError(f"{path}: empty file (no header row)")
        n_fields = len(reader.fieldnames)
        row, start = 0, reader.line_num + 1
        try:
            for value in reader:
                row += 1
                line, start = start, reader.line_num + 1
                if "\0extra" in value or "\0missing" in value.values():
                    have = n_fields + len(value.get("\0extra", [])) - sum(v == "\0missing" for v in value.values())
                    yield Record(row, line, BadRow(f"{have} fields, the header has {n_fields}"))
                    continue
                yield Record(row, line, value)
        except csv.Error as e:  # the reader cannot resynchronize: stop, never drop the rest silently
            raise DatasetError(f"{path}: row {row + 1} (line {reader.line_num}): field 'row': unparsable CSV ({e})") from None


@READERS.register("csv")
def read_csv(path: str, *, columns: list[str] | None = None) -> Iterator[Record]:
    """Header row + one row per record (all values are strings; difficulty is parsed as int).

    row = n-th data row; line = the line where it starts (the header is line 1).
    """
    yield from _read_delimited(path, ",")


@READERS.register("tsv")
def read_tsv(path: str, *, columns: list[str] | None = None) -> Iterator[Record]:
    yield from _read_delimited(path, "\t")


@READERS.register("parquet")
def read_parquet(path: str, *, columns: list[str] | None = None) -> Iterator[Record]:
    """Record batches via pyarrow (only `columns` that exist, when given)."""
    pq = _require("pyarrow.parquet", "pyarrow")
    if not Path(path).is_file():
        raise DatasetError(f"{path}: no such file")
    try:
        f = pq.ParquetFile(path)
    except Exception as e:  # pyarrow raises ArrowInvalid & co for a corrupt file
        raise DatasetError(f"{path}: not a readable Parquet file ({e})") from None
    names = f.schema_arrow.names
    keep = None if columns is None else [c for c in dict.fromkeys(columns) if c in names]
    row = 0
    for batch in f.iter_batches(batch_size=PARQUET_BATCH, columns=keep):
        for value in batch.to_pylist():
            row += 1
            yield Record(row, None, value)


def split_spec(path: str) -> tuple[str, str | None]:
    """'folder#test' -> ('folder', 'test')."""
    base, _, split = path.partition("#")
    return base, split or None


def _pick_split(obj, path: str, split: str | None):
    if hasattr(obj, "keys") and not hasattr(obj, "features"):  # a DatasetDict
        names = list(obj.keys())
        split = split or ("train" if "train" in names else None)
        if split not in names:
            raise DatasetError(f"{path}: holds splits {names}; name one as '{path.split('#')[0]}#<split>'")
        return obj[split]
    if split:
        raise DatasetError(f"{path}: a single dataset without splits; remove '#{split}'")
    return obj


def _iter_dataset(ds, columns: list[str] | None) -> Iterator[Record]:
    if columns is not None:
        keep = [c for c in dict.fromkeys(columns) if c in ds.column_names]
        ds = ds.select_columns(keep)
    for i, value in enumerate(ds, 1):
        yield Record(i, None, dict(value))


@READERS.register("hf_disk")
def read_hf_disk(path: str, *, columns: list[str] | None = None) -> Iterator[Record]:
    """A folder written by `Dataset.save_to_disk` / `DatasetDict.save_to_disk` ("folder#split")."""
    datasets = _require("datasets", "datasets")
    base, split = split_spec(path)
    if not Path(base).is_dir():
        raise DatasetError(f"{base}: no such folder")
    try:
        obj = datasets.load_from_disk(base)
    except (FileNotFoundError, ValueError) as e:
        raise DatasetError(f"{base}: not a `datasets` folder ({e})") from None
    yield from _iter_dataset(_pick_split(obj, path, split), columns)


@READERS.register("hub")
def read_hub(path: str, *, columns: list[str] | None = None) -> Iterator[Record]:
    """`datasets.load_dataset(name, config, split=...)` for "name[@config][#split]" (needs network
    or a populated HF cache; not exercised by rftkit's tests)."""
    datasets = _require("datasets", "datasets")
    base, split = split_spec(path)
    name, _, config = base.partition("@")
    ds = datasets.load_dataset(name, config or None, split=split or "train")
    yield from _iter_dataset(ds, columns)


def _require(module: str, package: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise DatasetError(f"reading this format needs '{package}': pip install 'rftkit[data]'") from None


def load_problems(path: str, **knobs) -> tuple[list, dict]:
    """All valid rows of one file as Problems, and the task's report (skip counts).

    knobs: those of the "dataset" task (format, columns, template, verifier, on_error, limit).
    """
    task = DatasetTask(path=path, test_fraction=0.0, **knobs)
    return list(task.load(path)), task.report()


__all__ = ["read_jsonl", "read_json", "read_csv", "read_tsv", "read_parquet", "read_hf_disk", "read_hub",
           "load_problems", "DatasetError"]
