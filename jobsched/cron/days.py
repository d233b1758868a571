"""Which days of a month a `CronSpec` allows (pure; no I/O).

A month's matching days depend only on its length (28-31) and the weekday of its
first day, so there are 28 possible answers per expression. expr.py caches them,
and `check_can_fire` tries every combination that the calendar can produce, which
makes "can this ever fire?" an exact, static question.
"""

from __future__ import annotations

from datetime import date
from functools import lru_cache

from jobsched.cron.parse import CronError, CronSpec, bits

MONTH_LENGTHS = (0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
EPOCH_ORDINAL = date(1970, 1, 1).toordinal()
# Local days (since 1970-01-01) that searches visit: local time of an instant between
# them stays within datetime's years 1..9999 for any UTC offset.
FIRST_DAY = date(1, 1, 2).toordinal() - EPOCH_ORDINAL
LAST_DAY = date(9999, 12, 30).toordinal() - EPOCH_ORDINAL
_MONTH_NAMES = [
    "-",
    "Jan",
    "Feb",
    "Mar",
    "Apr",
    "May",
    "Jun",
    "Jul",
    "Aug",
    "Sep",
    "Oct",
    "Nov",
    "Dec",
]


def _weekday(first: int, day: int) -> int:
    """Weekday (0 = Sunday) of `day` in a month whose 1st falls on `first`."""
    return (first + day - 1) % 7


def _nearest_weekday(n: int, length: int, first: int) -> int:
    """Quartz `nW`: the weekday nearest day n, never leaving the month."""
    wd = _weekday(first, n)
    if wd == 6:  # Saturday: the Friday before, unless that is last month
        return n - 1 if n > 1 else n + 2
    if wd == 0:  # Sunday: the Monday after, unless that is next month
        return n + 1 if n < length else n - 2
    return n


def _dom_mask(spec: CronSpec, length: int, first: int) -> int:
    mask = spec.dom & ((1 << (length + 1)) - 2)
    if spec.dom_last:
        mask |= 1 << length
    if spec.dom_last_weekday:
        wd = _weekday(first, length)
        mask |= 1 << (length - 2 if wd == 0 else length - 1 if wd == 6 else length)
    for n in spec.dom_nearest:
        if n <= length:  # nW does not fire in a month shorter than n
            mask |= 1 << _nearest_weekday(n, length, first)
    return mask


# Bits 0, 7, 14, 21, 28: a 7-bit pattern times this repeats it over five weeks.
_WEEKS = sum(1 << (7 * i) for i in range(5))


def _dow_mask(spec: CronSpec, length: int, first: int) -> int:
    month = (1 << (length + 1)) - 2
    dow = spec.dow
    if dow == 0x7F:  # every weekday: dL and d#n add nothing
        return month
    # Bit j of `rot`: the weekday of day j + 1, (first + j) % 7, is allowed.
    rot = ((dow >> first) | (dow << (7 - first))) & 0x7F
    mask = rot * _WEEKS << 1
    if spec.dow_last:
        for wd in bits(spec.dow_last):
            d1 = (wd - first) % 7 + 1
            mask |= 1 << (d1 + 7 * ((length - d1) // 7))
    for wd, nth in spec.dow_nth:
        mask |= 1 << ((wd - first) % 7 + 1 + 7 * (nth - 1))
    return mask & month


def month_mask(spec: CronSpec, length: int, first: int) -> int:
    """Mask of the days (bit d: day d) that match in a month of `length` days starting on
    `first` (weekday, 0 = Sunday)."""
    if spec.dom_nearest or spec.dom_last or spec.dom_last_weekday:
        dom = _dom_mask(spec, length, first)
    else:  # plain days, the usual case
        dom = spec.dom & ((1 << (length + 1)) - 2)
    dow = _dow_mask(spec, length, first)
    return dom & dow if spec.day_and else dom | dow


def month_length(year: int, month: int) -> int:
    if month == 2 and year % 4 == 0 and (year % 100 != 0 or year % 400 == 0):
        return 29
    return MONTH_LENGTHS[month]


@lru_cache(maxsize=4096)
def month_info(year: int, month: int) -> tuple[int, int]:
    """(day number of the month's 0th day, key = length * 7 + weekday of the 1st)."""
    first = date(year, month, 1).toordinal()
    return first - EPOCH_ORDINAL - 1, month_length(year, month) * 7 + first % 7


def _lengths(month: int) -> tuple[int, ...]:
    return (28, 29) if month == 2 else (MONTH_LENGTHS[month],)


def _quick_yes(spec: CronSpec) -> bool:
    """Cheap sufficient conditions for "some date matches" (the usual expressions)."""
    if not spec.day_and:
        # OR: a restricted day-of-week always matches some day of every month
        # (d#5 needs 29+ days, and a leap February has them).
        return True
    if spec.dom == 0xFFFFFFFE:  # day-of-month '*': every weekday pattern occurs
        return True
    if spec.dow == 0x7F and (spec.dom_last or spec.dom_last_weekday):
        return True
    # Plain days up to 28 exist in every month.
    return spec.dow == 0x7F and bool(spec.dom & 0x1FFFFFFE)


def check_can_fire(spec: CronSpec) -> None:
    """Raise CronError unless some real date matches the day and month fields.

    Every (month, length, weekday of the 1st) combination below occurs in the
    400-year Gregorian cycle, so this is exact: no match here means none ever.
    """
    if _quick_yes(spec):
        return
    months = bits(spec.months)
    for month in months:
        for length in _lengths(month):
            for first in range(7):
                if month_mask(spec, length, first):
                    return
    names = ", ".join(_MONTH_NAMES[m] for m in months)
    if spec.dow == 0x7F:
        days = ", ".join(str(d) for d in bits(spec.dom) + spec.dom_nearest)
        raise CronError(
            "cron.day_of_month",
            f"the expression can never fire: day {days} does not occur in {names}",
        )
    raise CronError(
        "cron.day_of_week",
        "the expression can never fire: no date in "
        f"{names} matches both day-of-month and day-of-week "
        "(both must match because one of them starts with '*')",
    )
