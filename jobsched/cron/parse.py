"""Cron expression text -> a `CronSpec` of allowed values (pure; no I/O).

The grammar is Debian cron's (see SPEC section 4) plus the Quartz day extensions.
Every field becomes an int bitmask, so matching later is a shift and an AND.
Errors name the field (``cron.minute`` ...) and say what is wrong.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from jobsched.errors import Malformed


class CronError(Malformed):
    """A cron expression that cannot be parsed, or that can never fire."""


@dataclass(frozen=True, slots=True)
class _Field:
    name: str  # as it appears in errors: "cron.<name>"
    lo: int
    hi: int
    names: dict[str, int]
    full: int  # mask of every value lo..hi
    # Every plain numeral lo..hi and every name, to its value: the usual tokens are read
    # with one lookup (anything else, errors included, takes the general path).
    tokens: dict[str, int]


def _make_field(name: str, lo: int, hi: int, names: dict[str, int]) -> _Field:
    tokens = {str(v): v for v in range(lo, hi + 1)} | names
    return _Field(name, lo, hi, names, ((1 << (hi + 1)) - 1) ^ ((1 << lo) - 1), tokens)


_MONTH_NAMES = {
    n: i + 1
    for i, n in enumerate(
        ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"]
    )
}
_DAY_NAMES = {n: i for i, n in enumerate(["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"])}
SECOND = _make_field("second", 0, 59, {})
MINUTE = _make_field("minute", 0, 59, {})
HOUR = _make_field("hour", 0, 23, {})
DOM = _make_field("day_of_month", 1, 31, {})
MONTH = _make_field("month", 1, 12, _MONTH_NAMES)
DOW = _make_field("day_of_week", 0, 7, _DAY_NAMES)  # 7 is Sunday again, as in Debian

# Debian's crontab(5) shorthands. @hourly keeps a star in the hour field, so it is
# not a fixed-time job for the DST rules; the others are.
MACROS = {
    "@YEARLY": "0 0 1 1 *",
    "@ANNUALLY": "0 0 1 1 *",
    "@MONTHLY": "0 0 1 * *",
    "@WEEKLY": "0 0 * * 0",
    "@DAILY": "0 0 * * *",
    "@MIDNIGHT": "0 0 * * *",
    "@HOURLY": "0 * * * *",
}
_MAX_DIGITS = 4  # keeps int() cheap on hostile input; no field needs more
_NUMERALS = {str(i): i for i in range(1, 60)}  # the usual steps, read without int()


class CronSpec(NamedTuple):
    """Allowed values of every field. Day-of-week bits are 0-6 (7 folded into 0)."""

    seconds: int
    minutes: int
    hours: int
    dom: int  # plain days 1-31
    dom_last: bool  # L
    dom_last_weekday: bool  # LW
    dom_nearest: tuple[int, ...]  # n of every nW
    months: int
    dow: int  # plain weekdays
    dow_last: int  # weekdays d of every dL
    dow_nth: frozenset[tuple[int, int]]  # (weekday, n) of every d#n
    # Debian: when day-of-month or day-of-week starts with '*', a day must match
    # both; when both are restricted, it may match either.
    day_and: bool
    # Debian treats a job whose minute and hour fields do not start with '*' as
    # "fixed-time" and moves it across DST changes (see cron.py); we extend that
    # to the seconds field of six-field expressions.
    fixed_time: bool


def _bad(f: _Field, problem: str) -> CronError:
    return CronError(f"cron.{f.name}", problem)


def _number(tok: str, f: _Field, what: str = "value") -> int:
    if tok.isdigit():
        if len(tok) > _MAX_DIGITS:
            raise _bad(f, f"{what} {tok!r} is far too large")
        return int(tok)
    if tok == "":
        raise _bad(f, f"a {what} is missing")
    if f.names and tok in f.names:
        return f.names[tok]
    raise _bad(f, f"{what} {tok!r} is not a number" + (" or a name" if f.names else ""))


def _value(tok: str, f: _Field) -> int:
    v = f.tokens.get(tok)
    if v is not None:
        return v
    v = _number(tok, f)
    if not f.lo <= v <= f.hi:
        raise _bad(f, f"{tok!r} is out of range {f.lo}-{f.hi}")
    return v


def _step(tok: str, f: _Field) -> int:
    n = _NUMERALS.get(tok, 0)
    if n:
        return n
    n = _number(tok, f, "step")
    if tok in f.names or n < 1:
        raise _bad(f, f"step {tok!r} must be a positive number")
    return n


def _range_item(item: str, f: _Field) -> int:
    """`*`, `?`, `a`, `a-b`, each optionally `/n`; `a/n` means `a-max/n`."""
    body, slash, step_text = item.partition("/")
    step = _step(step_text, f) if slash else 1
    if body in ("*", "?"):
        lo, hi = f.lo, f.hi
    else:
        first, dash, last = body.partition("-")
        lo = _value(first, f)
        # Debian: `a-a/n` is the one-value range a..a; only a bare `a/n` runs to max.
        hi = _value(last, f) if dash else (f.hi if slash else lo)
        if hi < lo:
            raise _bad(f, f"range {body!r} runs backwards ({lo} > {hi})")
    return progression(lo, step, (hi - lo) // step + 1)


def progression(lo: int, step: int, n: int) -> int:
    """The mask of the n values lo, lo + step, ...: a few big-int operations, no loop."""
    # (2**(step*n) - 1) / (2**step - 1) is the sum of 2**(step*i) for i < n.
    return ((1 << (step * n)) - 1) // ((1 << step) - 1) << lo


def _field_mask(text: str, f: _Field) -> int:
    # The two most common fields, `*` and one small number, skip the general loop
    # (anything unusual, errors included, takes it).
    if text == "*":
        return f.full
    v = f.tokens.get(text)
    if v is not None:
        return 1 << v
    step = _NUMERALS.get(text[2:]) if text[:2] == "*/" else None
    if step is not None:
        return progression(f.lo, step, (f.hi - f.lo) // step + 1)
    mask = 0
    for item in text.split(","):
        v = f.tokens.get(item)
        if v is not None:  # the common case, kept cheap
            mask |= 1 << v
        elif item == "*":
            mask |= f.full
        else:
            try:
                mask |= _range_item(item, f)
            except CronError:
                if "#" in item or item[-1:] in ("L", "W"):
                    raise _bad(f, f"{item!r}: L, W and # are only for the day fields") from None
                raise
    return mask


@dataclass(slots=True)
class _DomParts:
    mask: int = 0
    last: bool = False
    last_weekday: bool = False
    nearest: tuple[int, ...] = ()


def _dom(text: str) -> _DomParts:
    out = _DomParts()
    for item in text.split(","):
        v = DOM.tokens.get(item)
        if v is not None:  # the common case, kept cheap
            out.mask |= 1 << v
        elif item == "L":
            out.last = True
        elif item == "LW":
            out.last_weekday = True
        elif item.endswith("W") and item[:-1].isdigit():
            out.nearest += (_value(item[:-1], DOM),)
        elif "L" in item or "W" in item or "#" in item:
            raise _bad(DOM, f"{item!r} is not understood: use L, LW or nW (n a day 1-31)")
        else:
            out.mask |= _range_item(item, DOM)
    return out


@dataclass(slots=True)
class _DowParts:
    mask: int = 0
    last: int = 0
    nth: frozenset[tuple[int, int]] = frozenset()


def _dow(text: str) -> _DowParts:
    out = _DowParts()
    for item in text.split(","):
        if "#" in item:
            day, _, nth_text = item.partition("#")
            nth = _number(nth_text, DOW, "occurrence")
            if not 1 <= nth <= 5:
                raise _bad(DOW, f"{item!r}: the occurrence after '#' must be 1-5")
            out.nth |= {(_value(day, DOW) % 7, nth)}
        elif item == "L":
            raise _bad(DOW, "'L' needs a weekday before it (dL: the last d of the month)")
        elif item.endswith("L"):
            out.last |= 1 << (_value(item[:-1], DOW) % 7)
        else:
            out.mask |= _range_item(item, DOW)
    if out.mask & (1 << 7):  # 7 is Sunday
        out.mask = (out.mask | 1) & 0x7F
    return out


_DOM_STAR = _DomParts(mask=DOM.full)
_DOW_STAR = _DowParts(mask=0x7F)


def _fields(text: str) -> list[str]:
    if not isinstance(text, str):
        raise CronError("cron", "the expression must be a string")
    if not text.isascii():
        raise CronError("cron", "the expression contains a non-ASCII character")
    parts = text.upper().split()
    if len(parts) == 5:
        parts.insert(0, "0")
        return parts
    if len(parts) == 1 and parts[0].startswith("@"):
        macro = MACROS.get(parts[0])
        if macro is None:
            known = " ".join(m.lower() for m in MACROS)
            raise CronError("cron", f"unknown macro {parts[0].lower()!r} (known: {known})")
        parts = macro.split()
    if len(parts) == 5:
        parts.insert(0, "0")
    elif len(parts) != 6:
        raise CronError(
            "cron",
            f"expected 5 fields (minute hour day-of-month month day-of-week) or 6 "
            f"(seconds first), got {len(parts)}",
        )
    return parts


def parse_spec(text: str) -> CronSpec:
    """Parse `text`; raise CronError naming the field and the reason."""
    sec, mnt, hr, dom_text, mon, dow_text = _fields(text)
    dom = _DOM_STAR if dom_text == "*" else _dom(dom_text)
    dow = _DOW_STAR if dow_text == "*" else _dow(dow_text)
    # Positional: a NamedTuple built from keywords costs noticeably more, and a new
    # expression is parsed on every cold start (see bench/cron_bench.py).
    return CronSpec(
        _field_mask(sec, SECOND),
        _field_mask(mnt, MINUTE),
        _field_mask(hr, HOUR),
        dom.mask,
        dom.last,
        dom.last_weekday,
        dom.nearest,
        _field_mask(mon, MONTH),
        dow.mask,
        dow.last,
        dow.nth,
        dom_text[0] in "*?" or dow_text[0] in "*?",
        sec[0] not in "*?" and mnt[0] not in "*?" and hr[0] not in "*?",
    )


# _BYTE_BITS[b]: the set bits of the byte b, ascending.
_BYTE_BITS = tuple(tuple(i for i in range(8) if b >> i & 1) for b in range(256))


def bits(mask: int) -> tuple[int, ...]:
    """The set bits of `mask` (>= 0), ascending."""
    if mask < 256:
        return _BYTE_BITS[mask]
    # Most fields are one range or step (`*`, `1-5`, `*/5`): their bits are an
    # arithmetic progression, found from the lowest and highest bit and the count.
    lo = (mask & -mask).bit_length() - 1
    top = mask.bit_length()
    n = mask.bit_count()
    if n == 1:
        return (lo,)
    step, rest = divmod(top - 1 - lo, n - 1)
    if not rest and progression(lo, step, n) == mask:
        return tuple(range(lo, top, step))
    out: list[int] = []
    base = 0
    while mask:
        byte = mask & 0xFF
        if byte:
            out.extend([base + i for i in _BYTE_BITS[byte]])
        mask >>= 8
        base += 8
    return tuple(out)


def lowest(mask: int) -> int:
    """The lowest set bit of `mask` (> 0)."""
    return (mask & -mask).bit_length() - 1
