"""Malformed input: only CronError / Malformed come out, fast, and the message says why."""

from __future__ import annotations

import time
from itertools import islice

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jobsched.cron import CronError, CronExpr
from jobsched.errors import JobschedError, Malformed

# Generous for a loaded 2-core machine; a real call takes microseconds to a few ms.
SLOW_S = 0.25


def parse_and_use(text: str, tz: str, start: int) -> None:
    began = time.perf_counter()
    try:
        e = CronExpr.parse(text, tz)
    except Malformed as err:
        assert err.code == 12
        assert err.field in ("timezone", "cron") or err.field.startswith("cron.")
        assert err.problem
    else:
        got = list(islice(e.iter_after(start), 3))
        assert all(u > start for u in got)
        assert e.next_after(start) == (got[0] if got else None)
    assert time.perf_counter() - began < SLOW_S, text


@settings(max_examples=1500, deadline=None, derandomize=True)
@given(st.text(max_size=60))
def test_random_text_only_raises_cron_errors(text: str) -> None:
    parse_and_use(text, "UTC", 0)


TOKENS = st.sampled_from(
    [
        *list("0123456789*/-,?LW#@ "),
        "60",
        "24",
        "32",
        "13",
        "99999",
        "00",
        "7",
        "JAN",
        "sun",
        "FRI",
        "l",
        "w",
        "\t",
        "@daily",
        "@hourly",
        "@reboot",
        "L-2",
        "5L",
        "1#6",
        "LW",
        "15W",
        "0W",
    ]
)
ZONES = st.sampled_from(
    [
        "UTC",
        "America/New_York",
        "Australia/Lord_Howe",
        "America/Sao_Paulo",
        "Pacific/Apia",
        "Europe/London",
        "Nowhere/Land",
        "",
        "../etc/passwd",
        "/etc/localtime",
        "America",
    ]
)


@st.composite
def near_valid(draw: st.DrawFn) -> str:
    n_fields = draw(st.sampled_from([1, 4, 5, 5, 5, 6, 6, 7]))
    fields = ["".join(draw(st.lists(TOKENS, min_size=1, max_size=4))) for _ in range(n_fields)]
    return " ".join(fields)


@settings(
    max_examples=1500,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(near_valid(), ZONES, st.integers(-(10**14), 3 * 10**14))
def test_near_valid_expressions_only_raise_cron_errors(text: str, tz: str, start: int) -> None:
    parse_and_use(text, tz, start)


@pytest.mark.parametrize(
    ("text", "field", "words"),
    [
        ("", "cron", "got 0"),
        ("* * * *", "cron", "expected 5 fields"),
        ("* * * * * * *", "cron", "got 7"),
        ("@reboot", "cron", "unknown macro"),
        ("61 * * * *", "cron.minute", "out of range 0-59"),
        ("* 24 * * *", "cron.hour", "out of range 0-23"),
        ("* * 0 * *", "cron.day_of_month", "out of range 1-31"),
        ("* * * 13 *", "cron.month", "out of range 1-12"),
        ("* * * * 8", "cron.day_of_week", "out of range 0-7"),
        ("* * * FOO *", "cron.month", "not a number or a name"),
        ("* 5-1 * * *", "cron.hour", "runs backwards"),
        ("*/0 * * * *", "cron.minute", "positive"),
        ("1,,2 * * * *", "cron.minute", "missing"),
        ("* * * * 1#6", "cron.day_of_week", "1-5"),
        ("* * * * L", "cron.day_of_week", "needs a weekday"),
        ("* * L/2 * *", "cron.day_of_month", "not understood"),
        ("5L * * * *", "cron.minute", "only for the day fields"),
        ("* * * * * \u00e9", "cron", "non-ASCII"),
        # Expressions that can never fire are malformed too.
        ("0 0 30 2 *", "cron.day_of_month", "never fire"),
        ("0 0 31 4,6,9,11 *", "cron.day_of_month", "never fire"),
        ("0 0 30W 2 *", "cron.day_of_month", "day 30 does not occur in Feb"),
        ("0 0 */30 2 1#5", "cron.day_of_week", "never fire"),
    ],
)
def test_error_names_the_field_and_why(text: str, field: str, words: str) -> None:
    with pytest.raises(CronError) as info:
        CronExpr.parse(text)
    assert info.value.field == field
    assert words in info.value.problem
    assert isinstance(info.value, JobschedError) and info.value.code == 12


@pytest.mark.parametrize(
    "text", ["0 0 31 2 5", "0 0 30 2 1#5", "0 0 L 2 *", "0 0 29 2 *", "0 0 * 2 1#5"]
)
def test_sparse_but_possible_expressions_are_valid(text: str) -> None:
    assert CronExpr.parse(text).next_after(0) is not None


def test_unknown_time_zone() -> None:
    with pytest.raises(Malformed) as info:
        CronExpr.parse("* * * * *", "Xyz/Abc")
    assert not isinstance(info.value, CronError)
    assert (info.value.field, info.value.problem) == ("timezone", "unknown time zone 'Xyz/Abc'")


@pytest.mark.parametrize("tz", ["", "America", "../../etc/passwd", "/etc/localtime", "a\x00b"])
def test_odd_time_zone_names(tz: str) -> None:
    with pytest.raises(Malformed) as info:
        CronExpr.parse("* * * * *", tz)
    assert info.value.field == "timezone"


def test_non_strings_are_rejected() -> None:
    with pytest.raises(CronError):
        CronExpr.parse(5)  # type: ignore[arg-type]
    with pytest.raises(Malformed):
        CronExpr.parse("* * * * *", None)  # type: ignore[arg-type]


def test_extreme_instants() -> None:
    e = CronExpr.parse("0 0 * * *", "America/New_York")
    assert e.next_after(10**18) is None
    first = e.next_after(-(10**18))
    assert first is not None and first < -62_000_000_000_000
