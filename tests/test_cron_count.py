"""CronExpr.count_between against the definition: iterate next_after and count.

count_between must return exactly what the iteration counts, DST rules included,
without visiting the occurrences. Random expressions and ranges (many starting near
a transition) are compared with the iteration; ranges too long to iterate are
compared with independent counts (whole hours elapsed for an hourly job in a zone
whose offsets are whole hours, per-year iteration of a yearly job, weekday
arithmetic).
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from functools import cache
from zoneinfo import ZoneInfo

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from jobsched.cron import CronError, CronExpr
from jobsched.cron.tz import CYCLE_DAYS, DAY, PERIODIC_DAY

HOUR_MS = 3_600_000
DAY_MS = 86_400_000
# Occurrences the brute force may walk per example: keeps the property test fast.
BUDGET = 400


def ms(text: str, tz: str = "UTC") -> int:
    """Epoch ms of an ISO local time in `tz` (first pass if ambiguous)."""
    return int(datetime.fromisoformat(text).replace(tzinfo=ZoneInfo(tz)).timestamp() * 1000)


def brute(expr: CronExpr, after: int, upto: int, cap: int = 100_000) -> int:
    """The definition: how many times next_after from `after` lands in (after, upto]."""
    n, t = 0, expr.next_after(after)
    while t is not None and t <= upto:
        n += 1
        assert n <= cap, "more occurrences than the test can walk"
        t = expr.next_after(t)
    return n


def check(text: str, tz: str, after: int, upto: int) -> int:
    expr = CronExpr.parse(text, tz)
    got = expr.count_between(after, upto)
    assert got == brute(expr, after, upto), (text, tz, after, upto)
    return got


# -- random expressions and ranges ---------------------------------------------

# Zone, and the years whose transitions we aim at: 30-minute shifts (Lord Howe),
# midnight changes (Sao Paulo 2018), a gap across midnight (Toronto 1919: 23:30 ->
# 00:30), changes at hh:01 and a two-hour fall-back across midnight (Goose Bay 1988),
# a skipped day (Apia 2011), and no DST at all.
ZONES = {
    "UTC": (2023, 2025),
    "Asia/Kolkata": (2023, 2025),
    "America/New_York": (2022, 2025),
    "Europe/London": (2022, 2025),
    "Australia/Lord_Howe": (2022, 2025),
    "America/Sao_Paulo": (2017, 2019),
    "America/Toronto": (1918, 1920),
    "America/Goose_Bay": (1987, 1989),
    "Pacific/Apia": (2011, 2012),
}


@cache
def transitions(zone: str) -> tuple[int, ...]:
    """Epoch ms of the zone's offset changes in its ZONES years (probed every 3 hours,
    then bisected; independent of jobsched.cron.tz)."""
    tz = ZoneInfo(zone)

    def off(u: int) -> timedelta | None:
        return datetime.fromtimestamp(u, tz).utcoffset()

    first, last = ZONES[zone]
    u, end = (int(datetime(y, 1, 1, tzinfo=UTC).timestamp()) for y in (first, last + 1))
    out = []
    while u < end:
        if off(u) != off(u + 10800):
            lo, hi = u, u + 10800
            while hi - lo > 1:
                mid = (lo + hi) // 2
                lo, hi = (mid, hi) if off(mid) == off(lo) else (lo, mid)
            out.append(hi * 1000)
        u += 10800
    return tuple(out)


# Values worth hitting: around 30-minute shifts and hh:01 changes, and each zone's
# wall hours next to its changes (fixed-time jobs there run at a gap's end, or once).
NEAR = {"minute": [0, 1, 29, 30, 31, 59], "second": [0, 30, 59]}
NEAR_HOURS = {
    "UTC": [0, 23],
    "Asia/Kolkata": [0, 23],
    "America/New_York": [1, 2, 3],
    "Europe/London": [0, 1, 2],
    "Australia/Lord_Howe": [1, 2],
    "America/Sao_Paulo": [22, 23, 0, 1],
    "America/Toronto": [23, 0, 1],
    "America/Goose_Bay": [21, 22, 23, 0, 1],
    "Pacific/Apia": [23, 0, 3, 4],
}
SPANS = {"second": (0, 59), "minute": (0, 59), "hour": (0, 23)}


@st.composite
def time_field(draw: st.DrawFn, name: str, near: list[int]) -> str:
    lo, hi = SPANS[name]

    def value() -> int:
        return draw(st.sampled_from(near) | st.integers(lo, hi))

    kind = draw(st.sampled_from(["*", "step", "value", "value", "list", "range", "range_step"]))
    if kind == "*":
        return "*"
    if kind == "step":
        return f"*/{draw(st.integers(1, hi + 2))}"
    if kind == "value":
        return str(value())
    if kind == "list":
        return ",".join(str(value()) for _ in range(draw(st.integers(2, 4))))
    a = min(value(), hi - 1)
    b = draw(st.integers(a + 1, min(hi, a + 6)))
    return f"{a}-{b}" + (f"/{draw(st.integers(1, 5))}" if kind == "range_step" else "")


# Stars weigh more: a date field that matches most days makes transition days match.
DOM = ["*"] * 40 + ["?", "1", "15", "31", "29", "1-7", "*/2", "10-20/3", "L", "LW", "1W", "15W"]
DOM += ["30W", "1,15,L", "1W,L", "5,LW"]
MONTH = ["*"] * 24 + ["3", "10", "11", "2", "3,4,9,10,11", "*/2", "2-4", "9-12"]
DOW = ["*"] * 30 + ["?", "0", "7", "1-5", "SUN", "mon-fri/2", "5L", "0L", "5#3", "0#1", "6#5"]


@st.composite
def expression(draw: st.DrawFn, zone: str) -> str:
    fields = [draw(time_field("minute", NEAR["minute"]))]
    fields.append(draw(time_field("hour", NEAR_HOURS[zone])))
    fields += [draw(st.sampled_from(DOM)), draw(st.sampled_from(MONTH))]
    fields.append(draw(st.sampled_from(DOW)))
    if draw(st.integers(0, 3)) == 0:
        fields.insert(0, draw(time_field("second", NEAR["second"])))
    return " ".join(fields)


@st.composite
def case(draw: st.DrawFn) -> tuple[str, str, int, int]:
    zone = draw(st.sampled_from(sorted(ZONES)))
    text = draw(expression(zone))
    try:
        expr = CronExpr.parse(text, zone)
    except CronError:
        assume(False)
        raise
    # Around a pivot: most often a transition, which shrinking keeps inside the range.
    changes = transitions(zone)
    if changes and draw(st.integers(0, 3)) > 0:
        pivot = draw(st.sampled_from(changes))
    else:
        first, last = ZONES[zone]
        pivot = draw(st.integers(ms(f"{first}-01-01"), ms(f"{last}-12-31")))
    before = int(10 ** draw(st.floats(3, 10.5)))  # 1 s to about a year
    after = int(10 ** draw(st.floats(3, 11.1)))  # 1 s to about four years
    # Keep the iteration short: sparse expressions get long ranges, dense ones short.
    # Near a transition next_after builds the whole day's list at each call, so a
    # dense day allows fewer calls.
    per_day = expr.count_between(pivot - DAY_MS // 2, pivot + DAY_MS // 2)
    budget = max(3, min(BUDGET, 200_000 // max(per_day, 1)))
    while expr.count_between(pivot - before, pivot + after) > budget:
        before, after = before // 2, after // 2
    start, end = pivot - before, pivot + after
    if draw(st.integers(0, 3)) == 0:  # start exactly on an occurrence, or just before
        found = expr.next_after(start)
        start = start if found is None else found - draw(st.sampled_from([0, 1, 1000]))
    return text, zone, start, end


@settings(max_examples=300, deadline=None, derandomize=True)
@given(case())
def test_count_between_is_the_iteration(c: tuple[str, str, int, int]) -> None:
    check(*c)


# -- hand-picked ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "tz"),
    [
        ("* * * * *", "UTC"),
        ("*/7 * * * * *", "UTC"),
        ("30 2 * * *", "America/New_York"),
        ("0 0 29 2 *", "UTC"),
        ("15 2 * * *", "Australia/Lord_Howe"),
    ],
)
def test_endpoints(text: str, tz: str) -> None:
    expr = CronExpr.parse(text, tz)
    t = expr.next_after(ms("2024-03-09T12:00:00", tz))
    assert t is not None
    assert expr.count_between(t, t) == 0
    assert expr.count_between(t - 1, t) == 1  # upto is inclusive
    assert expr.count_between(t, t + 1) == 0  # after is exclusive
    assert expr.count_between(t - 1, t - 1) == 0
    assert expr.count_between(t + 1, t - 1) == 0  # upto before after
    assert expr.count_between(t - 999, t + 999) == 1
    for after, upto in [(t - 1, t + 1), (t, t + 5000), (t - 5000, t), (t - 1500, t + 1500)]:
        assert expr.count_between(after, upto) == brute(expr, after, upto)


def test_leap_days() -> None:
    assert check("0 0 29 2 *", "UTC", ms("1896-01-01"), ms("1912-01-01")) == 3  # not 1900
    assert check("0 0 29 2 *", "UTC", ms("2000-01-01"), ms("2104-01-01")) == 25  # not 2100
    assert check("0 0 29 2 *", "UTC", ms("2024-02-29"), ms("2028-02-29")) == 1
    assert check("0 0 29 2 *", "UTC", ms("2024-02-29") - 1, ms("2028-02-29")) == 2
    assert check("0 0 * 2 1#5", "UTC", ms("1900-01-01"), ms("2100-01-01")) == 7
    assert check("* * 29 2 *", "UTC", ms("2024-01-01"), ms("2024-12-31")) == 1440


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0 0 L * *", 36),
        ("0 12 LW * *", 36),
        ("0 9 15W,1W * *", 72),
        ("0 0 * * 5#3", 36),
        ("0 0 * * 5L", 36),
        ("0 0 13 * 5", 36 + 156 - 5),  # Debian: every 13th and every Friday (5 both)
        ("0 0 */13 * 5", None),  # both must match
        ("30 1 30W 2,4 *", 3),  # no run in a February
        ("0 0 1-7 * 1", None),
    ],
)
def test_quartz_and_day_rules(text: str, expected: int | None) -> None:
    got = check(text, "UTC", ms("2023-01-01"), ms("2026-01-01"))
    assert expected is None or got == expected


@pytest.mark.parametrize(
    ("text", "tz", "day", "expected"),
    [
        ("30 2 * * *", "America/New_York", "2024-03-10", 1),  # in the gap: 03:00
        ("30 1 * * *", "America/New_York", "2024-11-03", 1),  # repeated: first pass
        ("*/30 1 * * *", "America/New_York", "2024-11-03", 4),
        ("0 * * * *", "America/New_York", "2024-11-03", 25),
        ("0 * * * *", "America/New_York", "2024-03-10", 23),
        ("*/5 2 * * *", "America/New_York", "2024-03-10", 0),
        ("15 2 * * *", "Australia/Lord_Howe", "2023-10-01", 1),
        ("*/10 2 * * *", "Australia/Lord_Howe", "2023-10-01", 3),
        ("*/10 1 * * *", "Australia/Lord_Howe", "2024-04-07", 9),
        ("30 0 * * *", "America/Sao_Paulo", "2018-11-04", 1),
        ("*/20 1 * * SUN", "America/Sao_Paulo", "2018-11-04", 3),
        ("*/20 0 * * *", "America/Sao_Paulo", "2018-11-04", 0),
        ("*/20 23 * * *", "America/Sao_Paulo", "2019-02-16", 6),
        # 2011-12-30 was skipped: its 12:00 runs at 31 Dec 00:00, then 12:00 again.
        ("0 12 * * *", "Pacific/Apia", "2011-12-31", 2),
        # 23:45 is in the gap (23:30 -> 00:30), and so is the next day's 00:15: one
        # run at 00:30. This day's end (00:00, read with the old offset) is 01:00, so
        # the next day's 00:45 is inside too.
        ("15,45 0,23 * * *", "America/Toronto", "1919-03-30", 5),
        ("0 0-2 * * *", "America/Toronto", "1919-03-30", 4),
        ("0,30 22,23 * * *", "America/Goose_Bay", "1988-10-29", None),
        ("*/30 22,23,0 * * *", "America/Goose_Bay", "1988-10-29", None),
        ("0 0 * * * *", "Europe/London", "2024-10-27", 25),
    ],
)
def test_transition_days(text: str, tz: str, day: str, expected: int | None) -> None:
    start = ms(f"{day}T00:00:00", tz)
    end = ms((date.fromisoformat(day) + timedelta(days=1)).isoformat(), tz)
    got = check(text, tz, start - 1, end - 1)
    assert expected is None or got == expected
    # The same day inside longer ranges, which count it from the zone's change list.
    for before, after in [(3, 3), (40, 1), (1, 40)]:
        check(text, tz, start - before * DAY_MS, end + after * DAY_MS)


def test_midnight_gap_runs_once() -> None:
    # Toronto 1919-03-30 23:30 -> 00:30: 23:45 and 00:15 are both in the gap. Each day
    # would run its job at the gap's end; it is one instant, so one run.
    expr = CronExpr.parse("15,45 0,23 * * *", "America/Toronto")
    gap_end = datetime(1919, 3, 31, 4, 30, tzinfo=UTC).timestamp() * 1000
    assert expr.count_between(int(gap_end) - 1, int(gap_end)) == 1
    # 4 on the 29th, 4 on the 30th (its 23:45 at the gap's end), 3 more on the 31st (its
    # 00:15 in the gap is that same run), 4 on 1 April.
    assert check("15,45 0,23 * * *", "America/Toronto", ms("1919-03-29"), ms("1919-04-02")) == 15


# -- long ranges ----------------------------------------------------------------


def test_five_hundred_years_of_a_yearly_job() -> None:
    for tz in ("UTC", "America/New_York", "Australia/Lord_Howe"):
        assert check("0 0 1 1 *", tz, ms("1900-06-01", tz), ms("2400-06-01", tz)) == 500
    assert check("0 12 1 1 *", "UTC", ms("0001-01-02"), ms("0501-01-02")) == 500


def weekdays(first: date, last: date) -> int:
    """Monday-Friday dates in [first, last), by whole weeks then the rest."""
    days = (last - first).days
    n = days // 7 * 5
    return n + sum((first + timedelta(i)).weekday() < 5 for i in range(days // 7 * 7, days))


def test_five_hundred_years_of_weekdays() -> None:
    expr = CronExpr.parse("*/15 9-17 * * 1-5")
    first, last = date(1600, 3, 1), date(2100, 3, 1)
    got = expr.count_between(ms(first.isoformat()) - 1, ms(last.isoformat()) - 1)
    assert got == weekdays(first, last) * 9 * 4


@pytest.mark.parametrize(
    ("text", "tz", "first", "last", "step"),
    [
        # Offsets in whole hours (whole half hours at Lord Howe) since these dates, so a
        # job at every wall hour runs at every UTC hour: the count is the hours elapsed.
        ("0 * * * *", "America/New_York", "1900-01-01", "2500-01-01", HOUR_MS),
        ("0 * * * *", "Europe/London", "1900-01-01", "2600-01-01", HOUR_MS),
        ("*/30 * * * *", "Australia/Lord_Howe", "1990-01-01", "3200-01-01", HOUR_MS // 2),
        ("0 0 * * * *", "Europe/London", "2024-01-01", "9999-12-01", HOUR_MS),
        ("0 * * * *", "UTC", "0001-01-02", "9999-12-30", HOUR_MS),
    ],
)
def test_centuries_of_hours(text: str, tz: str, first: str, last: str, step: int) -> None:
    expr = CronExpr.parse(text, tz)
    after = ms(f"{first}T00:00:00+00:00") - 1
    upto = ms(f"{last}T00:00:00+00:00") - 1
    assert expr.count_between(after, upto) == (upto - after) // step
    # A daily fixed-time job runs once every local day, gaps and repeats included.
    days = (date.fromisoformat(last) - date.fromisoformat(first)).days
    daily = CronExpr.parse("30 1 * * *", tz).count_between(after + DAY_MS, upto - DAY_MS)
    assert abs(daily - days) <= 2


@pytest.mark.parametrize(
    ("text", "tz", "first", "per_year"),
    [
        # London falls back in October (last Sunday, since 1996): 31 x 24 wall hours,
        # one of them twice. Lord Howe in April (first Sunday, since 2008): 30 x 48
        # wall half hours, one twice. The other change of the year is in no such month.
        ("0 * * 10 *", "Europe/London", 2000, 31 * 24 + 1),
        ("*/30 * * 4 *", "Australia/Lord_Howe", 2010, 30 * 48 + 1),
    ],
)
def test_millennia_of_one_change_a_year(text: str, tz: str, first: int, per_year: int) -> None:
    expr = CronExpr.parse(text, tz)
    assert expr.count_between(ms(f"{first}-01-01", tz), ms("9999-01-01", tz)) == (
        (9999 - first) * per_year
    )
    assert expr.count_between(ms("2900-01-01", tz), ms("3500-01-01", tz)) == 600 * per_year


def test_the_ends_of_the_calendar() -> None:
    for tz in ("UTC", "Pacific/Kiritimati", "Etc/GMT+12", "America/New_York"):
        check("0 */6 * * *", tz, ms("9999-12-25T00:00:00+00:00"), ms("9999-12-31T23:59:59+00:00"))
        check("0 */6 * * *", tz, ms("0001-01-01T00:00:00+00:00"), ms("0001-01-06T00:00:00+00:00"))
        check("0 0 * * *", tz, -(10**15), ms("0001-01-09T00:00:00+00:00"))
        check("0 0 * * *", tz, ms("9999-12-20T00:00:00+00:00"), 10**15)


def test_explicit_transitions_end_before_2400() -> None:
    # What makes the 400-year reuse below exact: after a zone's last explicit
    # transition, zoneinfo applies the zone's POSIX rule. Read with zoneinfo's pure
    # Python reader (not public API: skipped if it changes).
    from zoneinfo import _zoneinfo, available_timezones

    limit = datetime(2400, 1, 1, tzinfo=UTC).timestamp()
    for key in sorted(available_timezones()):
        try:
            trans = _zoneinfo.ZoneInfo.no_cache(key)._trans_utc  # type: ignore[attr-defined]
        except AttributeError:
            pytest.skip("zoneinfo's pure Python reader changed")
        assert not trans or trans[-1] < limit, key


def test_the_zone_repeats_every_400_years_from_2400() -> None:
    # Zone.transitions reuses a block's changes 400 years on from 2400: zoneinfo follows
    # each zone's POSIX rule there, a function of the (400-year periodic) calendar.
    cycle = CYCLE_DAYS * DAY
    for name in ("America/New_York", "Europe/London", "Australia/Lord_Howe", "Asia/Gaza"):
        tz = ZoneInfo(name)
        for k in range(0, 3000):
            u = (PERIODIC_DAY + k * 48) * DAY + k * 997
            shifted = [datetime.fromtimestamp(u + i * cycle, tz).utcoffset() for i in (1, 3)]
            assert shifted == [datetime.fromtimestamp(u, tz).utcoffset()] * 2, (name, u)
