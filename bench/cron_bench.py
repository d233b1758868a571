"""Cron benchmark: jobsched.cron against croniter and cronsim, in the same run.

    .venv/bin/python bench/cron_bench.py            # 15 rounds: about 15 s
    .venv/bin/python bench/cron_bench.py --quick    # a tenth of the calls, 5 rounds: ~2 s
    .venv/bin/python bench/cron_bench.py --smoke    # one round of a few calls: proves it runs

Prints microseconds per call and the ratio peer/us (higher is better for us). Every
round times ours and then each peer on the same case, one right after the other
(a few tens of milliseconds each), so that a noisy neighbour on a shared machine
hits both alike: the table gives each library's median time over the rounds, and
each ratio is the median of the rounds' own ratios. A peer that is not installed is
named on one line and left out of the table (bench/peers.py).
Cases:
  (a) iterate `*/5 * * * *` (UTC), per occurrence
  (b) parse + first occurrence of `*/5 * * * *`: ours with its parse cache hit
      (the same text again, as a scheduler re-reading its jobs does), with the parse
      cache missed (a text never seen: the zone and calendar caches, shared by every
      expression, warm; no other cache is per text), and cold (every cache the
      package keeps emptied before each call, cron.expr.clear_caches(); its own
      cost is measured and subtracted). The same in America/New_York, cold.
  (c) sparse: parse + first 3 occurrences of `0 0 29 2 *` and `0 0 * 2 1#5`
  (d) America/New_York: `30 2 * * *` iterated over a year (365 occurrences,
      both DST changes), per occurrence; warm zone cache and cold
The peers have no caches: their time is the same in every row of a case.
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from itertools import islice
from pathlib import Path
from types import ModuleType
from zoneinfo import ZoneInfo

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from peers import installed, peer

from jobsched.cron import CronExpr
from jobsched.cron import expr as cron

START = datetime(2024, 1, 1, tzinfo=UTC)
START_MS = int(START.timestamp() * 1000)
NY = ZoneInfo("America/New_York")
START_NY = datetime(2024, 1, 1, tzinfo=NY)
START_NY_MS = int(START_NY.timestamp() * 1000)
EVERY_5 = "*/5 * * * *"
NIGHTLY = "30 2 * * *"

Run = Callable[[int], object]  # performs n calls


@dataclass
class Case:
    name: str
    ours: Run
    n: int  # calls per round at full size
    peers: dict[str, tuple[Run, int]]  # peer -> (its run, its calls per round)
    per: int = 1  # occurrences per call (per-occurrence rows)
    cold: bool = False  # subtract the cost of clear_caches
    times: dict[str, list[float]] = field(default_factory=dict)


# -- ours ----------------------------------------------------------------------


def ours_iter(n: int) -> None:
    it = CronExpr.parse(EVERY_5).iter_after(START_MS)
    for _ in range(n):
        next(it)


def ours_first(text: str, tz: str, start_ms: int, clear: Callable[[], None] | None) -> Run:
    def run(n: int) -> None:
        for _ in range(n):
            if clear is not None:
                clear()
            CronExpr.parse(text, tz).next_after(start_ms)

    return run


def parse_cache_clear() -> None:
    cron._parse_cached.cache_clear()


def clear_only(n: int) -> None:  # the cost of clear_caches itself, subtracted
    for _ in range(n):
        cron.clear_caches()


def ours_sparse(text: str) -> Run:
    def run(n: int) -> None:
        for _ in range(n):
            list(islice(CronExpr.parse(text).iter_after(START_MS), 3))

    return run


def ours_year(cold: bool) -> Run:
    def run(n: int) -> None:
        for _ in range(n):
            if cold:
                cron.clear_caches()
            expr = CronExpr.parse(NIGHTLY, "America/New_York")
            list(islice(expr.iter_after(START_NY_MS), 365))

    return run


# -- peers: a fresh iterator per call, as a scheduler without caches has -------------

Stepper = Callable[[], Callable[[], object]]  # makes an iterator; returns its "next"


def peer_steppers(text: str, start: datetime) -> dict[str, Stepper]:
    out: dict[str, Stepper] = {}
    if CRONITER is not None:
        croniter = CRONITER.croniter
        out["croniter"] = lambda: partial(croniter(text, start).get_next, float)
    if CRONSIM is not None:
        cronsim = CRONSIM.CronSim
        out["cronsim"] = lambda: cronsim(text, start).__next__
    return out


def calls(make: Stepper, count: int) -> Run:
    """n calls, each a fresh iterator and its first `count` occurrences."""

    def run(n: int) -> None:
        for _ in range(n):
            step = make()
            for _ in range(count):
                step()

    return run


def occurrences(make: Stepper) -> Run:
    """One iterator, n occurrences."""

    def run(n: int) -> None:
        step = make()
        for _ in range(n):
            step()

    return run


CRONITER: ModuleType | None = None
CRONSIM: ModuleType | None = None
# Calls per round at full size, for a case where ours makes 500: the peers are slower.
PEER_N = {"croniter": 1, "cronsim": 4}


def cases() -> list[Case]:
    def peers(text: str, start: datetime, count: int, n: int) -> dict[str, tuple[Run, int]]:
        made = peer_steppers(text, start).items()
        return {k: (calls(make, count), n * PEER_N[k]) for k, make in made}

    first = peers(EVERY_5, START, 1, 500)
    first_ny = peers(EVERY_5, START_NY, 1, 500)
    year = peers(NIGHTLY, START_NY, 365, 3)
    made = peer_steppers(EVERY_5, START).items()
    iterate = {k: (occurrences(make), 2000 * PEER_N[k]) for k, make in made}
    return [
        Case("(a) */5 iterate, per occurrence", ours_iter, 20000, iterate),
        Case("(b) parse + first, cache hit", ours_first(EVERY_5, "UTC", START_MS, None), 5000, first),
        Case("(b) parse + first, parse cache missed", ours_first(EVERY_5, "UTC", START_MS, parse_cache_clear), 2000, first),
        Case("(b) parse + first, cold", ours_first(EVERY_5, "UTC", START_MS, cron.clear_caches), 2000, first, cold=True),
        Case("(b) NY parse + first, cold", ours_first(EVERY_5, "America/New_York", START_NY_MS, cron.clear_caches), 2000, first_ny, cold=True),
        *[
            Case(f"(c) {text}: parse + 3 occurrences", ours_sparse(text), 500, peers(text, START, 3, 5))
            for text in ("0 0 29 2 *", "0 0 * 2 1#5")
        ],
        Case("(d) NY 30 2 * * *, per occurrence", ours_year(False), 20, year, per=365),
        Case("(d) NY 30 2 * * *, cold caches", ours_year(True), 10, year, per=365, cold=True),
    ]  # fmt: skip


# -- measuring -------------------------------------------------------------------


def timed(run: Run, n: int) -> float:
    start = time.perf_counter()
    run(n)
    return time.perf_counter() - start


def measure(case: Case, rounds: int, k: int) -> tuple[dict[str, float], dict[str, float]]:
    """Microseconds per call (per occurrence for `per` > 1), the median over rounds;
    and each peer's ratio to ours, the median of the rounds' ratios."""
    runs = {"us": (case.ours, case.n), **case.peers}
    if case.cold:
        runs["clear"] = (clear_only, case.n)
    ratios: dict[str, list[float]] = {}
    for _ in range(rounds):
        got = {}
        for name, (run, n) in runs.items():
            n = max(1, n // k)
            got[name] = timed(run, n) / n * 1e6 / case.per
        if case.cold:
            got["us"] -= got.pop("clear") / case.per
        for name, value in got.items():
            case.times.setdefault(name, []).append(value)
            if name != "us":
                ratios.setdefault(name, []).append(value / got["us"])
    times = {name: statistics.median(values) for name, values in case.times.items()}
    return times, {name: statistics.median(values) for name, values in ratios.items()}


def main() -> None:
    global CRONITER, CRONSIM
    smoke, quick = "--smoke" in sys.argv, "--quick" in sys.argv
    rounds, k = (1, 100) if smoke else (5, 10) if quick else (15, 3)
    CRONITER = peer("croniter", "croniter")
    CRONSIM = peer("cronsim", "cronsim")
    names = [p for p, mod in (("croniter", CRONITER), ("cronsim", CRONSIM)) if mod]
    versions = ", ".join(f"{p} {installed(p)}" for p in names) or "no peers"
    print(f"Python {sys.version.split()[0]}; {versions}; microseconds per call,")
    print(f"median of {rounds} rounds (ours, then each peer); ratios: median of the rounds' ratios")
    head = f"| {'case':<40} | {'us':>8} |" + "".join(f" {p:>9} |" for p in names)
    head += "".join(f" {p + '/us':>11} |" for p in names)
    print(head)
    print("|" + "|".join("-" * len(c) for c in head.split("|")[1:-1]) + "|")
    for case in cases():
        got, ratio = measure(case, rounds, k)
        us = got["us"]
        cells = "".join(f" {got[p]:9.2f} |" for p in names)
        cells += "".join(f" {ratio[p]:10.1f}x |" for p in names)
        print(f"| {case.name:<40} | {us:8.2f} |{cells}", flush=True)


if __name__ == "__main__":
    main()
