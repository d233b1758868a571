"""Readers of single request fields: integers, booleans, ids, states, names and
time zones. Each names the field and says what is wrong with it (``Malformed``);
``validate`` builds whole specs from them."""

from __future__ import annotations

import re
import sys
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo

from jobsched.errors import Malformed
from jobsched.jobs import JobState
from jobsched.timefmt import MAX_MS

JOB_ID = re.compile(r"[A-Za-z0-9._:-]{1,200}")
_STATES = {s.value: s for s in JobState}


def integer(value: Any, field: str, minimum: int, maximum: int = MAX_MS) -> int:
    """A JSON integer (an integral float like 5.0 too); booleans and strings are not."""
    if type(value) is int and minimum <= value <= maximum:
        return value  # the common case, answered before the checks below
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise Malformed(field, f"must be an integer, not {kind(value)}")
    if isinstance(value, float):
        if not value.is_integer():
            raise Malformed(field, f"must be a whole number, not {value!r}")
        value = int(value)
    if value < minimum:
        raise Malformed(field, f"must be at least {minimum}, not {_number(value)}")
    if value > maximum:
        raise Malformed(field, f"must be at most {maximum}, not {_number(value)}")
    return int(value)


def _number(value: int | float) -> str:
    """A number for an error text: a 400-digit one is not repeated whole."""
    shown = repr(value)
    if len(shown) <= 24:
        return shown
    return f"{shown[:12]}... ({len(shown.lstrip('-'))} digits)"


def boolean(value: Any, field: str) -> bool:
    if not isinstance(value, bool):
        raise Malformed(field, f"must be true or false, not {kind(value)}")
    return value


def job_id(body: dict[str, Any], field: str = "job_id") -> str:
    value = body.get(field)
    if value is None:
        raise Malformed(field, "is required")
    if not isinstance(value, str) or not JOB_ID.fullmatch(value):
        raise Malformed(field, "must be 1-200 characters of A-Z a-z 0-9 . _ : -")
    return value


def optional_job_id(body: dict[str, Any], field: str) -> str | None:
    return None if body.get(field) is None else job_id(body, field)


def state(value: Any) -> JobState | None:
    if value is None:
        return None
    found = _STATES.get(value) if isinstance(value, str) else None
    if found is None:
        raise Malformed("state", f"must be one of {', '.join(_STATES)}")
    return found


# Control characters and lone surrogates: no store can keep them in a name
# (PostgreSQL refuses NUL, UTF-8 has no surrogates), and no task needs them.
_BAD_TEXT = re.compile(r"[\x00-\x1f\x7f\ud800-\udfff]")


def text(value: Any, field: str, max_len: int = 255) -> str:
    if max_len == 255 and type(value) is str:
        known = _names.get(value)
        if known is not None:
            return known
    if not isinstance(value, str) or not value:
        raise Malformed(field, f"must be a non-empty string, not {kind(value)}")
    if len(value) > max_len:
        raise Malformed(field, f"must be at most {max_len} characters, not {len(value)}")
    if _BAD_TEXT.search(value):
        raise Malformed(field, "must not contain control characters or lone surrogates")
    # Interned: one string per task name, however many jobs carry it.
    name = sys.intern(value)
    if max_len == 255:
        if len(_names) >= 1024:
            _names.clear()
        _names[name] = name
    return name


# Names (up to 255 characters) already read and found good: most requests name
# one of a few tasks and queues, so reading one is a dict lookup.
_names: dict[str, str] = {}


@lru_cache(maxsize=256)
def _zone_ok(name: str) -> bool:
    try:
        ZoneInfo(name)
    except Exception:  # ValueError for bad keys, ZoneInfoNotFoundError, OSError
        return False
    return True


def timezone(value: Any) -> str:
    if value is None:
        return "UTC"
    if not isinstance(value, str):
        raise Malformed("timezone", f"must be an IANA time zone name, not {kind(value)}")
    if not value or len(value) > 64 or not _zone_ok(value):
        raise Malformed("timezone", f"unknown time zone {value[:64]!r}")
    return value


def kind(value: Any) -> str:
    """What a value is, for an error text."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, str):
        return "a string" if value else "an empty string"
    if isinstance(value, int | float):
        return _number(value)
    return "an array" if isinstance(value, list) else "an object"
