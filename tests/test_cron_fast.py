"""The cold-start shortcuts of jobsched.cron give the answers of the general code.

- next_after finds a first occurrence from the bit masks while the days are clean,
  and otherwise walks (_instants, which iter_after uses): both must agree, near DST
  changes, skipped days and the ends of the calendar included;
- Zone.day settles three clean days with four probes: it must agree with probing
  each day alone (Zone._probe_day);
- bits() reads arithmetic progressions without a loop, and the parser reads common
  tokens with one lookup: both must agree with the plain definitions.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime
from itertools import islice
from zoneinfo import ZoneInfo

import pytest

from jobsched.cron import CronError, CronExpr
from jobsched.cron.parse import bits, parse_spec, progression
from jobsched.cron.tz import Zone

ZONES = (
    "UTC",
    "America/New_York",
    "Europe/London",
    "Australia/Lord_Howe",  # 30-minute shifts
    "America/Sao_Paulo",  # midnight skipped
    "America/Toronto",  # 1919: a gap across midnight
    "America/Goose_Bay",  # 1988: a two-hour fall-back across midnight
    "Pacific/Apia",  # 2011-12-30 skipped
    "Pacific/Kiritimati",  # +14, and local mean time at year 1
    "Etc/GMT+12",
)
# Instants near each zone's odd changes (UTC), where the fast path must give way.
NEAR = (
    ("America/New_York", "2024-03-10T06:59:00"),
    ("America/New_York", "2024-11-03T05:30:00"),
    ("Australia/Lord_Howe", "2023-09-30T15:29:00"),
    ("America/Sao_Paulo", "2018-11-04T02:30:00"),
    ("America/Toronto", "1919-03-31T04:00:00"),
    ("America/Goose_Bay", "1988-10-30T02:30:00"),
    ("Pacific/Apia", "2011-12-29T10:00:00"),
)
FIELDS = (
    ("0", "*/15", "5-40/7", "1,31,59", "*"),
    ("0", "2", "1,3", "*/6", "9-17", "*"),
    ("*", "1", "15", "L", "LW", "15W", "1W", "31", "29", "1-7"),
    ("*", "2", "FEB,MAR", "11", "*/4"),
    ("*", "MON-FRI", "0", "5L", "1#5", "SUN", "*/2"),
)


def transition_after(tz: str, u: int) -> int:
    """The first instant (epoch seconds) after u at which the zone's offset changes
    (hour steps, then bisection; independent of jobsched.cron.tz)."""
    zone = ZoneInfo(tz)

    def offset(t: int) -> object:
        return datetime.fromtimestamp(t, zone).utcoffset()

    while offset(u) == offset(u + 3600):
        u += 3600
    lo, hi = u, u + 3600
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if offset(mid) == offset(lo) else (lo, mid)
    return hi


def expressions(rng: random.Random, n: int) -> list[str]:
    out = []
    while len(out) < n:
        fields = [rng.choice(choices) for choices in FIELDS]
        if rng.random() < 0.2:  # six fields: seconds first
            fields.insert(0, rng.choice(("0", "*/20", "30", "*")))
        text = " ".join(fields)
        try:
            CronExpr.parse(text)
        except CronError:  # can never fire: not a case
            continue
        out.append(text)
    return out


def starts(rng: random.Random, tz: str) -> list[int]:
    years = [rng.randint(1970, 2040) for _ in range(3)] + [rng.randint(1, 9999)]
    out = [
        int(datetime(y, rng.randint(1, 12), rng.randint(1, 28), tzinfo=UTC).timestamp() * 1000)
        + rng.randrange(86_400_000)
        for y in years
    ]
    for zone, when in NEAR:
        if zone == tz:
            anchor = datetime.fromisoformat(when).replace(tzinfo=UTC)
            change = transition_after(tz, int(anchor.timestamp()) - 86400)
            # Just before and after the change, where days interleave, and around it.
            out += [(change + s) * 1000 for s in (-3600, -61, -60, -59, -30, -1, 0, 1, 60, 3600)]
            out += [(change + rng.randrange(-3 * 3600, 3 * 3600)) * 1000 for _ in range(4)]
    first = int(datetime(1, 1, 1, tzinfo=UTC).timestamp() * 1000)
    last = int(datetime(9999, 12, 30, tzinfo=UTC).timestamp() * 1000)
    return [*out, first, first + rng.randrange(4 * 86_400_000), last - rng.randrange(86_400_000)]


@pytest.mark.parametrize("tz", ZONES)
def test_next_after_is_the_first_of_the_walk(tz: str) -> None:
    rng = random.Random(tz)
    for text in expressions(rng, 40):
        expr = CronExpr.parse(text, tz)
        for ms in starts(rng, tz):
            walked = list(islice(expr.iter_after(ms), 2))
            assert expr.next_after(ms) == (walked[0] if walked else None), (text, tz, ms)
            if walked:  # and again from the occurrence found, as a scheduler does
                assert expr.next_after(walked[0]) == (walked[1:] or [None])[0], (text, tz, ms)


@pytest.mark.parametrize("tz", [z for z in ZONES if z != "UTC"])
def test_three_days_at_once_agree_with_one_day_at_a_time(tz: str) -> None:
    years = {zone: when[:4] for zone, when in NEAR}
    year = int(years.get(tz, "2024"))
    first = (datetime(year - 1, 12, 1, tzinfo=UTC) - datetime(1970, 1, 1, tzinfo=UTC)).days
    fast, slow = Zone(tz, ZoneInfo(tz)), Zone(tz, ZoneInfo(tz))
    for dayno in range(first, first + 430):
        assert fast.day(dayno) == slow._probe_day(dayno), (tz, dayno)
    # Asked out of order too: a day settled with its neighbours is still right.
    fresh = Zone(tz, ZoneInfo(tz))
    for dayno in random.Random(tz).sample(range(first, first + 430), 200):
        assert fresh.day(dayno) == slow._probe_day(dayno), (tz, dayno)


def test_bits_reads_any_mask() -> None:
    rng = random.Random(1)
    masks = [rng.getrandbits(rng.randint(1, 64)) for _ in range(3000)]
    masks += [
        progression(lo, step, n)
        for lo in range(0, 60, 7)
        for step in (1, 2, 5, 13)
        for n in (1, 2, 5)
    ]
    for mask in [0, 1, 1 << 59, (1 << 60) - 1, *masks]:
        assert bits(mask) == tuple(i for i in range(mask.bit_length()) if mask >> i & 1), mask


@pytest.mark.parametrize(
    ("quick", "plain"),
    [
        ("*/5 * * * *", "0-59/5 0-23 1-31 1-12 0-7"),
        ("7 7 7 7 *", "07 07 07 07 *"),
        ("*/15 9-17 * JAN mon-fri", "0-59/15 9-17 1-31 1 1,2,3,4,5"),
        ("30 2 1,15 * *", "30 2 1-1,15-15 * *"),
        ("*/99 */7 */10 */5 */3", "0 0-23/7 1-31/10 1-12/5 0-7/3"),
    ],
)
def test_token_lookups_read_as_the_general_path(quick: str, plain: str) -> None:
    # The allowed values; day_and and fixed_time look at the leading '*', which differs.
    assert parse_spec(quick)[:11] == parse_spec(plain)[:11]
