"""A table of DST and edge cases, each derived by hand from Debian's rules (SPEC section 4).

Times are written as local wall time with the UTC offset in force, so a repeated
hour's two passes are told apart (01:30-04:00 is the first pass in New York on
2024-11-03, 01:30-05:00 the second).
"""

from __future__ import annotations

from datetime import datetime
from itertools import islice, pairwise
from zoneinfo import ZoneInfo

import pytest
from cronsim import CronSim

from jobsched.cron import CronExpr

NY = "America/New_York"  # 2024-03-10 02:00 -> 03:00; 2024-11-03 02:00 -> 01:00
LON = "Europe/London"  # 2024-03-31 01:00 -> 02:00; 2024-10-27 02:00 -> 01:00
SAO = "America/Sao_Paulo"  # 2018-11-04 00:00 -> 01:00; 2019-02-17 00:00 -> 02-16 23:00
LHI = "Australia/Lord_Howe"  # 2023-10-01 02:00 -> 02:30; 2024-04-07 02:00 -> 01:30


def ms(iso: str) -> int:
    return int(datetime.fromisoformat(iso).timestamp() * 1000)


def occurrences(expr: str, tz: str, start: str, n: int) -> list[str]:
    zone = ZoneInfo(tz)
    got = islice(CronExpr.parse(expr, tz).iter_after(ms(start)), n)
    return [datetime.fromtimestamp(u / 1000, zone).isoformat(timespec="seconds") for u in got]


# (expression, zone, start, expected occurrences)
TABLE: list[tuple[str, str, str, list[str]]] = [
    # --- New York, spring forward: 02:00-02:59 does not exist on 2024-03-10.
    # Fixed-time job in the gap: once, at the first valid moment (03:00 EDT).
    ("30 2 * * *", NY, "2024-03-09T12:00-05:00",
     ["2024-03-10T03:00:00-04:00", "2024-03-11T02:30:00-04:00"]),
    # Several times in the gap make one run.
    ("0,30 2 * * *", NY, "2024-03-09T12:00-05:00",
     ["2024-03-10T03:00:00-04:00", "2024-03-11T02:00:00-04:00"]),
    # A time in the gap and one right at its end make one run.
    ("0 2,3 * * *", NY, "2024-03-09T12:00-05:00",
     ["2024-03-10T03:00:00-04:00", "2024-03-11T02:00:00-04:00"]),
    # Minute starts with '*': ordinary schedule, the missing wall times do not run.
    ("*/30 2 * * *", NY, "2024-03-09T12:00-05:00",
     ["2024-03-11T02:00:00-04:00", "2024-03-11T02:30:00-04:00"]),
    ("0 * * * *", NY, "2024-03-10T00:30-05:00",
     ["2024-03-10T01:00:00-05:00", "2024-03-10T03:00:00-04:00", "2024-03-10T04:00:00-04:00"]),
    # Six fields, seconds fixed too: a fixed-time job, so it moves to the gap's end.
    # (cronsim applies the fix-up only to five-field expressions and skips the day.)
    ("15 30 2 * * *", NY, "2024-03-09T12:00-05:00",
     ["2024-03-10T03:00:00-04:00", "2024-03-11T02:30:15-04:00"]),
    # --- New York, fall back: 01:00-01:59 happens twice on 2024-11-03.
    # Fixed-time job: once, on the first pass.
    ("30 1 * * *", NY, "2024-11-02T12:00-04:00",
     ["2024-11-03T01:30:00-04:00", "2024-11-04T01:30:00-05:00"]),
    # Starting inside the second pass: the first-pass run is in the past; never look back.
    ("45 1 * * *", NY, "2024-11-03T01:10-05:00", ["2024-11-04T01:45:00-05:00"]),
    # Minute starts with '*': both passes run.
    ("*/30 1 * * *", NY, "2024-11-03T00:00-04:00",
     ["2024-11-03T01:00:00-04:00", "2024-11-03T01:30:00-04:00",
      "2024-11-03T01:00:00-05:00", "2024-11-03T01:30:00-05:00", "2024-11-04T01:00:00-05:00"]),
    ("@hourly", NY, "2024-11-03T00:30-04:00",
     ["2024-11-03T01:00:00-04:00", "2024-11-03T01:00:00-05:00", "2024-11-03T02:00:00-05:00"]),
    # --- London: 01:00-01:59 missing on 2024-03-31, repeated on 2024-10-27.
    ("30 1 * * *", LON, "2024-03-30T12:00+00:00",
     ["2024-03-31T02:00:00+01:00", "2024-04-01T01:30:00+01:00"]),
    ("*/20 1 * * *", LON, "2024-03-30T12:00+00:00",
     ["2024-04-01T01:00:00+01:00", "2024-04-01T01:20:00+01:00"]),
    ("15 1 * * *", LON, "2024-10-26T12:00+01:00",
     ["2024-10-27T01:15:00+01:00", "2024-10-28T01:15:00+00:00"]),
    ("0 1 * * *", LON, "2024-10-27T01:30+00:00", ["2024-10-28T01:00:00+00:00"]),
    # --- Sao Paulo: midnight skipped on 2018-11-04 (00:00-00:59 does not exist).
    ("30 0 * * *", SAO, "2018-11-03T12:00-03:00",
     ["2018-11-04T01:00:00-02:00", "2018-11-05T00:30:00-02:00"]),
    ("0 0 * * *", SAO, "2018-11-03T12:00-03:00",
     ["2018-11-04T01:00:00-02:00", "2018-11-05T00:00:00-02:00"]),
    ("@daily", SAO, "2018-11-03T12:00-03:00",
     ["2018-11-04T01:00:00-02:00", "2018-11-05T00:00:00-02:00"]),
    ("*/30 0 * * *", SAO, "2018-11-03T12:00-03:00",
     ["2018-11-05T00:00:00-02:00", "2018-11-05T00:30:00-02:00"]),
    # The day starts at 01:00; its first hour still runs (cronsim misses it when
    # it arrives at the day from a non-matching one, see
    # test_cronsim_misses_the_hour_after_a_skipped_midnight). 2018-11-04 is a Sunday.
    ("*/20 1 * * *", SAO, "2018-11-03T12:00-03:00",
     ["2018-11-04T01:00:00-02:00", "2018-11-04T01:20:00-02:00", "2018-11-04T01:40:00-02:00"]),
    ("*/20 1 * * SUN", SAO, "2018-11-03T12:00-03:00",
     ["2018-11-04T01:00:00-02:00", "2018-11-04T01:20:00-02:00", "2018-11-04T01:40:00-02:00"]),
    # Fall back across midnight: 23:00-23:59 of 2019-02-16 happens twice.
    ("30 23 * * *", SAO, "2019-02-16T12:00-02:00",
     ["2019-02-16T23:30:00-02:00", "2019-02-17T23:30:00-03:00"]),
    ("*/30 23 * * *", SAO, "2019-02-16T12:00-02:00",
     ["2019-02-16T23:00:00-02:00", "2019-02-16T23:30:00-02:00",
      "2019-02-16T23:00:00-03:00", "2019-02-16T23:30:00-03:00", "2019-02-17T23:00:00-03:00"]),
    # --- Lord Howe: a 30-minute shift. 02:00-02:29 missing on 2023-10-01;
    # 01:30-01:59 repeated on 2024-04-07.
    ("15 2 * * *", LHI, "2023-09-30T12:00+10:30",
     ["2023-10-01T02:30:00+11:00", "2023-10-02T02:15:00+11:00"]),
    ("0,15 2 * * *", LHI, "2023-09-30T12:00+10:30",
     ["2023-10-01T02:30:00+11:00", "2023-10-02T02:00:00+11:00"]),
    ("15,30,45 2 * * *", LHI, "2023-09-30T12:00+10:30",
     ["2023-10-01T02:30:00+11:00", "2023-10-01T02:45:00+11:00", "2023-10-02T02:15:00+11:00"]),
    ("*/15 2 * * *", LHI, "2023-09-30T12:00+10:30",
     ["2023-10-01T02:30:00+11:00", "2023-10-01T02:45:00+11:00", "2023-10-02T02:00:00+11:00"]),
    # 03:00-03:29 exist and run (cronsim jumps to 03:30, see below).
    ("*/10 1,3 * * *", LHI, "2023-10-01T01:55+10:30",
     ["2023-10-01T03:00:00+11:00", "2023-10-01T03:10:00+11:00"]),
    ("45 1 * * *", LHI, "2024-04-06T12:00+11:00",
     ["2024-04-07T01:45:00+11:00", "2024-04-08T01:45:00+10:30"]),
    ("*/20 1 * * *", LHI, "2024-04-07T00:00+11:00",
     ["2024-04-07T01:00:00+11:00", "2024-04-07T01:20:00+11:00", "2024-04-07T01:40:00+11:00",
      "2024-04-07T01:40:00+10:30", "2024-04-08T01:00:00+10:30"]),
    # --- Pacific/Apia skipped all of 2011-12-30 (-10:00 -> +14:00).
    ("0 12 * * *", "Pacific/Apia", "2011-12-29T00:00-10:00",
     ["2011-12-29T12:00:00-10:00", "2011-12-31T00:00:00+14:00", "2011-12-31T12:00:00+14:00"]),
    # --- Leap days and sparse expressions.
    ("0 0 29 2 *", "UTC", "2024-03-01T00:00+00:00",
     ["2028-02-29T00:00:00+00:00", "2032-02-29T00:00:00+00:00"]),
    ("0 0 29 2 *", "UTC", "2096-03-01T00:00+00:00",  # 2100 is not a leap year
     ["2104-02-29T00:00:00+00:00"]),
    ("0 0 * 2 1#5", "UTC", "2024-01-01T00:00+00:00",
     ["2044-02-29T00:00:00+00:00", "2072-02-29T00:00:00+00:00"]),
    ("0 0 L 2 *", "UTC", "2024-01-01T00:00+00:00",
     ["2024-02-29T00:00:00+00:00", "2025-02-28T00:00:00+00:00"]),
    # --- Day extensions.
    ("0 0 * * 5#3", "UTC", "2024-01-01T00:00+00:00",
     ["2024-01-19T00:00:00+00:00", "2024-02-16T00:00:00+00:00"]),
    ("0 0 * * 7L", "UTC", "2024-03-01T00:00+00:00",  # last Sunday
     ["2024-03-31T00:00:00+00:00", "2024-04-28T00:00:00+00:00"]),
    # LW: March 31 2024 is a Sunday -> Friday 29th; August 31 is a Saturday -> 30th.
    ("0 0 LW 3,8 *", "UTC", "2024-01-01T00:00+00:00",
     ["2024-03-29T00:00:00+00:00", "2024-08-30T00:00:00+00:00"]),
    # 15W: June 15 2024 is a Saturday -> 14th; September 15 a Sunday -> 16th.
    ("0 0 15W 6,9 *", "UTC", "2024-01-01T00:00+00:00",
     ["2024-06-14T00:00:00+00:00", "2024-09-16T00:00:00+00:00"]),
    # 1W never leaves the month: June 1 2024 is a Saturday -> Monday 3rd.
    ("0 0 1W 6 *", "UTC", "2024-01-01T00:00+00:00", ["2024-06-03T00:00:00+00:00"]),
    # 31W: March 31 2024 (Sunday) -> Friday 29th; months shorter than 31 days skip.
    ("0 0 31W * *", "UTC", "2024-02-01T00:00+00:00",
     ["2024-03-29T00:00:00+00:00", "2024-05-31T00:00:00+00:00"]),
    # --- Debian's day rule. Both restricted: OR (Fridays, and the 13th).
    ("0 0 13 * 5", "UTC", "2024-09-01T00:00+00:00",
     ["2024-09-06T00:00:00+00:00", "2024-09-13T00:00:00+00:00", "2024-09-20T00:00:00+00:00",
      "2024-09-27T00:00:00+00:00", "2024-10-04T00:00:00+00:00", "2024-10-11T00:00:00+00:00",
      "2024-10-13T00:00:00+00:00"]),
    # Day-of-month starts with '*': AND (days 1, 14, 27 that are Fridays).
    ("0 0 */13 * 5", "UTC", "2024-09-01T00:00+00:00",
     ["2024-09-27T00:00:00+00:00", "2024-11-01T00:00:00+00:00"]),
    # '?' counts as a star: AND again, so only Friday the 13th.
    ("0 0 13 * ?", "UTC", "2024-09-01T00:00+00:00",
     ["2024-09-13T00:00:00+00:00", "2024-10-13T00:00:00+00:00"]),
    ("0 0 ? * FRI", "UTC", "2024-09-01T00:00+00:00",
     ["2024-09-06T00:00:00+00:00", "2024-09-13T00:00:00+00:00"]),
    # --- Steps, ranges, names.
    # */7 resets at every hour: :56 is followed by :00, not :03.
    ("*/7 * * * *", "UTC", "2024-01-01T10:50+00:00",
     ["2024-01-01T10:56:00+00:00", "2024-01-01T11:00:00+00:00", "2024-01-01T11:07:00+00:00"]),
    # Debian reads a-a/n as the one-value range a..a (cronsim reads it as a/n).
    ("0 5-5/2 * * *", "UTC", "2024-01-01T00:00+00:00",
     ["2024-01-01T05:00:00+00:00", "2024-01-02T05:00:00+00:00"]),
    ("0 5/6 * * *", "UTC", "2024-01-01T00:00+00:00",  # a/n is a-max/n: 5, 11, 17, 23
     ["2024-01-01T05:00:00+00:00", "2024-01-01T11:00:00+00:00",
      "2024-01-01T17:00:00+00:00", "2024-01-01T23:00:00+00:00", "2024-01-02T05:00:00+00:00"]),
    ("0 0 * * 1/2", "UTC", "2024-01-01T00:00+00:00",  # 1-7/2: Mon, Wed, Fri, Sun
     ["2024-01-03T00:00:00+00:00", "2024-01-05T00:00:00+00:00", "2024-01-07T00:00:00+00:00",
      "2024-01-08T00:00:00+00:00"]),
    ("0 0 * * 7", "UTC", "2024-01-01T00:00+00:00", ["2024-01-07T00:00:00+00:00"]),
    ("0 0 * * 0", "UTC", "2024-01-01T00:00+00:00", ["2024-01-07T00:00:00+00:00"]),
    ("0 0 * * sun", "UTC", "2024-01-01T00:00+00:00", ["2024-01-07T00:00:00+00:00"]),
    ("0 0 * * 5-7", "UTC", "2024-01-01T00:00+00:00",
     ["2024-01-05T00:00:00+00:00", "2024-01-06T00:00:00+00:00", "2024-01-07T00:00:00+00:00",
      "2024-01-12T00:00:00+00:00"]),
    ("0 9 1 jan,Jul,DEC *", "UTC", "2024-01-01T12:00+00:00",
     ["2024-07-01T09:00:00+00:00", "2024-12-01T09:00:00+00:00", "2025-01-01T09:00:00+00:00"]),
    ("0 0 * * Mon-fri/2", "UTC", "2024-01-01T12:00+00:00",
     ["2024-01-03T00:00:00+00:00", "2024-01-05T00:00:00+00:00", "2024-01-08T00:00:00+00:00"]),
    # --- Six fields: seconds first.
    ("*/20 * * * * *", "UTC", "2024-01-01T00:00:00.500+00:00",
     ["2024-01-01T00:00:20+00:00", "2024-01-01T00:00:40+00:00", "2024-01-01T00:01:00+00:00"]),
    ("30 0 12 * * *", "UTC", "2024-01-01T00:00+00:00",
     ["2024-01-01T12:00:30+00:00", "2024-01-02T12:00:30+00:00"]),
    # --- Macros.
    ("@yearly", "UTC", "2024-01-01T00:00+00:00", ["2025-01-01T00:00:00+00:00"]),
    ("@annually", "UTC", "2024-06-01T00:00+00:00", ["2025-01-01T00:00:00+00:00"]),
    ("@monthly", "UTC", "2024-01-15T00:00+00:00",
     ["2024-02-01T00:00:00+00:00", "2024-03-01T00:00:00+00:00"]),
    ("@weekly", "UTC", "2024-01-01T00:00+00:00",
     ["2024-01-07T00:00:00+00:00", "2024-01-14T00:00:00+00:00"]),
    ("@daily", "UTC", "2024-01-01T00:00+00:00",
     ["2024-01-02T00:00:00+00:00", "2024-01-03T00:00:00+00:00"]),
    ("@MIDNIGHT", "UTC", "2024-01-01T00:00+00:00", ["2024-01-02T00:00:00+00:00"]),
    ("@hourly", "UTC", "2024-01-01T00:00+00:00",
     ["2024-01-01T01:00:00+00:00", "2024-01-01T02:00:00+00:00"]),
]  # fmt: skip


@pytest.mark.parametrize(("expr", "tz", "start", "expected"), TABLE)
def test_table(expr: str, tz: str, start: str, expected: list[str]) -> None:
    assert occurrences(expr, tz, start, len(expected)) == expected


def cronsim_first(expr: str, tz: str, start: str, n: int) -> list[str]:
    zone = ZoneInfo(tz)
    it = CronSim(expr, datetime.fromisoformat(start).astimezone(zone))
    return [next(it).isoformat(timespec="seconds") for _ in range(n)]


def test_cronsim_reads_a_a_step_as_a_step() -> None:
    # Debian's get_range() reads "5-5" as num1=5, num2=5 and then steps from 5 to 5:
    # one value. cronsim turns the one-element set {5} into 5-23/2.
    assert cronsim_first("0 5-5/2 * * *", "UTC", "2024-01-01T00:00+00:00", 2) == [
        "2024-01-01T05:00:00+00:00",
        "2024-01-01T07:00:00+00:00",
    ]


def test_cronsim_skips_valid_times_after_lord_howe_gap() -> None:
    # From 01:55 the next wall times are 01:56 .. 01:59, then 02:30 (the gap is
    # 02:00-02:29), then 03:00, which exists and matches "*/10 3". cronsim's
    # advance_hour() rewinds 02:30 to 02:00 (a wall time in the gap, read with
    # the old +10:30 offset, i.e. 02:30 +11:00) and adds an hour: 03:30.
    assert cronsim_first("*/10 1,3 * * *", LHI, "2023-10-01T01:55+10:30", 1) == [
        "2023-10-01T03:30:00+11:00"
    ]


def test_cronsim_misses_the_hour_after_a_skipped_midnight() -> None:
    # 2018-11-04 (a Sunday) starts at 01:00 in Sao Paulo, and 01:00-01:59 exist, so
    # "*/20 1 * * SUN" must run at 01:00. cronsim's advance_day() moves to the new
    # day at the nonexistent 00:00 (read with the old offset: 01:00 -02:00) and
    # advance_hour() adds whole hours to it, reaching 02:00: hour 1 is skipped.
    got = cronsim_first("*/20 1 * * SUN", SAO, "2018-11-03T12:00-03:00", 1)
    assert got == ["2018-11-11T01:00:00-02:00"]


def test_cronsim_looks_back_from_inside_a_repeated_hour() -> None:
    # cronsim walks fixed-time jobs in naive wall time; from 01:10 of the second
    # pass it offers 01:45 of the first pass, which is before the start.
    got = cronsim_first("45 1 * * *", NY, "2024-11-03T01:10-05:00", 1)
    assert got == ["2024-11-03T01:45:00-04:00"]
    assert ms(got[0]) < ms("2024-11-03T01:10-05:00")


def test_next_after_mid_second_is_strictly_after() -> None:
    e = CronExpr.parse("* * * * * *")
    assert e.next_after(1_000) == 2_000
    assert e.next_after(1_500) == 2_000
    assert e.next_after(1_999) == 2_000
    assert e.next_after(-1) == 0
    assert e.next_after(-1_500) == -1_000


def test_occurrences_are_whole_seconds_and_increasing() -> None:
    e = CronExpr.parse("*/7 */13 * * * *", NY)
    got = list(islice(e.iter_after(ms("2024-11-02T00:00-04:00")), 2000))
    assert all(u % 1000 == 0 for u in got)
    assert all(a < b for a, b in pairwise(got))


def test_parse_keeps_text_and_zone() -> None:
    e = CronExpr.parse("0 9 * * MON-FRI", "Europe/London")
    assert (e.text, e.tz) == ("0 9 * * MON-FRI", "Europe/London")
    assert CronExpr.parse("@daily").tz == "UTC"
    assert e == CronExpr.parse("0 9 * * MON-FRI", "Europe/London")


def test_search_ends_before_year_10000() -> None:
    e = CronExpr.parse("0 0 29 2 *")
    assert e.next_after(ms("9996-03-01T00:00+00:00")) is None
    assert e.next_after(ms("9995-03-01T00:00+00:00")) == ms("9996-02-29T00:00+00:00")


def test_job_whose_times_never_exist_ends_without_a_long_search() -> None:
    # Since 2007 New York's second Sunday of March has no 02:xx; a job that runs
    # only then (and is not fixed-time) never fires again. The search gives up.
    e = CronExpr.parse("*/5 2 * 3 0#2", NY)
    assert e.next_after(ms("2010-01-01T00:00-05:00")) is None
