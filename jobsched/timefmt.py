"""Timestamps in and out. Inside jobsched a time is an int of UTC epoch milliseconds.

Out: ISO 8601 UTC with milliseconds and ``Z`` (``2024-01-15T09:00:00.000Z``),
always a four-digit year: ``format_ms`` never raises, and prints an instant
outside years 0001-9999 (which jobsched never stores) as the nearest end of
that range.
In: ISO 8601 with ``Z`` or an offset, with or without fractional seconds (no offset
means UTC), a bare date (midnight UTC), or an integer count of epoch milliseconds.
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime, timedelta

from jobsched.errors import Malformed

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# Every time we hand out must format as a four-digit year, so this is the range
# of instants jobsched accepts and computes with.
MIN_MS = -62135596800000  # 0001-01-01T00:00:00.000Z
MAX_MS = 253402300799999  # 9999-12-31T23:59:59.999Z
# The longest span between two such instants: no delay, interval or window
# longer than this can name a time jobsched can represent.
SPAN_MS = MAX_MS - MIN_MS

# fromisoformat (3.11) reads most of ISO 8601 but also lets through forms we do
# not promise (week dates, ordinal dates, hour-only "T09"); this pattern keeps
# the accepted language to what the docs say.
_ISO = re.compile(
    r"\d{4}-\d{2}-\d{2}"
    r"(?:[Tt ]\d{2}:\d{2}(?::\d{2}(?:[.,]\d{1,9})?)?(?:[Zz]|[+-]\d{2}(?::?\d{2})?)?)?"
)
_FRACTION = re.compile(r"[.,](\d+)")


def now_ms() -> int:
    """The wall clock, in UTC epoch milliseconds."""
    return time.time_ns() // 1_000_000


def parse_timestamp(value: object, field: str) -> int:
    """Read a timestamp field of a request; raise Malformed naming ``field``."""
    if isinstance(value, bool):
        raise Malformed(field, "must be an ISO 8601 timestamp or epoch milliseconds, not a boolean")
    if isinstance(value, int):
        ms = value
    elif isinstance(value, float):
        if not value.is_integer():
            raise Malformed(field, "epoch milliseconds must be a whole number")
        ms = int(value)
    elif isinstance(value, str):
        ms = _parse_iso(value, field)
    else:
        raise Malformed(field, "must be an ISO 8601 timestamp or epoch milliseconds")
    if not MIN_MS <= ms <= MAX_MS:
        raise Malformed(field, "is outside the years 0001 to 9999")
    return ms


def _parse_iso(text: str, field: str) -> int:
    if not _ISO.fullmatch(text):
        raise Malformed(field, f"{text[:64]!r} is not an ISO 8601 timestamp")
    # Python 3.11 reads at most microseconds; milliseconds are all we keep, so
    # longer fractions are cut before parsing rather than rejected.
    cut = _FRACTION.sub(lambda m: "." + (m.group(1) + "000000")[:6], text)
    if cut.endswith(("z", "Z")):
        cut = cut[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(cut)
    except ValueError as exc:
        raise Malformed(field, f"{text[:64]!r} is not a valid timestamp ({exc})") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    try:
        delta = parsed - EPOCH
    except OverflowError:
        raise Malformed(field, "is outside the years 0001 to 9999") from None
    return delta // timedelta(milliseconds=1)


_second_cache: dict[int, str] = {}


def format_ms(ms: int) -> str:
    """``2024-01-15T09:00:00.000Z`` for an epoch-milliseconds int.

    Outside years 0001-9999 it prints the nearest end of the range rather
    than raise: a value a store holds must always be readable (and what it
    prints can always be parsed back)."""
    if not MIN_MS <= ms <= MAX_MS:
        ms = MIN_MS if ms < MIN_MS else MAX_MS
    seconds, millis = divmod(ms, 1000)
    prefix = _second_cache.get(seconds)
    if prefix is None:
        # Replies in one batch mostly share their second, and formatting a
        # datetime is the slow part, so the last few prefixes are kept.
        # isoformat, not strftime: glibc's %Y drops the leading zeros of years before 1000.
        prefix = (EPOCH + timedelta(seconds=seconds)).isoformat()[:19]
        if len(_second_cache) > 4096:
            _second_cache.clear()
        _second_cache[seconds] = prefix
    return f"{prefix}.{millis:03d}Z"


def format_opt(ms: int | None) -> str | None:
    """format_ms, passing None through (a job object's optional times)."""
    return None if ms is None else format_ms(ms)
