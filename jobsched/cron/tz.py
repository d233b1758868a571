"""UTC offsets of an IANA zone, one local day at a time (pure; zoneinfo does the reading).

zoneinfo has no public list of transitions, so we probe: for a local day we look at
the offset over a window wide enough to hold every instant whose wall time falls on
that day. If the offset is the same at both ends and in the middle, the day is
"clean" (one offset; we assume no two transitions cancel within a day, which holds
for the tz database). Otherwise we bisect to the exact second of each transition.
Results are cached per zone, since every expression in a zone shares them.
"""

from __future__ import annotations

import zoneinfo
from datetime import datetime, timedelta
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

# A day's offsets: an int when one offset holds all day, else segments
# ((start instant, offset), ...) ascending, the first starting at _NO_START.
DayOffsets = int | tuple[tuple[int, int], ...]
_FIXED = {"UTC", "Etc/UTC", "Etc/UCT", "Etc/Universal", "Etc/Zulu", "GMT", "Etc/GMT"}


class Zone:
    __slots__ = ("_days", "fixed", "name", "tz")

    def __init__(self, name: str, tz: zoneinfo.ZoneInfo) -> None:
        self.name = name
        self.tz = tz
        # Zones known to have a single offset skip all probing.
        self.fixed: int | None = 0 if name in _FIXED else None
        self._days: dict[int, DayOffsets] = {}

    def offset(self, u: int) -> int:
        """UTC offset in seconds at instant `u` (epoch seconds)."""
        if self.fixed is not None:
            return self.fixed
        u = min(max(u, U_LO), U_HI)
        off = datetime.fromtimestamp(u, self.tz).utcoffset()
        return 0 if off is None else off // _SECOND

    def day(self, dayno: int) -> DayOffsets:
        """Offsets for local day `dayno` (days since 1970-01-01 in wall time)."""
        if self.fixed is not None:
            return self.fixed
        got = self._days.get(dayno)
        if got is None:
            if len(self._days) >= _CACHE_LIMIT:
                self._days.clear()
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

    def _changes(self, lo: int, o_lo: int, hi: int, o_hi: int) -> list[tuple[int, int]]:
        """Transitions in (lo, hi] as (first instant of the new offset, new offset)."""
        if o_lo == o_hi:
            return []
        if hi - lo == 1:
            return [(hi, o_hi)]
        mid = (lo + hi) // 2
        o_mid = self.offset(mid)
        return self._changes(lo, o_lo, mid, o_mid) + self._changes(mid, o_mid, hi, o_hi)


_SECOND = timedelta(seconds=1)


@lru_cache(maxsize=512)
def get_zone(name: str) -> Zone:
    """The Zone for an IANA name; Malformed("timezone", ...) if there is none."""
    try:
        return Zone(name, zoneinfo.ZoneInfo(name))
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError, TypeError):
        pass
    raise Malformed("timezone", f"unknown time zone {name!r}")
