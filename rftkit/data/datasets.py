"""Readers of prompt datasets: JSONL, JSON, CSV/TSV, Parquet, `datasets` folders and hub names.

Each reader yields `Record(row, line, value)` one at a time: `value` is the row as a dict,
or `BadRow(reason)` when the row cannot be parsed, so the "dataset" task
(`rftkit.tasks.dataset_task`) reports the file, row and field of every problem. Importing
this module registers the readers in `READERS`.

Memory: JSONL and CSV are read line by line, Parquet one record batch at a time (only the
mapped columns when no template needs others), `datasets` folders are memory-mapped Arrow
files iterated row by row; their Image columns are read undecoded ({bytes, path}) so the task
decodes them with row errors (`rftkit.tasks.dataset_images`). A JSON array file is parsed whole
(JSON has no row boundary to stream on): use JSONL or Parquet for large data. `load_problems`
is the same path as the task, for scripts and checks.

Text files: a UTF-8 byte-order mark (what Excel and Notepad write) is dropped, not read as
part of the first key or column name. Bytes that are not UTF-8 make their row a `BadRow`
naming the byte (so `on_error: skip` counts it) instead of a decoding traceback for the
whole file: the decoder keeps them as lone surrogates (`surrogateescape`), which valid
UTF-8 never produces. A JSON object with a repeated key is a `BadRow` naming the key:
`json.loads` would keep the last value silently.
"""

from __future__ import annotations

import csv
import gzip
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rftkit.tasks.dataset_task import READERS, BadRow, DatasetError, DatasetTask, Record

PARQUET_BATCH = 1024


def _open_text(path: str):
    p = Path(path)
    if not p.is_file():
        raise DatasetError(f"{path}: no such file")
    kw = {"encoding": "utf-8-sig", "errors": "surrogateescape", "newline": ""}
    return gzip.open(p, "rt", **kw) if p.name.endswith(".gz") else p.open("r", **kw)


_ESCAPED = re.compile("[\udc80-\udcff]")  # where surrogateescape kept a byte that is not UTF-8


def _invalid_utf8(text: str, where: str = "") -> str | None:
    """The reason for a row whose text holds bytes that are not UTF-8, or None."""
    m = _ESCAPED.search(text)
    if m is None:
        return None
    at = where or f"at column {m.start() + 1}"
    return f"invalid UTF-8 (byte 0x{ord(m.group()) - 0xDC00:02x} {at}); save the file as UTF-8"


class _DupDict(dict):
    duplicate: str = ""


def _pairs_hook(found: list[str]):
    """object_pairs_hook that marks an object with a repeated key (and notes that one was seen)."""

    def hook(pairs: list[tuple[str, Any]]) -> dict:
        obj = dict(pairs)
        if len(obj) == len(pairs):
            return obj
        seen: set[str] = set()
        out = _DupDict(obj)
        out.duplicate = next(k for k, _ in pairs if k in seen or seen.add(k))
        found.append(out.duplicate)
        return out

    return hook


def _duplicate_key(value: Any) -> str | None:
    """The repeated key of the first marked object inside a parsed value, or None."""
    if isinstance(value, _DupDict):
        return value.duplicate
    items = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
    return next((k for k in map(_duplicate_key, items) if k is not None), None)


def _json_row(value: Any, dups_seen: bool) -> dict[str, Any] | BadRow:
    if not isinstance(value, dict):
        return BadRow(f"expected a JSON object, got {type(value).__name__}")
    key = _duplicate_key(value) if dups_seen else None
    return BadRow(f"duplicate key '{key}' (JSON would keep only its last value)") if key is not None else value


@READERS.register("jsonl")
def read_jsonl(path: str, *, columns: list[str] | None = None) -> Iterator[Record]:
    """One JSON object per line; blank lines are not rows. row = n-th non-blank line."""
    row = 0
    with _open_text(path) as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            row += 1
            bad = _invalid_utf8(line)
            if bad:
                yield Record(row, line_no, BadRow(bad))
                continue
            dups: list[str] = []
            try:
                value = json.loads(line, object_pairs_hook=_pairs_hook(dups))
            except json.JSONDecodeError as e:
                yield Record(row, line_no, BadRow(f"unparsable JSON ({e.msg} at column {e.colno})"))
                continue
            yield Record(row, line_no, _json_row(value, bool(dups)))


@READERS.register("json")
def read_json(path: str, *, columns: list[str] | None = None) -> Iterator[Record]:
    """A JSON array of objects, or an object with exactly one array of objects (e.g. {"data": [...]})."""
    dups: list[str] = []
    with _open_text(path) as f:
        text = f.read()
    try:
        data = json.loads(text, object_pairs_hook=_pairs_hook(dups))
    except json.JSONDecodeError as e:
        raise DatasetError(f"{path}: unparsable JSON ({e.msg} at line {e.lineno}, column {e.colno})") from None
    # bytes that are not UTF-8 can only sit inside strings here (elsewhere the parse fails)
    check_utf8 = _ESCAPED.search(text) is not None
    del text
    if isinstance(data, _DupDict):
        raise DatasetError(f"{path}: duplicate key '{data.duplicate}' in the top-level object")
    if isinstance(data, dict):
        lists = [v for v in data.values() if isinstance(v, list)]
        if len(lists) != 1:
            raise DatasetError(f"{path}: expected a JSON array of rows, or an object holding one array; "
                               f"got an object with keys {list(data)[:8]}")
        data = lists[0]
    if not isinstance(data, list):
        raise DatasetError(f"{path}: expected a JSON array of rows, got {type(data).__name__}")
    for i, value in enumerate(data, 1):
        bad = _invalid_utf8(json.dumps(value, ensure_ascii=False), "in a string") if check_utf8 else None
        yield Record(i, None, BadRow(bad) if bad else _json_row(value, bool(dups)))


def _read_delimited(path: str, delimiter: str) -> Iterator[Record]:
    with _open_text(path) as f:
        reader = csv.DictReader(f, delimiter=delimiter, restkey="\0extra", restval="\0missing")
        if reader.fieldnames is None:
            raise DatasetError(f"{path}: empty file (no header row)")
        bad = _invalid_utf8(delimiter.join(reader.fieldnames))
        if bad:  # every row's keys would carry it: a file error, not a row to skip
            raise DatasetError(f"{path}: the header (line {reader.line_num}): {bad}")
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
                bad = next(filter(None, (_invalid_utf8(v, f"in column '{k}'") for k, v in value.items())), None)
                yield Record(row, line, BadRow(bad) if bad else value)
        except csv.Error as e:  # the reader cannot resynchronize: stop, never drop the rest silently
            raise DatasetError(f"{path}: row {row + 1} (line {reader.line_num}): field 'row': "
                               f"unparsable CSV ({e})") from None


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
    features = _images_undecoded(ds.features)
    if features is None:
        for i, value in enumerate(ds, 1):
            yield Record(i, None, dict(value))
        return
    # `datasets` would decode Image columns to PIL while iterating, and raise mid-file on a missing
    # or corrupt image: read their {bytes, path} storage instead (the same rows otherwise: what the
    # Python format does, arrow rows through `decode_example`), and the task decodes them as rows
    i = 0
    for batch in ds.with_format("arrow").iter(batch_size=PARQUET_BATCH):
        for value in batch.to_pylist():
            i += 1
            yield Record(i, None, features.decode_example(value))


def _images_undecoded(features):
    """A copy of a dataset's `Features` with every decoding Image feature (nested in lists and
    dicts too) set to decode=False, or None when it has none."""
    import copy

    import datasets

    found = []

    def visit(f) -> None:
        if isinstance(f, datasets.Image):
            if f.decode:
                f.decode = False
                found.append(f)
        elif isinstance(f, dict):
            for v in f.values():
                visit(v)
        elif isinstance(f, (list, tuple)):
            for v in f:
                visit(v)
        elif hasattr(f, "feature"):  # List, LargeList, Sequence
            visit(f.feature)

    copied = {k: copy.deepcopy(v) for k, v in features.items()}
    visit(copied)
    return datasets.Features(copied) if found else None


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

    knobs: those of the "dataset" task (format, columns, template, verifier, on_error, limit,
    max_image_size).
    """
    task = DatasetTask(path=path, test_fraction=0.0, **knobs)
    return list(task.load(path)), task.report()


__all__ = ["read_jsonl", "read_json", "read_csv", "read_tsv", "read_parquet", "read_hf_disk", "read_hub",
           "load_problems", "DatasetError"]
