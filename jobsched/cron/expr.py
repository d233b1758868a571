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
from jobsched.cron.days import check_can_fire, month_length, month_mask
from jobsched.cron.days import month_info as _month_info
from jobsched.cron.parse import CronError, CronSpec, bits, lowest, parse_spec
from jobsched.cron.tz import DAY, MAX_OFFSET, U_HI, U_LO, DayOffsets, Zone, get_zone
from jobsched.errors import Malformed

__all__ = ["CronError", "CronExpr"]

# Longest search without an occurrence: 200 years plus slack (SPEC: every search
# looks at least 200 years ahead). A valid expression's dates recur at most ~40
# years apart (Feb 29 on a given weekday), so only DST can exhaust this: a job
# that is not fixed-time and whose wall times all fall in gaps.
_GIVE_UP_DAYS = 200 * 366
_NO_DAY = _LAST_DAY + 1  # _next_day's answer when no date up to 9999 matches


class CronExpr:
    """A parsed cron expression bound to an IANA time zone. Immutable; safe to share."""

    __slots__ = (
        "_counter",
        "_dmasks",
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
        # Sorted value tables for iterating and counting, built by _tables() on first
        # use: next_after finds a first occurrence from the bit masks alone, so an
        # expression parsed for one next_after never pays for them.
        self._hours: tuple[int, ...] = ()
        self._months: tuple[int, ...] = ()
        self._msecs: tuple[int, ...] = ()  # minute * 60 + second that match, ascending
        # Matching days per month key (length * 7 + weekday of the 1st), filled lazily:
        # as masks (bit d: day d) and as ascending tuples.
        self._dmasks: dict[int, int] = {}
        self._mdays: dict[int, tuple[int, ...]] = {}
        self._counter: Counter | None = None

    def _tables(self) -> None:
        spec = self._spec
        self._hours = bits(spec.hours)
        self._months = bits(spec.months)
        minutes = bits(spec.minutes)
        if spec.seconds == 1:  # five fields: second 0
            self._msecs = tuple([m * 60 for m in minutes])
        else:
            self._msecs = tuple([m * 60 + s for m in minutes for s in bits(spec.seconds)])

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
        if u0 < U_LO:
            u0 = U_LO
        u = self._first_clean(u0)
        if u is None:
            u = next(self._instants(u0), None)
        return None if u is None else u * 1000

    def _first_clean(self, u0: int) -> int | None:
        """The first occurrence >= u0 when the days on the way are clean (one offset), from
        the bit masks alone (no tables); None to leave it to the walk (_instants): a day
        whose offset changes, the end of the calendar, or 200 years without a match.

        A clean day's instants cannot interleave with other days', so the first day with
        an instant >= u0 wins: the start day, else the next matching day (a clean day
        after the start day begins after u0, and every matching day has occurrences).
        """
        zone = self._zone
        fixed = zone.fixed
        if fixed is None:
            start_day = (u0 + zone.offset(u0)) // DAY
            # A fall-back that crosses midnight can put the previous day's repeated wall
            # times after u0; when the day before is clean, all its instants are before u0.
            if start_day > _FIRST_DAY and not isinstance(zone.day(start_day - 1), int):
                return None
            dayno = max(start_day, _FIRST_DAY)  # as _instants: no day before the first
        else:  # one offset forever (0): the day before ends before u0 >= U_LO
            start_day = dayno = (u0 + fixed) // DAY
        while True:
            dayno = self._next_day(dayno)
            offs = zone.day(dayno) if fixed is None else fixed
            if not isinstance(offs, int) or dayno > _LAST_DAY or dayno - start_day > _GIVE_UP_DAYS:
                return None
            base = dayno * DAY - offs
            sod = self._first_sod(u0 - base if u0 > base else 0)
            if sod is not None:
                return base + sod
            dayno += 1

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
            if not self._msecs:
                self._tables()
            counter = self._counter = Counter(self._spec, self._msecs, self._zone, self._days)
        return n + counter.count(a, b)

    # -- days ---------------------------------------------------------------

    def _day_mask(self, key: int) -> int:
        """Matching days (bit d: day d) of a month whose key is length * 7 + weekday of
        the 1st."""
        got = self._dmasks.get(key)
        if got is None:
            got = self._dmasks[key] = month_mask(self._spec, key // 7, key % 7)
        return got

    def _days(self, key: int) -> tuple[int, ...]:
        """Matching days of a month whose key is length * 7 + weekday of the 1st."""
        got = self._mdays.get(key)
        if got is None:
            got = self._mdays[key] = bits(self._day_mask(key))
        return got

    def _next_day(self, dayno: int) -> int:
        """The first local day >= `dayno` whose date matches, or _NO_DAY after 9999."""
        when = date.fromordinal(dayno + _EPOCH_ORDINAL)
        year, month, low = when.year, when.month, when.day
        months = self._spec.months
        if months >> month & 1:
            # The start month's key from the date in hand: no calendar lookup.
            key = month_length(year, month) * 7 + (dayno - low + 1 + _EPOCH_ORDINAL) % 7
            days = self._dmasks.get(key)
            if days is None:
                days = self._day_mask(key)
            days >>= low
            if days:
                return dayno + (days & -days).bit_length() - 1
            month, low = month + 1, 1
        while year <= 9999:
            ahead = months >> month  # bit 0: this month
            if not ahead:
                year, month, low = year + 1, 1, 1
                continue
            if not ahead & 1:
                month, low = month + lowest(ahead), 1
            base, key = _month_info(year, month)
            days = self._dmasks.get(key)
            if days is None:
                days = self._day_mask(key)
            days >>= low
            if days:
                return base + low + (days & -days).bit_length() - 1
            month, low = month + 1, 1
        return _NO_DAY

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
                days = mdays.get(key)
                if days is None:
                    days = self._days(key)
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
        """The first matching second-of-day >= lo, if any today (bit masks, no tables)."""
        # (x & -x).bit_length() - 1 is x's lowest set bit, inlined: this is the cold path.
        spec = self._spec
        hours, minutes, seconds = spec.hours, spec.minutes, spec.seconds
        h, r = divmod(lo, 3600)
        if hours >> h & 1:
            m, s = divmod(r, 60)
            ahead = seconds >> s
            if ahead and minutes >> m & 1:
                return lo + (ahead & -ahead).bit_length() - 1
            ahead = minutes >> (m + 1) << (m + 1)
            if ahead:
                m = (ahead & -ahead).bit_length() - 1
                return h * 3600 + m * 60 + (seconds & -seconds).bit_length() - 1
        ahead = hours >> (h + 1) << (h + 1)
        if not ahead:
            return None
        h = (ahead & -ahead).bit_length() - 1
        m = (minutes & -minutes).bit_length() - 1
        return h * 3600 + m * 60 + (seconds & -seconds).bit_length() - 1

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
        if not self._msecs:
            self._tables()
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


def clear_caches() -> None:
    """Empty every cache the cron package keeps, as in a fresh process: parsed
    expressions, month layouts, zones and their offsets. For benchmarks measuring a
    cold start; module constants (name tables, byte tables) are not caches."""
    _parse_cached.cache_clear()
    _month_info.cache_clear()
    get_zone.cache_clear()
