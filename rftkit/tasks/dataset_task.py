"""The "dataset" task: fixed prompts from a file instead of generated ones.

    data:
      tasks:
        - name: dataset
          label: gsm8k
          params:
            path: data/gsm8k/train.jsonl          # .jsonl .json .parquet .csv .tsv, a `datasets` folder
            test_path: data/gsm8k/test.jsonl      # or test_fraction of `path`, split by prompt hash
            columns: {prompt: question, answer: answer, demo: solution}
            template: "Question: {prompt}\nAnswer:"
            verifier: exact

Rows become `Problem`s (column mapping: prompt, answer, demo (alias solution/demonstration),
messages, chosen + rejected, difficulty, source, meta: a column, a list, or {key: column}, e.g.
{tests: test_list} to give MBPP asserts to the `unit_tests` verifier; chosen/rejected: preference
pairs in TRL's formats, `rftkit.tasks.preference_rows`; images (alias image; unmapped: a column
`images` or `image`): paths, bytes, `datasets` Image cells, `rftkit.tasks.dataset_images`). Every
row is checked before training starts: a missing column, an empty prompt, a wrong type, an
unreadable image or an unparsable row raises `DatasetError` naming the file, the row and the
field; with `on_error: skip` such rows are skipped and counted (`skipped`, `report()`), never
dropped silently.

Prompt length: a run's builder (`rftkit.train.build.task_specs`) sets `max_prompt_tokens` to
the model's context minus the longest generation the run asks for, and `count_tokens` to the
prompt's ids as the rollout builds them (chat template and bos included). A longer prompt is
then a row error, found when the file is read, not at the first rollout that samples it. A
recipe may set a lower `max_prompt_tokens`; without `count_tokens` a prompt counts as the
built-in model sees it (bos, one id per character, 16 per image: `dataset_images.char_tokens`).

Reading files is the data layer's job: readers are registered in `READERS` by
`rftkit.data.datasets` (this module is a leaf and imports nothing above it). `rows(split)`
gives the fixed rows of "train", "test" or "ood"; `sample(rng, difficulty)` draws from the
train rows, for pool builders that only know generated tasks.
"""

from __future__ import annotations

import random
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from rftkit.errors import RftkitError
from rftkit.registry import Registry
from rftkit.tasks.base import TASKS, VERIFIERS
from rftkit.types import Problem

FIELDS = ("prompt", "answer", "demo", "messages", "chosen", "rejected", "difficulty", "source", "meta", "images")
ALIASES = {"solution": "demo", "demonstration": "demo", "image": "images"}
IMAGE_COLUMNS = ("images", "image")  # unmapped images: the first of these columns a row has
DEFAULT_COLUMNS = {"prompt": "prompt", "answer": "answer", "chosen": "chosen", "rejected": "rejected"}
ROLES = ("system", "user", "assistant")


class DatasetError(RftkitError, ValueError):
    """A dataset file or row is unusable; the message names the file, the row and the field."""


@dataclass(frozen=True)
class BadRow:
    """A record a reader could not parse (invalid JSON, wrong number of CSV fields, ...)."""

    reason: str


@dataclass(frozen=True)
class Record:
    """One record of a file: 1-based row number, the line where a text format has one."""

    row: int
    line: int | None
    value: dict[str, Any] | BadRow


Reader = Callable[..., Iterator[Record]]
READERS: Registry[Reader] = Registry("dataset format")
"""format name -> reader(path: str, *, columns: list[str] | None) -> Iterator[Record]."""


def where(file: str, rec: Record) -> str:
    return f"{file}: row {rec.row}" + (f" (line {rec.line})" if rec.line is not None else "")


def normalize_columns(columns: dict[str, Any] | None) -> dict[str, Any]:
    """Field -> column name (None = absent); "defaults": the fields left to DEFAULT_COLUMNS (their
    own names). Rows with default chosen/rejected columns are preference pairs (preference_rows)."""
    out: dict[str, Any] = dict(DEFAULT_COLUMNS)
    given = set()
    for key, col in (columns or {}).items():
        field = ALIASES.get(key, key)
        if field not in FIELDS:
            raise DatasetError(f"columns: unknown field '{key}'; valid: {', '.join(FIELDS + tuple(ALIASES))}")
        out[field] = col
        given.add(field)
    out.setdefault("images", IMAGE_COLUMNS)
    if out.get("messages") and "prompt" not in given:
        out["prompt"] = None  # chat rows: the prompt comes from the messages
    from rftkit.tasks.preference_rows import check_pair_columns  # not at the top: see row_to_problem

    check_pair_columns(out, given)
    out["defaults"] = frozenset(f for f in DEFAULT_COLUMNS if f not in given and out[f])
    if not out.get("prompt") and not out.get("messages"):
        raise DatasetError("columns: set `prompt` or `messages` to a column name")
    meta = out.get("meta")
    if isinstance(meta, str):
        meta = [meta]
    if isinstance(meta, list):  # a column kept under its own name
        meta = {c: c for c in meta}
    if meta is not None and not (isinstance(meta, dict) and all(isinstance(c, str) for c in meta.values())):
        raise DatasetError(f"columns: meta must be a column, a list of columns or {{key: column}}, got {meta!r}")
    out["meta"] = meta
    return out


class RowError(Exception):
    """Raised inside row conversion with the field at fault; turned into a DatasetError."""

    def __init__(self, field: str, column: str | None, what: str) -> None:
        super().__init__(f"field '{field}'" + (f" (column '{column}')" if column and column != field else "")
                         + f": {what}")


def _get(rec: dict, cols: dict, field: str, required: bool = True) -> Any:
    col = cols.get(field)
    if not col:
        return None
    if col not in rec:
        if required:
            have = ", ".join(map(str, list(rec)[:12]))
            raise RowError(field, col, f"missing column '{col}' (the row has: {have})")
        return None
    return rec[col]


def _text(value: Any, field: str, col: str | None, allow_numbers: bool = False) -> str:
    if allow_numbers and isinstance(value, (int, float)) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        kinds = "a string or a number" if allow_numbers else "a string"
        raise RowError(field, col, f"expected {kinds}, got {type(value).__name__} {str(value)[:60]!r}")
    if not value.strip():
        raise RowError(field, col, "empty")
    return value


def _messages(value: Any, col: str, field: str = "messages") -> list[dict[str, str]]:
    if not isinstance(value, list) or not value:
        raise RowError(field, col, f"expected a non-empty list of {{role, content}}, got {type(value).__name__}")
    out = []
    for i, m in enumerate(value):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) or "content" not in m:
            raise RowError(field, col, f"message {i} is not {{'role': str, 'content': str}}: {str(m)[:80]}")
        if not isinstance(m["content"], str):
            raise RowError(field, col, f"message {i} has content of type {type(m['content']).__name__}, "
                           f"expected a string: {str(m['content'])[:60]!r}")
        if m["role"] not in ROLES:
            raise RowError(field, col, f"message {i} has role '{m['role']}'; valid: {', '.join(ROLES)}")
        out.append({"role": m["role"], "content": m["content"]})
    return out


def _difficulty(value: Any, col: str | None) -> int:
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise RowError("difficulty", col, f"expected an integer, got {type(value).__name__}")
    try:
        f = float(value)
        if f != int(f):
            raise ValueError
        return int(f)
    except (ValueError, OverflowError):
        raise RowError("difficulty", col, f"expected an integer, got {value!r}") from None


def _prompt_and_chat(rec: dict, cols: dict, template: str | None) -> tuple[str, list | None, str | None]:
    """(prompt text, prompt messages or None, demo taken from a final assistant turn or None)."""
    if cols.get("messages"):
        msgs = _messages(_get(rec, cols, "messages"), cols["messages"])
        demo = msgs.pop()["content"] if msgs[-1]["role"] == "assistant" else None
        return (*chat_prompt(msgs, rec, template, "messages", cols["messages"]), demo)
    prompt = _text(_get(rec, cols, "prompt"), "prompt", cols["prompt"])
    return (_fill(template, rec, prompt) if template else prompt), None, None


def chat_prompt(msgs: list[dict[str, str]], rec: dict, template: str | None, field: str,
                col: str | None) -> tuple[str, list[dict[str, str]]]:
    """Validated prompt turns -> (prompt text, turns); the template fills the last user turn."""
    if not msgs or msgs[-1]["role"] != "user":
        raise RowError(field, col, "the prompt turns must end with a user message")
    _text(msgs[-1]["content"], field, col)
    if template:
        msgs[-1]["content"] = _fill(template, rec, msgs[-1]["content"])
    return "\n\n".join(m["content"] for m in msgs), msgs


def _fill(template: str, rec: dict, prompt: str) -> str:
    try:
        return template.format_map({**{str(k): v for k, v in rec.items()}, "prompt": prompt})
    except KeyError as e:
        raise RowError(f"template {{{e.args[0]}}}", None, f"the row has no column '{e.args[0]}'") from None


def row_to_problem(rec: dict[str, Any], cols: dict[str, Any], *, template: str | None, verifier: str,
                   task: str) -> Problem:
    """One validated row -> Problem; raises RowError naming the field."""
    # imported here, not at the top: preference_rows reads rows with this module's helpers
    from rftkit.tasks import preference_rows

    meta: dict[str, Any] = {}
    pair = preference_rows.is_preference(rec, cols)
    if pair:
        prompt, msgs, demo, meta["rejected"] = preference_rows.preference_parts(rec, cols, template)
    else:
        prompt, msgs, demo = _prompt_and_chat(rec, cols, template)
    answer = ""
    # a preference row without an answer column is unverifiable data, not an error: answer ""
    optional = pair and "answer" in cols["defaults"]
    raw_answer = _get(rec, cols, "answer", required=not optional)
    if cols.get("answer") and not (optional and raw_answer is None):
        answer = _text(raw_answer, "answer", cols["answer"], allow_numbers=True).strip()
    if cols.get("demo"):
        raw = _get(rec, cols, "demo")  # optional per row: null or an empty cell means no demo
        demo = None if raw is None or (isinstance(raw, str) and not raw.strip()) else _text(raw, "demo", cols["demo"])
    if msgs is not None:
        meta["messages"] = msgs
    src = _get(rec, cols, "source")
    if src is not None:
        meta["source"] = _text(src, "source", cols["source"], allow_numbers=True)
    for key, col in (cols.get("meta") or {}).items():
        if col not in rec:
            raise RowError("meta", col, f"missing column '{col}'")
        meta[key] = rec[col]
    return Problem(task=task, prompt=prompt, answer=answer, verifier=verifier, demo=demo,
                   difficulty=_difficulty(_get(rec, cols, "difficulty"), cols.get("difficulty")), meta=meta)


@TASKS.register("dataset")
class DatasetTask:
    """Prompts from files. on_error: "raise" (default) or "skip" (counted in `skipped`).

    test_fraction: share of `path` held out as "test" (by a hash of `Problem.key`, the prompt
    and its images, so a problem is always on the same side) when no `test_path` is given.
    limit: read at most this many valid rows per file. format: "auto" (by suffix; a folder is
    a `datasets` folder) or a READERS name. A `datasets` folder or hub name may carry "#split"
    ("data/gsm8k#test"). max_image_size: images with a longer side are shrunk to it (null: never).
    """

    name: ClassVar[str] = "dataset"
    difficulty_doc: ClassVar[str] = "the row's difficulty column (0 when unmapped); not used to generate"
    default_difficulty: ClassVar[tuple[int, int]] = (0, 0)
    default_ood: ClassVar[tuple[int, int]] = (0, 0)

    def __init__(self, *, path: str, format: str = "auto", columns: dict[str, Any] | None = None,
                 template: str | None = None, verifier: str = "exact", test_path: str | None = None,
                 ood_path: str | None = None, test_fraction: float = 0.1, split_seed: int = 0,
                 on_error: str = "raise", limit: int | None = None, max_prompt_tokens: int | None = None,
                 count_tokens: Callable[[Problem], int] | None = None, max_image_size: int | None = 512) -> None:
        from rftkit.tasks import dataset_images  # it imports this module
        if on_error not in ("raise", "skip"):
            raise DatasetError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
        if max_prompt_tokens is not None and (not isinstance(max_prompt_tokens, int) or max_prompt_tokens < 1):
            raise DatasetError(f"max_prompt_tokens must be a positive integer, got {max_prompt_tokens!r}")
        if count_tokens is not None and not callable(count_tokens):
            raise DatasetError("count_tokens is set by rftkit from the model's tokenizer, not in a recipe; "
                               f"got {count_tokens!r}")
        if not 0.0 <= test_fraction < 1.0:
            raise DatasetError(f"test_fraction must be in [0, 1), got {test_fraction}")
        VERIFIERS.get(verifier)  # unknown names fail now, listing the valid ones
        if template is not None:
            _check_template(template)
        self.path, self.test_path, self.ood_path = path, test_path, ood_path
        self.format, self.cols, self.template, self.verifier = format, normalize_columns(columns), template, verifier
        self.test_fraction, self.split_seed, self.on_error, self.limit = test_fraction, split_seed, on_error, limit
        self.max_prompt_tokens, self.count_tokens = max_prompt_tokens, count_tokens or dataset_images.char_tokens
        self.images = dataset_images.RowImages(max_image_size)  # counts images read, resized, converted
        self.skipped: dict[str, int] = {}
        self.errors: list[str] = []
        self._cache: dict[str, list[Problem]] = {}

    def rows(self, split: str) -> list[Problem]:
        """The fixed problems of "train", "test" or "ood" (empty when no ood_path)."""
        if split == "ood":
            return list(self.load(self.ood_path)) if self.ood_path else []
        if split not in ("train", "test"):
            raise ValueError(f"unknown split '{split}'; valid: train, test, ood")
        if self.test_path:
            return list(self.load(self.path if split == "train" else self.test_path))
        return [p for p in self.load(self.path) if self._held_out(p.key) == (split == "test")]

    def sample(self, rng: random.Random, difficulty: int) -> Problem:
        return rng.choice(self.rows("train"))

    def _held_out(self, key: str) -> bool:
        h = zlib.crc32(f"{self.split_seed}\0{key}".encode()) / 2**32
        return h < self.test_fraction

    def load(self, path: str) -> list[Problem]:
        """All valid rows of one file (read once, then cached)."""
        if path not in self._cache:
            self._cache[path] = self._read(path)
        return self._cache[path]

    def _read(self, path: str) -> list[Problem]:
        fmt = self.format if self.format != "auto" else detect_format(path)
        reader = READERS.get(fmt)
        wanted = None if self.template else _columns_used(self.cols)
        out, skipped = [], 0
        for rec in reader(path, columns=wanted):
            try:
                if isinstance(rec.value, BadRow):
                    raise RowError("row", None, rec.value.reason)
                problem = row_to_problem(rec.value, self.cols, template=self.template, verifier=self.verifier,
                                         task=self.name)
                problem = self.images.attach(problem, rec.value, self.cols, path, fmt, rec.row)
                self._check_length(problem, path, rec)
                out.append(problem)
            except RowError as e:
                msg = f"{where(path, rec)}: {e}"
                if self.on_error == "raise":
                    raise DatasetError(msg + " (set on_error: skip to skip and count such rows)") from None
                skipped += 1
                if len(self.errors) < 100:
                    self.errors.append(msg)
            if self.limit is not None and len(out) >= self.limit:
                break
        self.skipped[path] = skipped
        if not out:
            first = next((e for e in self.errors if e.startswith(f"{path}:")), "")
            raise DatasetError(f"{path}: no usable rows" + (f" ({skipped} skipped; first: {first})" if skipped else ""))
        return out

    def _check_length(self, problem: Problem, path: str, rec: Record) -> None:
        if self.max_prompt_tokens is None:
            return
        try:
            n = self.count_tokens(problem)
        except ValueError as e:  # e.g. a text-only model's tokenizer given a problem with images
            raise DatasetError(f"{where(path, rec)}: {e}") from None
        if n > self.max_prompt_tokens:
            field = "messages" if self.cols.get("messages") else "prompt"
            raise RowError(field, self.cols[field], f"{n} tokens; at most {self.max_prompt_tokens} fit (the "
                           "model's context minus the generation budget)")

    def report(self) -> dict[str, Any]:
        """Counts for logging: rows skipped per file, the first few reasons, and all kept reasons
        (`errors`, at most 100) for the run's report."""
        out = {"skipped": dict(self.skipped), "skipped_total": sum(self.skipped.values()),
               "first_errors": self.errors[:5], "errors": list(self.errors)}
        if self.images.read:
            out["images"] = self.images.counts()  # read, resized, converted {source mode: n}
        return out


def _columns_used(cols: dict[str, Any]) -> list[str]:
    used = [c for f, c in cols.items() if f in FIELDS and f != "meta" and isinstance(c, str) and c]
    auto = cols["images"] if isinstance(cols.get("images"), tuple) else ()
    return used + list(auto) + list((cols.get("meta") or {}).values())


def _check_template(template: str) -> None:
    try:
        template.format_map(_AnyKey())
    except (ValueError, IndexError) as e:
        raise DatasetError(f"template {template!r} is not a valid format string ({e}); write literal braces "
                           f"as {{{{ and }}}}") from None
    if "{prompt}" not in template:
        raise DatasetError(f"template {template!r} has no {{prompt}} placeholder")


class _AnyKey(dict):
    def __missing__(self, key):
        return ""


SUFFIXES = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".parquet": "parquet", ".pq": "parquet",
            ".csv": "csv", ".tsv": "tsv"}


def detect_format(path: str) -> str:
    """Format by suffix (.gz allowed for jsonl/csv); a folder is a `datasets.save_to_disk` folder."""
    base = path.split("#", 1)[0]
    p = Path(base)
    if p.is_dir():
        return "hf_disk"
    name = p.name[:-3] if p.name.endswith(".gz") else p.name
    fmt = SUFFIXES.get(Path(name).suffix.lower())
    if fmt is None:
        if not p.exists():
            raise DatasetError(f"{base}: no such file or folder")
        raise DatasetError(f"{base}: cannot tell the format from the name; set format to one of "
                           f"{', '.join(READERS.names()) or ', '.join(sorted(set(SUFFIXES.values())))}")
    return fmt


__all__ = ["DatasetTask", "DatasetError", "READERS", "Record", "BadRow", "row_to_problem", "normalize_columns",
           "detect_format"]
