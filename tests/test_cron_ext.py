"""Extensions cronsim lacks (nW, macros, '?'), against expectations derived by hand."""

from __future__ import annotations

import calendar
from datetime import UTC, date, datetime, timedelta
from itertools import islice

from hypothesis import given, settings
from hypothesis import strategies as st

from jobsched.cron import CronExpr


def nearest_weekday(year: int, month: int, n: int) -> date | None:
    """Quartz nW, written from its definition: the weekday closest to day n in the
    month; a Saturday moves back a day and a Sunday forward, unless that would
    leave the month, in which case they move to the Monday 3rd / Friday before."""
    length = calendar.monthrange(year, month)[1]
    if n > length:
        return None
    d = date(year, month, n)
    if d.weekday() == 5:
        d = d - timedelta(days=1) if n > 1 else d + timedelta(days=2)
    elif d.weekday() == 6:
        d = d + timedelta(days=1) if n < length else d - timedelta(days=2)
    return d


@settings(max_examples=300, deadline=None, derandomize=True)
@given(n=st.integers(1, 31), year=st.integers(1970, 2300))
def test_nearest_weekday_matches_definition(n: int, year: int) -> None:
    expected = [nearest_weekday(year, m, n) for m in range(1, 13) if nearest_weekday(year, m, n)]
    start = int(datetime(year, 1, 1, tzinfo=UTC).timestamp()) * 1000 - 1
    e = CronExpr.parse(f"0 0 {n}W * *")
    got = [
        datetime.fromtimestamp(u / 1000, UTC).date()
        for u in islice(e.iter_after(start), len(expected))
    ]
    assert got == expected


MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
ZONES = st.sampled_from(["UTC", "America/New_York", "America/Sao_Paulo", "Australia/Lord_Howe"])


@settings(max_examples=300, deadline=None, derandomize=True)
@given(
    macro=st.sampled_from(sorted(MACROS)),
    zone=ZONES,
    start=st.integers(0, 2_000_000_000_000),
    upper=st.booleans(),
)
def test_macro_is_its_expansion(macro: str, zone: str, start: int, upper: bool) -> None:
    text = macro.upper() if upper else macro
    ours = list(islice(CronExpr.parse(text, zone).iter_after(start), 5))
    expanded = list(islice(CronExpr.parse(MACROS[macro], zone).iter_after(start), 5))
    assert ours == expanded


@settings(max_examples=300, deadline=None, derandomize=True)
@given(
    fields=st.lists(st.sampled_from(["*", "*/5", "1-3", "?"]), min_size=5, max_size=5),
    dow=st.sampled_from(["5", "1#2", "?", "*"]),
    zone=ZONES,
    start=st.integers(0, 2_000_000_000_000),
)
def test_question_mark_is_a_star(fields: list[str], dow: str, zone: str, start: int) -> None:
    text = " ".join([*fields[:4], dow])
    ours = list(islice(CronExpr.parse(text, zone).iter_after(start), 5))
    starred = list(islice(CronExpr.parse(text.replace("?", "*"), zone).iter_after(start), 5))
    assert ours == starred
