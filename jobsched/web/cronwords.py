"""A cron expression in words, and its next occurrences with the UTC offset
changes marked, for the dashboard (``GET /v1/cron/explain``).

The expression is first parsed by ``CronExpr`` (so what is explained is
exactly what runs, and errors are the scheduler's own); the words come from
its fields' text: ``0 9 * * MON-FRI`` in Europe/London reads "At 09:00,
Monday through Friday, Europe/London". Forms with no short phrase fall back
to naming the field values ("at minutes 5, 35 past hours 1 through 3").
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from jobsched import validate
from jobsched.cron import CronExpr
from jobsched.cron.parse import MACROS
from jobsched.errors import JobschedError, Malformed
from jobsched.timefmt import format_ms

MAX_OCCURRENCES = 50
DAYS = ("Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
MONTHS = (
    "", "January", "February", "March", "April", "May", "June", "July",
    "August", "September", "October", "November", "December",
)  # fmt: skip
_DAY_NAMES = {d[:3].upper(): str(i) for i, d in enumerate(DAYS[:7])}
_MONTH_NAMES = {m[:3].upper(): str(i) for i, m in enumerate(MONTHS) if m}


def explain(text: str, tz: str, after_ms: int, n: int = 10) -> dict[str, Any]:
    """The explain route's answer: words and occurrences, or why it is invalid."""
    try:
        tz = validate.timezone(tz)
        expr = CronExpr.parse(text, tz)
    except JobschedError as exc:
        field = exc.field if isinstance(exc, Malformed) else None
        return {"valid": False, "field": field, "error": exc.text}
    return {
        "valid": True,
        "expr": text,
        "timezone": tz,
        "text": words(text, tz),
        "occurrences": occurrences(expr, after_ms, max(1, min(n, MAX_OCCURRENCES))),
    }


def occurrences(expr: CronExpr, after_ms: int, n: int) -> list[dict[str, Any]]:
    """The next ``n`` occurrences in the expression's zone and in UTC; where the
    zone's UTC offset differs from the previous one, ``change`` says how."""
    zone = ZoneInfo(expr.tz)
    before = _offset(zone, after_ms)
    out: list[dict[str, Any]] = []
    t = after_ms
    for _ in range(n):
        nxt = expr.next_after(t)
        if nxt is None:
            break
        local = datetime.fromtimestamp(nxt / 1000, UTC).astimezone(zone)
        offset = _offset(zone, nxt)
        change = None
        if offset != before:
            way = "clocks go forward" if _minutes(offset) > _minutes(before) else "clocks go back"
            change = f"UTC offset {before} -> {offset} ({way})"
        out.append(
            {
                "at": format_ms(nxt),
                "local": f"{local:%a %Y-%m-%d %H:%M:%S}",
                "offset": offset,
                "zone": local.tzname(),
                "change": change,
            }
        )
        before, t = offset, nxt
    return out


def _offset(zone: ZoneInfo, ms: int) -> str:
    text = f"{datetime.fromtimestamp(ms / 1000, UTC).astimezone(zone):%z}"
    return f"{text[:3]}:{text[3:]}"


def _minutes(offset: str) -> int:
    sign = -1 if offset.startswith("-") else 1
    return sign * (int(offset[1:3]) * 60 + int(offset[4:6]))


# -- words ------------------------------------------------------------------------


def words(text: str, tz: str) -> str:
    """``describe``, or the expression itself for a form it has no words for."""
    try:
        return describe(text, tz)
    except (ValueError, IndexError, KeyError):
        return f"cron {text.strip()}, {tz}"


def describe(text: str, tz: str) -> str:
    """Words for an expression ``CronExpr.parse`` accepted."""
    fields = MACROS.get(text.strip().upper(), text).split()
    second = fields.pop(0) if len(fields) == 6 else "0"
    minute, hour, dom, month, dow = (f.upper().replace("?", "*") for f in fields)
    parts = [_time(second.replace("?", "*"), minute, hour), _days(dom, dow), _months(month)]
    return ", ".join([p for p in parts if p] + [tz])


def _num(tok: str) -> bool:
    return tok.isdigit()


def _clock(h: str, m: str, s: str = "0") -> str:
    return f"{int(h):02d}:{int(m):02d}" + (f":{int(s):02d}" if int(s) else "")


def _time(second: str, minute: str, hour: str) -> str:
    hours, minutes = hour.split(","), minute.split(",")
    if _num(second) and all(map(_num, hours + minutes)) and len(hours) * len(minutes) <= 6:
        times = sorted(
            (int(h), int(m)) for h in hours for m in minutes
        )  # "0,30 9,17": every combination, in order
        return "At " + _and([_clock(str(h), str(m), second) for h, m in times])
    secs = "" if second == "0" else _every("second", second)
    if minute == "*" and hour == "*":
        return "Every second" if second == "*" else (secs or "Every minute")
    if minute == "*":
        what = "Every minute"
    elif minute.startswith("*/"):
        what = f"Every {int(minute[2:])} minutes"
    elif minute == "0" and second == "0":
        what = "At the start of every hour" if hour == "*" else "At minute 0"
    else:
        what = "At " + _list("minute", minute) + (" past every hour" if hour == "*" else "")
    if hour != "*":
        what += ", " + _hours(hour)
    return f"{secs}, {what[0].lower()}{what[1:]}" if secs else what


def _hours(hour: str) -> str:
    items = hour.split(",")
    if len(items) == 1 and "-" in hour and "/" not in hour:
        lo, hi = hour.split("-")
        return f"from {_clock(lo, '0')} through {_clock(hi, '59')}"
    if hour.startswith("*/"):
        return f"every {_ordinal(int(hour[2:]))} hour"
    return "during " + _list("hour", hour)


def _days(dom: str, dow: str) -> str:
    dom_star, dow_star = dom.startswith("*"), dow.startswith("*")
    if dom == "*" and dow == "*":
        return ""
    days = "" if dom == "*" else _dom(dom)
    weekdays = "" if dow == "*" else _dow(dow)
    if not days:
        return weekdays
    if not weekdays:
        return days
    if dom_star or dow_star:  # Debian: a field that starts with * narrows the other
        return f"{days}, if it is {weekdays.removeprefix('only on ')}"
    return f"{days} or {weekdays.removeprefix('only ')}"  # both restricted: either matches


def _dom(dom: str) -> str:
    out: list[str | None] = []
    for item in dom.split(","):
        if item == "L":
            out.append("the last day of the month")
        elif item == "LW":
            out.append("the last weekday of the month")
        elif item.endswith("W"):
            out.append(f"the weekday nearest day {int(item[:-1])} of the month")
        else:
            out.append(None)
    if all(o is None for o in out):
        if dom.startswith("*/"):
            return f"every {_ordinal(int(dom[2:]))} day of the month"
        return "on " + _list("day", dom) + " of the month"
    named = [o or f"day {item}" for o, item in zip(out, dom.split(","), strict=True)]
    return "on " + _and(named)


def _dow(dow: str) -> str:
    for name, value in _DAY_NAMES.items():
        dow = dow.replace(name, value)
    items = dow.split(",")
    out = []
    for item in items:
        if item.endswith("L") and item[:-1].isdigit():
            out.append(f"on the last {DAYS[int(item[:-1])]} of the month")
        elif "#" in item:
            day, nth = item.split("#")
            out.append(f"on the {_ordinal(int(nth))} {DAYS[int(day)]} of the month")
        elif "-" in item and "/" not in item:
            lo, hi = item.split("-")
            out.append(f"{DAYS[int(lo)]} through {DAYS[int(hi)]}")
        elif item.isdigit():
            out.append(DAYS[int(item)])
        else:
            return "on days of the week " + _list("", dow).strip()
    if len(out) == 1 and items[0].isdigit():
        return f"only on {out[0]}"
    return (
        _and(out)
        if any("through" in o or "of the month" in o for o in out)
        else ("only on " + _and(out))
    )


def _months(month: str) -> str:
    if month == "*":
        return ""
    for name, value in _MONTH_NAMES.items():
        month = month.replace(name, value)
    if month.startswith("*/"):
        return f"every {_ordinal(int(month[2:]))} month"
    out = []
    for item in month.split(","):
        if "-" in item and "/" not in item:
            lo, hi = item.split("-")
            out.append(f"{MONTHS[int(lo)]} through {MONTHS[int(hi)]}")
        elif item.isdigit():
            out.append(MONTHS[int(item)])
        else:
            return "in months " + _list("", month).strip()
    return "in " + _and(out) if len(out) > 1 or "through" not in out[0] else out[0]


def _every(unit: str, field: str) -> str:
    if field.startswith("*/"):
        return f"Every {int(field[2:])} {unit}s"
    return "At " + _list(unit, field)


def _list(unit: str, field: str) -> str:
    """A field's items in words: 'minutes 5, 35', 'hours 1 through 3'."""
    words = []
    for item in field.split(","):
        base, _, step = item.partition("/")
        if base == "*":
            base = "every value"
        elif "-" in base:
            lo, hi = base.split("-")
            base = f"{int(lo)} through {int(hi)}"
        words.append(f"every {_ordinal(int(step))} of {base}" if step else base)
    plural = len(words) > 1 or "through" in words[0] or "every" in words[0]
    return f"{unit}{'s' if plural and unit else ''} {_and(words)}".strip()


def _and(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _ordinal(n: int) -> str:
    if n == 1:
        return ""
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"
