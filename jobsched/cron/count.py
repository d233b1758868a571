"""Count a cron expression's occurrences in a range without visiting them (pure; no I/O).

``CronExpr.count_between`` is exactly the number of instants that iterating
``next_after`` would return in the range, at a cost that does not grow with that number:

* a day whose zone offset does not change (a "clean" day) and whose date matches has
  exactly |hours| x |minute-seconds| occurrences, whatever its offset;
* matching days are counted with calendar arithmetic: a year's count depends only on
  whether it is leap and on the weekday of its 1 January (14 kinds), and the 400-year
  Gregorian cycle (146,097 days, whole weeks) repeats, so the days of any span of
  years are two lookups in a 401-entry prefix table;
* the days that hold a transition (``Zone.transitions`` finds them) are counted
  exactly, stretch by stretch, with the DST rules of expr.py, and so are the few days
  at each end of the range, where only part of a day may be inside. Those end days
  read their offsets with ``Zone.day`` as next_after does; the days between read
  them from the change list, which agrees under the same no-cancelling assumption.

One instant can come from two neighbouring transition days: a fixed-time job's run at
the end of a gap that crosses midnight. Such instants are always transition instants
("special"); each is counted for the first day that produces it.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterator, Sequence
from datetime import date
from itertools import accumulate

from jobsched.cron.days import (
    EPOCH_ORDINAL,
    FIRST_DAY,
    LAST_DAY,
    MONTH_LENGTHS,
    month_info,
)
from jobsched.cron.parse import CronSpec, bits
from jobsched.cron.tz import (
    CYCLE_DAYS,
    DAY,
    MAX_OFFSET,
    PERIODIC_DAY,
    DayOffsets,
    Segments,
    Zone,
    day_segments,
)

_HOUR = 3600
# Kind of each year 1..400 of the Gregorian cycle: leap * 7 + weekday of 1 January.
_YEAR_KINDS = tuple(
    (y % 4 == 0 and (y % 100 != 0 or y % 400 == 0)) * 7 + date(y, 1, 1).toordinal() % 7
    for y in range(1, 401)
)
# Days in the year before each month's 1st, in a common year.
_BEFORE_MONTH = tuple(sum(MONTH_LENGTHS[1:m]) for m in range(13))
# Wider than any range count() is given: "every instant of the day".
_ALL = (-(1 << 62), 1 << 62)


class Counter:
    """Counts one expression's occurrences; built from the parts of a CronExpr."""

    __slots__ = (
        "_cycle",
        "_cycle_days",
        "_days_of",
        "_fixed",
        "_hours",
        "_months",
        "_msecs",
        "_per_day",
        "_prefix",
        "_zone",
    )

    def __init__(
        self,
        spec: CronSpec,
        msecs: Sequence[int],
        zone: Zone,
        days_of: Callable[[int], tuple[int, ...]],
    ) -> None:
        self._fixed = spec.fixed_time
        self._hours = spec.hours  # bit h set: hour h matches
        self._months = bits(spec.months)
        self._msecs = msecs  # matching seconds into the hour, ascending
        self._zone = zone
        self._days_of = days_of  # month key (length * 7 + weekday of the 1st) -> days
        self._per_day = spec.hours.bit_count() * len(msecs)
        self._prefix: list[int] = []
        # Transition days of the 400-year cycle from PERIODIC_DAY, and their running extra.
        self._cycle: list[int] = []
        self._cycle_days: list[int] = []

    def count(self, a: int, b: int) -> int:
        """Occurrences u (epoch seconds) with a <= u <= b."""
        # A day's instants lie in (day start - MAX_OFFSET, day end + MAX_OFFSET]: only
        # the days first..last can have some in [a, b], and inner..inner_end all of them.
        first = max((a - MAX_OFFSET) // DAY - 1, FIRST_DAY)
        last = min((b + MAX_OFFSET) // DAY + 1, LAST_DAY)
        inner = max(-((-a - MAX_OFFSET) // DAY), first)
        inner_end = min((b - MAX_OFFSET) // DAY - 1, last)
        if inner > inner_end:
            return self._walk(first, last, a, b)
        n = self._walk(first, inner - 1, a, b) + self._walk(inner_end + 1, last, a, b)
        n += self._per_day * (self._days_upto(inner_end) - self._days_upto(inner - 1))
        return n + self._transition_extra(inner, inner_end)

    def _walk(self, first: int, last: int, a: int, b: int) -> int:
        return sum(self._day(dayno, a, b) for dayno in range(first, last + 1))

    # -- days -------------------------------------------------------------------

    def _matches(self, dayno: int) -> bool:
        when = date.fromordinal(dayno + EPOCH_ORDINAL)
        if when.month not in self._months:
            return False
        return when.day in self._days_of(month_info(when.year, when.month)[1])

    def _days_upto(self, dayno: int) -> int:
        """Matching days from 0001-01-01 up to and including `dayno`."""
        when = date.fromordinal(dayno + EPOCH_ORDINAL)
        year, month = when.year, when.month
        prefix = self._prefix or self._fill_prefix()
        cycles, rest = divmod(year - 1, 400)
        n = cycles * prefix[400] + prefix[rest]
        for m in self._months:
            if m > month:
                break
            days = self._days_of(month_info(year, m)[1])
            n += len(days) if m < month else bisect_right(days, when.day)
        return n

    def _fill_prefix(self) -> list[int]:
        """Matching days in years 1..k of the 400-year cycle, for k = 0..400."""
        kinds = [self._year_days(leap, jan1) for leap in (0, 1) for jan1 in range(7)]
        prefix = [0]
        for kind in _YEAR_KINDS:
            prefix.append(prefix[-1] + kinds[kind])
        self._prefix = prefix
        return prefix

    def _year_days(self, leap: int, jan1: int) -> int:
        n = 0
        for m in self._months:
            length = MONTH_LENGTHS[m] + (leap if m == 2 else 0)
            first = (jan1 + _BEFORE_MONTH[m] + (leap if m > 2 else 0)) % 7
            n += len(self._days_of(length * 7 + first))
        return n

    # -- days that hold a transition ---------------------------------------------

    def _transition_extra(self, first: int, last: int) -> int:
        """What the days first..last that hold a transition have beyond a clean day's count."""
        if last - first < CYCLE_DAYS or last < PERIODIC_DAY + CYCLE_DAYS:
            return sum(extra for _, extra in self._transition_days(first, last))
        # From 2400 on they repeat every 400 years: whole cycles come from one table.
        n = 0
        if first < PERIODIC_DAY:
            n = sum(extra for _, extra in self._transition_days(first, PERIODIC_DAY - 1))
            first = PERIODIC_DAY
        return n + self._cycle_upto(last) - self._cycle_upto(first - 1)

    def _cycle_upto(self, dayno: int) -> int:
        """The extra of the transition days from PERIODIC_DAY up to `dayno` (>= it - 1)."""
        if not self._cycle:
            found = list(self._transition_days(PERIODIC_DAY, PERIODIC_DAY + CYCLE_DAYS - 1))
            self._cycle_days = [d for d, _ in found]
            self._cycle = list(accumulate((extra for _, extra in found), initial=0))
        cycles, rest = divmod(dayno + 1 - PERIODIC_DAY, CYCLE_DAYS)
        inside = bisect_left(self._cycle_days, PERIODIC_DAY + rest)
        return cycles * self._cycle[-1] + self._cycle[inside]

    def _transition_days(self, first: int, last: int) -> Iterator[tuple[int, int]]:
        """(day, its count - a clean day's) for the matching days in first..last whose
        offset changes, ascending; their segments come from Zone.transitions."""
        changes = self._zone.transitions(first - 2, last + 2)
        seen = first - 1
        for i, (u, _, _) in enumerate(changes):
            # Days whose probe window (start - MAX_OFFSET, end + MAX_OFFSET] holds u.
            lo = max(-((DAY + MAX_OFFSET - u) // DAY), seen + 1)
            for dayno in range(lo, min((u + MAX_OFFSET - 1) // DAY, last) + 1):
                seen = dayno
                segs = day_segments(changes, dayno, i) if self._matches(dayno) else None
                if segs is None:
                    continue
                got, special = self._transition_day(dayno, segs, *_ALL)
                if special and self._matches(dayno - 1):
                    before = day_segments(changes, dayno - 1, i)
                    if before is not None:
                        special -= self._transition_day(dayno - 1, before, *_ALL)[1]
                yield dayno, got + len(special) - self._per_day

    def _day(self, dayno: int, a: int, b: int) -> int:
        """The day's occurrences in [a, b], less those the day before already has."""
        if not self._matches(dayno):
            return 0
        offs = self._zone.day(dayno)
        if isinstance(offs, int):
            base = dayno * DAY - offs
            return self._count_sods(a - base, b + 1 - base)
        n, special = self._transition_day(dayno, offs, a, b)
        if special:
            special -= self._specials(dayno - 1)
        return n + len(special)

    def _specials(self, dayno: int) -> set[int]:
        if dayno < FIRST_DAY or not self._matches(dayno):
            return set()
        offs: DayOffsets = self._zone.day(dayno)
        return set() if isinstance(offs, int) else self._transition_day(dayno, offs, *_ALL)[1]

    # -- within a day -----------------------------------------------------------

    def _transition_day(self, dayno: int, segs: Segments, a: int, b: int) -> tuple[int, set[int]]:
        """Occurrences in [a, b] of a day whose offset changes, as expr._transition_day
        finds them: (how many are not transition instants, the set of those that are)."""
        ld = dayno * DAY
        end = ld + DAY
        n, special, high = 0, set(), ld
        for i, (start, off) in enumerate(segs):
            w_lo = max(start + off, ld)
            w_hi = end if i + 1 == len(segs) else min(segs[i + 1][0] + off, end)
            if self._fixed:
                # Gap: one run at its end; repeat: only the first pass (expr.py).
                w_lo = min(w_lo, end)
                if w_lo > high and self._count_sods(high - ld, w_lo - ld) and a <= start <= b:
                    special.add(start)
                w_lo = max(w_lo, high)
                high = max(high, w_hi)
            # Wall times [w_lo, w_hi) are the instants wall - off; keep those in [a, b].
            lo = max(w_lo, a + off) - ld
            hi = min(w_hi, b + 1 + off) - ld
            n += self._count_sods(lo, hi)
            at = start + off - ld  # the wall time of the stretch's first instant
            if lo <= at < hi and self._count_sods(at, at + 1):
                n -= 1
                special.add(start)
        return n, special

    def _count_sods(self, lo: int, hi: int) -> int:
        """Matching seconds of the day in [lo, hi)."""
        lo, hi = max(lo, 0), min(hi, DAY)
        if lo >= hi:
            return 0
        msecs, hours = self._msecs, self._hours
        h1, r1 = divmod(lo, _HOUR)
        h2, r2 = divmod(hi, _HOUR)
        if h1 == h2:
            return bisect_left(msecs, r2) - bisect_left(msecs, r1) if hours >> h1 & 1 else 0
        n = len(msecs) - bisect_left(msecs, r1) if hours >> h1 & 1 else 0
        between = (hours >> (h1 + 1)) & ((1 << (h2 - h1 - 1)) - 1)
        n += between.bit_count() * len(msecs)
        if hours >> h2 & 1:  # h2 == 24 (hi is the day's end) is never set
            n += bisect_left(msecs, r2)
        return n
