"""Preference rows for the "dataset" task, in TRL's preference formats
(https://huggingface.co/docs/trl/dataset_formats).

A row with `chosen` and `rejected` becomes a `Problem` whose `demo` is the chosen text and
whose `meta["rejected"]` is the rejected text; `answer` comes from the answer column when
the row has one, else "" (the task's verifier still applies). Three layouts:

    standard        {"prompt": "text", "chosen": "text", "rejected": "text"}
    conversational  {"prompt": [{"role": "user", "content": ...}, ...],
                     "chosen": [{"role": "assistant", "content": ...}], "rejected": [...]}
    implicit prompt {"chosen": [user, ..., assistant], "rejected": [user, ..., assistant]}

The prompt and the completions are read independently, so a text prompt with message
completions (or the reverse) is fine. A prompt given as messages is read like a `messages`
row (roles system/user/assistant, ending with a user turn; the template fills that turn)
and kept in `meta["messages"]`. A completion given as messages is exactly one assistant
message: more than one is an error, not joined (where would a second assistant turn start
without a user turn between them?). An implicit prompt is the turns chosen and rejected
share, all but the last, which must end with a user turn; the last message of each is the
completion. Implicit prompts are read from conversations only: text rows without a prompt
column are an error (TRL splits them at the longest common character prefix, which can cut
a word).

Columns: `chosen` and `rejected` are mapped together or not at all. Left unmapped, they are
read from columns named `chosen` and `rejected` in the rows that have them (so a plain TRL
file needs only `path:`); rows without either are ordinary rows. Mapping `demo` turns these
defaults off; `{chosen: null, rejected: null}` too.

Row errors name the field (`prompt`, `chosen` or `rejected`): a missing or null value, a
wrong type or role, non-string content, an empty completion, and identical chosen and
rejected texts (after stripping whitespace), which carry no preference.
"""

from __future__ import annotations

from typing import Any

from rftkit.tasks.dataset_task import DatasetError, RowError, _fill, _get, _messages, _text, chat_prompt

Messages = list[dict[str, str]]


def check_pair_columns(cols: dict[str, Any], given: set[str]) -> None:
    """Column config: chosen and rejected are mapped together; a recipe's `demo` mapping turns their
    defaults off (the recipe says where demos come from), and with chosen mapped it is an error."""
    named = [f for f in ("chosen", "rejected") if f in given]
    if len(named) == 1:
        other = "rejected" if named == ["chosen"] else "chosen"
        raise DatasetError(f"columns: `{named[0]}` is mapped without `{other}`; a preference pair needs both "
                           f"(map `{other}` too, or neither to read columns named chosen/rejected)")
    if bool(cols["chosen"]) != bool(cols["rejected"]):
        raise DatasetError("columns: `chosen` and `rejected` must both name columns, or both be null")
    if "demo" in given:
        if named and cols["chosen"] and cols["demo"]:
            raise DatasetError("columns: `demo` and `chosen` both give the demonstration (a preference row's "
                               "demo is its chosen text); map one of them")
        if not named:
            cols["chosen"] = cols["rejected"] = None


def is_preference(rec: dict[str, Any], cols: dict[str, Any]) -> bool:
    """A row is a preference pair when the recipe maps chosen/rejected, or when they are left to
    their default names and the row has either column (a row with one of them is then an error)."""
    if not cols.get("chosen"):
        return False
    if "chosen" not in cols["defaults"]:
        return True
    return cols["chosen"] in rec or cols["rejected"] in rec


def preference_parts(rec: dict[str, Any], cols: dict[str, Any],
                     template: str | None) -> tuple[str, Messages | None, str, str]:
    """(prompt text, prompt turns or None, chosen text, rejected text) of one row; raises RowError."""
    chosen, rejected = _get(rec, cols, "chosen"), _get(rec, cols, "rejected")
    field = "messages" if cols.get("messages") else "prompt"
    if field == "prompt" and "prompt" in cols["defaults"] and cols["prompt"] not in rec:
        return _implicit(rec, cols, template, chosen, rejected)
    value, col = _get(rec, cols, field), cols[field]
    if field == "messages" or isinstance(value, list):
        prompt, msgs = chat_prompt(_messages(value, col, field), rec, template, field, col)
    else:
        prompt, msgs = _text(value, field, col), None
        prompt = _fill(template, rec, prompt) if template else prompt
    return prompt, msgs, *_pair(chosen, rejected, cols)


def _pair(chosen: Any, rejected: Any, cols: dict[str, Any]) -> tuple[str, str]:
    c = _completion(chosen, "chosen", cols["chosen"])
    r = _completion(rejected, "rejected", cols["rejected"])
    if c.strip() == r.strip():
        raise RowError("rejected", cols["rejected"], "identical chosen and rejected carry no preference")
    return c, r


def _completion(value: Any, field: str, col: str) -> str:
    """A completion: a string, or a list of exactly one assistant message (its content)."""
    if value is None:
        raise RowError(field, col, "missing value (null)")
    if isinstance(value, list):
        msgs = _messages(value, col, field)
        bad = next((i for i, m in enumerate(msgs) if m["role"] != "assistant"), None)
        if bad is not None:
            raise RowError(field, col, f"message {bad} has role '{msgs[bad]['role']}'; a completion is one "
                           "assistant message")
        if len(msgs) != 1:
            raise RowError(field, col, f"{len(msgs)} assistant messages; a completion is exactly one (merge them)")
        value = msgs[0]["content"]
    elif not isinstance(value, str):
        raise RowError(field, col, f"expected a string or a list of one assistant message, got "
                       f"{type(value).__name__} {str(value)[:60]!r}")
    return _text(value, field, col)


def _implicit(rec: dict[str, Any], cols: dict[str, Any], template: str | None, chosen: Any,
              rejected: Any) -> tuple[str, Messages, str, str]:
    """TRL's implicit prompt: chosen and rejected are whole conversations sharing their prompt turns."""
    if not (isinstance(chosen, list) and isinstance(rejected, list)):
        have = ", ".join(map(str, list(rec)[:12]))
        raise RowError("prompt", cols["prompt"], f"missing column '{cols['prompt']}' (the row has: {have}); "
                       "an implicit prompt is read only from chosen/rejected conversations: split the prompt "
                       "out into a `prompt` column")
    c, r = _messages(chosen, cols["chosen"], "chosen"), _messages(rejected, cols["rejected"], "rejected")
    if c[:-1] != r[:-1]:
        raise RowError("rejected", cols["rejected"], "its turns before the last differ from chosen's; an "
                       "implicit prompt is the turns both share (all but the last): split the prompt out "
                       "into a `prompt` column")
    for field, msgs in (("chosen", c), ("rejected", r)):
        if msgs[-1]["role"] != "assistant":
            raise RowError(field, cols[field], f"the last message (the completion) has role "
                           f"'{msgs[-1]['role']}'; it must be an assistant message")
    if len(c) < 2 or c[-2]["role"] != "user":
        raise RowError("chosen", cols["chosen"], "an implicit prompt (the turns before the last message) "
                       "must end with a user message")
    prompt, msgs = chat_prompt(c[:-1], rec, template, "chosen", cols["chosen"])
    return prompt, msgs, *_pair(c[-1:], r[-1:], cols)
