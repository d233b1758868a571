"""Cron expressions: parse, and find occurrences as UTC epoch milliseconds (pure; no I/O).

Semantics are Debian cron's (SPEC section 4); see docs/cron.md. The search walks
local calendar days that match the date fields (cron_days), turns each day's
matching wall times into instants with the zone's offsets for that day (cron_tz),
and applies Debian's DST rules where a day holds a transition:

* a fixed-time job (seconds, minute and hour fields do not start with '*') whose
  wall time falls in a skipped gap runs once, at the first instant after the gap;
  in a repeated stretch it runs once, on the first pass;
* any other job runs at every instant whose wall time matches: never in a gap,
  twice in a repeated stretch.

Every search is bounded: the calendar repeats every 400 years and a valid
expression's dates recur within ~40, so after 200 years without an occurrence we stop.
``count_between`` counts occurrences without visiting them (cron/count.py).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator
from datetime import date
from functools import lru_cache

from jobsched.cron.count import Counter
from jobsched.cron.days import EPOCH_ORDINAL as _EPOCH_ORDINAL
from jobsched.cron.days import FIRST_DAY as _FIRST_DAY
from jobsched.cron.days import LAST_DAY as _LAST_DAY
from jobsched.cron.days import check_can_fire, month_days
from jobsched.cron.days import month_info as _month_info
from jobsched.cron.parse import CronError, CronSpec, bits, parse_spec
from jobsched.cron.tz import DAY, MAX_OFFSET, U_HI, U_LO, DayOffsets, Zone, get_zone
from jobsched.errors import Malformed

__all__ = ["CronError", "CronExpr"]

# Longest search without an occurrence: 200 years plus slack (SPEC: every search
# looks at least 200 years ahead). A valid expression's dates recur at most ~40
# years apart (Feb 29 on a given weekday), so only DST can exhaust this: a job
# that is not fixed-time and whose wall times all fall in gaps.
_GIVE_UP_DAYS = 200 * 366


class CronExpr:
    """A parsed cron expression bound to an IANA time zone. Immutable; safe to share."""

    __slots__ = (
        "_counter",
        "_hours",
        "_mdays",
        "_months",
        "_msecs",
        "_spec",
        "_zone",
        "text",
        "tz",
    )

    text: str
    tz: str

    def __init__(self, text: str, tz: str, spec: CronSpec, zone: Zone) -> None:
        self.text = text
        self.tz = tz
        self._spec = spec
        self._zone = zone
        self._hours = bits(spec.hours)
        self._months = bits(spec.months)
        # Seconds into the hour that match (minute * 60 + second), ascending.
        self._msecs = tuple(m * 60 + s for m in bits(spec.minutes) for s in bits(spec.seconds))
        # Matching days per (month length, weekday of the 1st), filled lazily.
        self._mdays: list[tuple[int, ...] | None] = [None] * (32 * 7)
        self._counter: Counter | None = None

    @classmethod
    def parse(cls, text: str, tz: str = "UTC") -> CronExpr:
        """Parse `text` for zone `tz`; CronError if malformed or never firing."""
        if not isinstance(tz, str):
            raise Malformed("timezone", "the time zone must be a string")
        if not isinstance(text, str):
            raise CronError("cron", "the expression must be a string")
        return _parse_cached(text, tz)

    def __repr__(self) -> str:
        return f"CronExpr.parse({self.text!r}, {self.tz!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, CronExpr):
            return NotImplemented
        return (self.text, self.tz) == (other.text, other.tz)

    def __hash__(self) -> int:
        return hash((self.text, self.tz))

    def next_after(self, ms: int) -> int | None:
        """First occurrence strictly after `ms`, in epoch ms; None if none before 9999-12-30."""
        u0 = ms // 1000 + 1
        if u0 > U_HI:
            return None
        u0 = max(u0, U_LO)
        zone = self._zone
        start_day = (u0 + zone.offset(u0)) // DAY
        # Fast path while days are clean (one offset): such a day's instants cannot
        # interleave with other days', so the first day with an instant >= u0 wins.
        for dayno in self._days_from(max(start_day - 1, _FIRST_DAY)):
            offs = zone.day(dayno)
            if not isinstance(offs, int) or dayno > _LAST_DAY:
                break
            if dayno - start_day > _GIVE_UP_DAYS:
                return None
            base = dayno * DAY - offs
            sod = self._first_sod(max(0, u0 - base))
            if sod is not None:
                return (base + sod) * 1000
        for u in self._instants(u0):
            return u * 1000
        return None

    def iter_after(self, ms: int) -> Iterator[int]:
        """Successive occurrences strictly after `ms`, in epoch ms."""
        for u in self._instants(ms // 1000 + 1):
            yield u * 1000

    def count_between(self, after_ms: int, upto_ms: int) -> int:
        """How many occurrences t have after_ms < t <= upto_ms.

        Exactly what iterating next_after from `after_ms` counts, at a cost that does
        not grow with the count (cron/count.py); 0 when upto_ms <= after_ms.
        """
        a = max(after_ms // 1000 + 1, U_LO)
        b = upto_ms // 1000
        if upto_ms <= after_ms or a > U_HI:
            return 0
        n = 0
        if b >= U_HI:
            # next_after stops after the first occurrence at or beyond U_HI.
            last = self.next_after((U_HI - 1) * 1000)
            n = int(last is not None and last <= upto_ms)
            b = U_HI - 1
        if a > b:
            return n
        counter = self._counter
        if counter is None:
            counter = self._counter = Counter(self._spec, self._msecs, self._zone, self._days)
        return n + counter.count(a, b)

    # -- days ---------------------------------------------------------------

    def _month(self, key: int) -> tuple[int, ...]:
        got = self._mdays[key] = month_days(self._spec, key // 7, key % 7)
        return got

    def _days(self, key: int) -> tuple[int, ...]:
        """Matching days of a month whose key is length * 7 + weekday of the 1st."""
        got = self._mdays[key]
        return self._month(key) if got is None else got

    def _days_from(self, dayno: int) -> Iterator[int]:
        """Matching local days (days since 1970-01-01) from `dayno` on, up to 9999."""
        start = date.fromordinal(dayno + _EPOCH_ORDINAL)
        year, month0, day0 = start.year, start.month, start.day
        months, mdays = self._months, self._mdays
        while year <= 9999:
            for month in months:
                if month < month0:
                    continue
                base, key = _month_info(year, month)
                days = mdays[key]
                if days is None:
                    days = self._month(key)
                low = day0 if month == month0 else 0
                for d in days:
                    if d >= low:
                        yield base + d
            month0 = 0
            year += 1

    # -- times of day ---------------------------------------------------------

    def _sods(self, lo: int, hi: int) -> list[int]:
        """Matching seconds-of-day in [lo, hi), ascending."""
        if lo >= hi:
            return []
        hours, msecs = self._hours, self._msecs
        out: list[int] = []
        last_h = (hi - 1) // 3600
        for i in range(bisect_left(hours, lo // 3600), len(hours)):
            h = hours[i]
            if h > last_h:
                break
            hb = h * 3600
            if hb >= lo and hb + 3600 <= hi:
                out.extend([hb + x for x in msecs])
            else:
                out.extend([hb + x for x in msecs if lo <= hb + x < hi])
        return out

    def _first_sod(self, lo: int) -> int | None:
        """The first matching second-of-day >= lo, if any today."""
        hours, msecs = self._hours, self._msecs
        h = lo // 3600
        i = bisect_left(hours, h)
        if i < len(hours) and hours[i] == h:
            j = bisect_left(msecs, lo - h * 3600)
            if j < len(msecs):
                return h * 3600 + msecs[j]
            i += 1
        return hours[i] * 3600 + msecs[0] if i < len(hours) else None

    def _any_sod(self, lo: int, hi: int) -> bool:
        sod = self._first_sod(lo)
        return sod is not None and sod < hi

    # -- instants -------------------------------------------------------------

    def _day_instants(self, dayno: int, offs: DayOffsets, after: int) -> list[int]:
        """The day's occurrences (epoch seconds) that are > `after`, ascending."""
        ld = dayno * DAY
        if isinstance(offs, int):
            base = ld - offs
            return [base + s for s in self._sods(max(0, after + 1 - base), DAY)]
        return [u for u in self._transition_day(ld, offs) if u > after]

    def _transition_day(self, ld: int, segs: tuple[tuple[int, int], ...]) -> list[int]:
        """Occurrences on a day whose offset changes; `ld` is its local midnight.

        Each segment of constant offset covers a stretch of wall time; we take the
        matching wall times of each stretch within the day. `high` is the wall time
        up to which a fixed-time job has been dealt with: a stretch that starts
        below it is a repeat (skip, Debian runs only the first pass); one that
        starts above it leaves a gap, and if a wall time in the gap matches, Debian
        runs the job once as soon as the gap ends, i.e. at the transition instant.
        """
        fixed = self._spec.fixed_time
        end_of_day = ld + DAY
        out: list[int] = []
        high = ld
        for i, (start, off) in enumerate(segs):
            stop = segs[i + 1][0] if i + 1 < len(segs) else None
            w_lo = max(start + off, ld)
            w_hi = end_of_day if stop is None else min(stop + off, end_of_day)
            if fixed:
                w_lo = min(w_lo, end_of_day)
                if w_lo > high and self._any_sod(high - ld, w_lo - ld):
                    out.append(start)
                w_lo = max(w_lo, high)
                high = max(high, w_hi)
            out.extend(ld + s - off for s in self._sods(w_lo - ld, w_hi - ld))
        # A gap's run and an occurrence at the gap's end may be the same instant.
        return sorted(set(out))

    def _instants(self, u0: int) -> Iterator[int]:
        """Occurrences >= u0 in epoch seconds, strictly increasing, bounded."""
        if u0 > U_HI:
            return
        zone = self._zone
        after = max(u0, U_LO) - 1
        start_day = (after + 1 + zone.offset(after + 1)) // DAY
        # A fall-back that crosses midnight can put the previous day's repeated
        # wall times after u0, so start one day early; `after` filters the rest.
        day_hit = start_day
        pending: list[int] = []
        for dayno in self._days_from(max(start_day - 1, _FIRST_DAY)):
            if dayno > _LAST_DAY or dayno - day_hit > _GIVE_UP_DAYS:
                break
            offs = zone.day(dayno)
            got = self._day_instants(dayno, offs, after)
            if not got:
                continue
            day_hit = dayno
            if isinstance(offs, int) and not pending:
                yield from got  # a clean day cannot interleave with its neighbours
                after = got[-1]
                continue
            # Near transitions days can interleave: hold instants until no later
            # day can produce an earlier one (every instant of a day >= midnight - MAX).
            pending = sorted(set(pending + got))
            safe = bisect_left(pending, dayno * DAY + DAY - MAX_OFFSET)
            if isinstance(offs, int):
                safe = len(pending)
            yield from pending[:safe]
            if safe:
                after = pending[safe - 1]
            pending = pending[safe:]
        yield from pending


@lru_cache(maxsize=1024)
def _parse_cached(text: str, tz: str) -> CronExpr:
    zone = get_zone(tz)
    spec = parse_spec(text)
    check_can_fire(spec)
    return CronExpr(text, tz, spec, zone)
