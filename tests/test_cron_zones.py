"""Invariants in every IANA zone, including odd histories (LMT, 24-hour jumps, Ramadan DST).

No oracle handles all of these, so we check what must hold whatever the zone:
occurrences are whole seconds, strictly increasing and after the start; each one's
local wall time matches the expression (checked with cronsim's field sets and day
matcher), except that a fixed-time job may also run at the instant a gap ends.
"""

from __future__ import annotations

import zoneinfo
from datetime import UTC, datetime
from itertools import islice
from zoneinfo import ZoneInfo

from cronsim import CronSim
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jobsched.cron import CronError, CronExpr
from tests.test_cron_diff import _fixed_time, expressions

ALL_ZONES = sorted(zoneinfo.available_timezones())


def _ends_a_gap(u: int, tz: ZoneInfo) -> bool:
    before = datetime.fromtimestamp(u - 1, tz).utcoffset()
    after = datetime.fromtimestamp(u, tz).utcoffset()
    return before is not None and after is not None and after > before


def _wall_matches(sim: CronSim, local: datetime) -> bool:
    return (
        local.second in sim.seconds
        and local.minute in sim.minutes
        and local.hour in sim.hours
        and local.month in sim.months
        and sim.match_day(local.date())
    )


@settings(
    max_examples=400,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    expr=expressions(),
    zone=st.sampled_from(ALL_ZONES),
    start=st.integers(
        int(datetime(1890, 1, 1, tzinfo=UTC).timestamp()) * 1000,
        int(datetime(2100, 1, 1, tzinfo=UTC).timestamp()) * 1000,
    ),
)
def test_occurrences_match_their_wall_time_in_every_zone(expr: str, zone: str, start: int) -> None:
    try:
        e = CronExpr.parse(expr, zone)
    except CronError:
        return  # never-firing expressions are checked in test_cron_diff
    tz = ZoneInfo(zone)
    sim = CronSim(expr.replace("?", "*"), datetime(2000, 1, 1))
    fixed = _fixed_time(expr)
    got = list(islice(e.iter_after(start), 8))
    assert got, expr
    prev = start
    for ms in got:
        assert ms > prev and ms % 1000 == 0
        prev = ms
        local = datetime.fromtimestamp(ms // 1000, tz)
        assert _wall_matches(sim, local) or (fixed and _ends_a_gap(ms // 1000, tz)), (
            expr,
            zone,
            local.isoformat(),
        )
