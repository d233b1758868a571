"""UTC offsets of an IANA zone, one local day at a time (pure; zoneinfo does the reading).

zoneinfo has no public list of transitions, so we probe: for a local day we look at
the offset over a window wide enough to hold every instant whose wall time falls on
that day. If the offset is the same at both ends and in the middle, the day is
"clean" (one offset; we assume no two transitions cancel within a day, which holds
for the tz database). Otherwise we bisect to the exact second of each transition.
Results are cached per zone, since every expression in a zone shares them.

``transitions`` lists a zone's offset changes over a stretch of days without probing
each day three times: one probe per day finds them (the same no-cancelling assumption,
over a day instead of 56 hours), bisection places them. Counting occurrences
(cron/count.py) uses it to find the few days that need walking.
"""

from __future__ import annotations

import zoneinfo
from collections.abc import Sequence
from datetime import UTC, datetime, tzinfo
from functools import lru_cache

from jobsched.errors import Malformed

DAY = 86400
# Bound on |UTC offset|; the tz database's extremes are local mean times near +-15h.
MAX_OFFSET = 16 * 3600
# Instants we compute with: local wall time stays inside years 1..9999 for any
# offset within MAX_OFFSET, so datetime never overflows.
U_LO = -62135596800 + DAY  # 0001-01-02T00:00:00Z
U_HI = 253402300800 - DAY  # 9999-12-31T00:00:00Z
_NO_START = -(1 << 62)  # "since forever" for the first segment of a day
_CACHE_LIMIT = 20000
# Transitions are found and cached per block of days. 146,097 days (400 Gregorian
# years, a whole number of weeks) is 773 blocks of 189, so a block 400 years on has
# the same calendar. From 2400 on every zone follows its POSIX rule (the tz database's
# explicit transitions end by 2087), which is a function of that calendar: such a block
# reuses the transitions of the block 400 years earlier, shifted.
_BLOCK = 189
_CYCLE_BLOCKS = 773
_CYCLE_SECONDS = _BLOCK * _CYCLE_BLOCKS * DAY
# Probe spacing when scanning: two changes within 56 hours never cancel (docs/cron.md),
# so two equal probes 48 hours apart have no change between them.
_STEP = 2 * DAY
# Probe spacing when probing three days at once: a third of their windows' span.
_STEP3 = (3 * DAY + 2 * MAX_OFFSET) // 3
_PERIODIC_BLOCK = 831  # the first block on or after 2400-01-01 (day 157,054)
PERIODIC_DAY = _PERIODIC_BLOCK * _BLOCK
CYCLE_DAYS = _BLOCK * _CYCLE_BLOCKS

# A day's offsets: an int when one offset holds all day, else segments
# ((start instant, offset), ...) ascending, the first starting at _NO_START.
Segments = tuple[tuple[int, int], ...]
DayOffsets = int | Segments
# An offset change: (its first instant, the offset before, the offset from then on).
Change = tuple[int, int, int]
_FIXED = {"UTC", "Etc/UTC", "Etc/UCT", "Etc/Universal", "Etc/Zulu", "GMT", "Etc/GMT"}


class Zone:
    __slots__ = ("_blocks", "_days", "fixed", "name", "tz")

    def __init__(self, name: str, tz: tzinfo) -> None:
        self.name = name
        self.tz = tz
        # Zones known to have a single offset skip all probing.
        self.fixed: int | None = 0 if name in _FIXED else None
        self._days: dict[int, DayOffsets] = {}
        self._blocks: dict[int, tuple[Change, ...]] = {}

    def offset(self, u: int) -> int:
        """UTC offset in seconds at instant `u` (epoch seconds)."""
        if self.fixed is not None:
            return self.fixed
        if not U_LO <= u <= U_HI:
            u = min(max(u, U_LO), U_HI)
        # Asking the zone directly, and reading the timedelta's fields rather than
        # dividing it, halves the cost of a probe (a cold zone probes a few dozen times).
        tz = self.tz
        off = tz.utcoffset(datetime.fromtimestamp(u, tz))
        return 0 if off is None else off.days * DAY + off.seconds

    def day(self, dayno: int) -> DayOffsets:
        """Offsets for local day `dayno` (days since 1970-01-01 in wall time)."""
        if self.fixed is not None:
            return self.fixed
        got = self._days.get(dayno)
        if got is None:
            if len(self._days) >= _CACHE_LIMIT:
                self._days.clear()
            got = self._probe_days(dayno)
        return got

    def _probe_days(self, dayno: int) -> DayOffsets:
        """Offsets for `dayno`, cached, and for the two days after it when all three are
        clean: four probes 35 hours apart settle three days (two changes within 56 hours
        never cancel), where one day alone takes three. Days are mostly asked in order."""
        lo = dayno * DAY - MAX_OFFSET
        if lo >= U_LO and lo + 3 * _STEP3 <= U_HI:
            # The probes inlined and compared as the zone's timedeltas: a first
            # next_after in a zone spends most of its zone time here.
            tz, read = self.tz, datetime.fromtimestamp
            first = tz.utcoffset(read(lo, tz))
            if (
                first is not None
                and first == tz.utcoffset(read(lo + _STEP3, tz))
                and first == tz.utcoffset(read(lo + 2 * _STEP3, tz))
                and first == tz.utcoffset(read(lo + 3 * _STEP3, tz))
            ):
                off = first.days * DAY + first.seconds
                self._days[dayno] = self._days[dayno + 1] = self._days[dayno + 2] = off
                return off
        got = self._days[dayno] = self._probe_day(dayno)
        return got

    def _probe_day(self, dayno: int) -> DayOffsets:
        lo = dayno * DAY - MAX_OFFSET
        hi = lo + DAY + 2 * MAX_OFFSET
        mid = (lo + hi) // 2
        o_lo, o_mid, o_hi = self.offset(lo), self.offset(mid), self.offset(hi)
        if o_lo == o_mid == o_hi:
            return o_lo
        changes = self._changes(lo, o_lo, mid, o_mid) + self._changes(mid, o_mid, hi, o_hi)
        return ((_NO_START, o_lo), *changes)

    def transitions(self, first_day: int, last_day: int) -> list[Change]:
        """The offset changes in the UTC days first..last, ascending.

        Every change in (first_day * DAY, (last_day + 1) * DAY] is listed, possibly with
        a few just outside; none for a zone with a single offset.
        """
        if self.fixed is not None:
            return []
        out: list[Change] = []
        for block in range(first_day // _BLOCK, last_day // _BLOCK + 1):
            out.extend(self._block(block))
        return out

    def _block(self, block: int) -> tuple[Change, ...]:
        if block >= _PERIODIC_BLOCK + _CYCLE_BLOCKS:
            cycles = (block - _PERIODIC_BLOCK) // _CYCLE_BLOCKS
            shift = cycles * _CYCLE_SECONDS
            earlier = self._block(block - cycles * _CYCLE_BLOCKS)
            return tuple((u + shift, before, after) for u, before, after in earlier)
        got = self._blocks.get(block)
        if got is None:
            got = self._blocks[block] = self._scan(block * _BLOCK * DAY)
        return got

    def _scan(self, lo: int) -> tuple[Change, ...]:
        """Changes in (lo, lo + _BLOCK days]: a probe every _STEP, bisection where two
        probes differ. The probes are inlined: every day scanned costs one."""
        points = [*range(lo, lo + _BLOCK * DAY, _STEP), lo + _BLOCK * DAY]
        if points[0] < U_LO or points[-1] > U_HI:
            points = [min(max(u, U_LO), U_HI) for u in points]
        tz, read = self.tz, datetime.fromtimestamp
        offs = [tz.utcoffset(read(u, tz)) for u in points]
        out: list[Change] = []
        for i in range(1, len(points)):
            if offs[i] != offs[i - 1]:
                lo_u, hi_u = points[i - 1], points[i]
                prev = self.offset(lo_u)
                for start, after in self._changes(lo_u, prev, hi_u, self.offset(hi_u)):
                    out.append((start, prev, after))
                    prev = after
        return tuple(out)

    def _changes(self, lo: int, o_lo: int, hi: int, o_hi: int) -> list[tuple[int, int]]:
        """Transitions in (lo, hi] as (first instant of the new offset, new offset)."""
        if o_lo == o_hi:
            return []
        if hi - lo == 1:
            return [(hi, o_hi)]
        mid = (lo + hi) // 2
        o_mid = self.offset(mid)
        return self._changes(lo, o_lo, mid, o_mid) + self._changes(mid, o_mid, hi, o_hi)


def day_segments(changes: Sequence[Change], dayno: int, near: int) -> Segments | None:
    """The segments Zone.day(dayno) finds for a day whose offset changes, or None for a
    clean day, read from `changes` (which must list every change near that day) instead
    of probed. `near` is the index of a change close to the day: we look around it."""
    lo = dayno * DAY - MAX_OFFSET
    hi = lo + DAY + 2 * MAX_OFFSET
    i, end = near, len(changes)
    while i > 0 and changes[i - 1][0] > lo:
        i -= 1
    while i < end and changes[i][0] <= lo:
        i += 1
    j = i
    while j < end and changes[j][0] <= hi:
        j += 1
    if i == j:
        return None
    return ((_NO_START, changes[i][1]), *((u, after) for u, _, after in changes[i:j]))


@lru_cache(maxsize=512)
def get_zone(name: str) -> Zone:
    """The Zone for an IANA name; Malformed("timezone", ...) if there is none."""
    if name in _FIXED:  # no offset to look up: no need to read the tz database
        return Zone(name, UTC)
    try:
        return Zone(name, zoneinfo.ZoneInfo(name))
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError, TypeError):
        pass
    raise Malformed("timezone", f"unknown time zone {name!r}")
