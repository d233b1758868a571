"""Cron benchmark: jobsched.cron against croniter and cronsim, in the same run.

    .venv/bin/python bench/cron_bench.py [--quick]

Prints microseconds per call (best of several rounds) and the ratio peer/us
(higher is better for us). Cases:
  (a) iterate `*/5 * * * *` (UTC), per occurrence
  (b) parse + first occurrence of `*/5 * * * *`: ours with its parse cache hit
      (the same text again, as a scheduler re-reading its jobs does), with the
      parse cache missed (a new expression; the shared calendar/zone caches
      warm), and cold (every cache emptied before each call)
  (c) sparse: parse + first 3 occurrences of `0 0 29 2 *` and `0 0 * 2 1#5`
  (d) America/New_York: `30 2 * * *` iterated over a year (365 occurrences,
      both DST changes), per occurrence; warm zone cache and cold
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from itertools import islice
from pathlib import Path
from zoneinfo import ZoneInfo

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from croniter import croniter
from cronsim import CronSim

from jobsched.cron import CronExpr
from jobsched.cron import expr as cron

START = datetime(2024, 1, 1, tzinfo=UTC)
START_MS = int(START.timestamp() * 1000)
NY = ZoneInfo("America/New_York")
START_NY = datetime(2024, 1, 1, tzinfo=NY)
START_NY_MS = int(START_NY.timestamp() * 1000)
ROUNDS = 5


def clear_caches() -> None:
    """Empty every cache jobsched.cron keeps (parse, month layouts, zones and their
    offsets), through the package's own list so that a cache added later is emptied too."""
    cron.clear_caches()


def per_call(fn: Callable[[int], object], n: int, calls_per_n: int = 1) -> float:
    """Best-of-ROUNDS microseconds per call; fn(n) performs n * calls_per_n calls."""
    best = float("inf")
    for _ in range(ROUNDS):
        t0 = time.perf_counter()
        fn(n)
        best = min(best, time.perf_counter() - t0)
    return best / (n * calls_per_n) * 1e6


# (a) iterate */5
def ours_iter(n: int) -> None:
    it = CronExpr.parse("*/5 * * * *").iter_after(START_MS)
    for _ in range(n):
        next(it)


def croniter_iter(n: int) -> None:
    it = croniter("*/5 * * * *", START)
    for _ in range(n):
        it.get_next(float)


def cronsim_iter(n: int) -> None:
    it = CronSim("*/5 * * * *", START)
    for _ in range(n):
        next(it)


# (b) parse + first
def ours_first(expr: str) -> Callable[[int], None]:
    def run(n: int) -> None:
        for _ in range(n):
            CronExpr.parse(expr).next_after(START_MS)

    return run


def ours_first_cold(expr: str) -> Callable[[int], None]:
    def run(n: int) -> None:
        for _ in range(n):
            clear_caches()
            CronExpr.parse(expr).next_after(START_MS)

    return run


def ours_first_miss(expr: str) -> Callable[[int], None]:
    def run(n: int) -> None:
        for _ in range(n):
            cron._parse_cached.cache_clear()
            CronExpr.parse(expr).next_after(START_MS)

    return run


def clear_only(n: int) -> None:  # the cost of clear_caches itself, subtracted
    for _ in range(n):
        clear_caches()


def croniter_first(expr: str) -> Callable[[int], None]:
    def run(n: int) -> None:
        for _ in range(n):
            croniter(expr, START).get_next(float)

    return run


def cronsim_first(expr: str) -> Callable[[int], None]:
    def run(n: int) -> None:
        for _ in range(n):
            next(CronSim(expr, START))

    return run


# (c) sparse: parse + first 3
def ours_sparse(expr: str) -> Callable[[int], None]:
    def run(n: int) -> None:
        for _ in range(n):
            list(islice(CronExpr.parse(expr).iter_after(START_MS), 3))

    return run


def croniter_sparse(expr: str) -> Callable[[int], None]:
    def run(n: int) -> None:
        for _ in range(n):
            it = croniter(expr, START)
            for _ in range(3):
                it.get_next(float)

    return run


def cronsim_sparse(expr: str) -> Callable[[int], None]:
    def run(n: int) -> None:
        for _ in range(n):
            it = CronSim(expr, START)
            for _ in range(3):
                next(it)

    return run


# (d) New York over a year
def ours_ny(n: int) -> None:
    for _ in range(n):
        list(islice(CronExpr.parse("30 2 * * *", "America/New_York").iter_after(START_NY_MS), 365))


def ours_ny_cold(n: int) -> None:
    for _ in range(n):
        clear_caches()
        list(islice(CronExpr.parse("30 2 * * *", "America/New_York").iter_after(START_NY_MS), 365))


def croniter_ny(n: int) -> None:
    for _ in range(n):
        it = croniter("30 2 * * *", START_NY)
        for _ in range(365):
            it.get_next(float)


def cronsim_ny(n: int) -> None:
    for _ in range(n):
        it = CronSim("30 2 * * *", START_NY)
        for _ in range(365):
            next(it)


def main() -> None:
    quick = "--quick" in sys.argv
    k = 10 if quick else 1  # divide the work in --quick mode
    clear_cost = per_call(clear_only, 2000 // k)
    rows: list[tuple[str, float, float, float]] = []

    rows.append(
        (
            "(a) */5 iterate, per occurrence",
            per_call(ours_iter, 20000 // k),
            per_call(croniter_iter, 2000 // k),
            per_call(cronsim_iter, 5000 // k),
        )
    )
    expr = "*/5 * * * *"
    peers_b = (per_call(croniter_first(expr), 500 // k), per_call(cronsim_first(expr), 2000 // k))
    rows.append(("(b) parse + first, cache hit", per_call(ours_first(expr), 5000 // k), *peers_b))
    miss = per_call(ours_first_miss(expr), 2000 // k)
    rows.append(("(b) parse + first, parse cache missed", miss, *peers_b))
    cold = per_call(ours_first_cold(expr), 2000 // k) - clear_cost
    rows.append(("(b) parse + first, cold", cold, *peers_b))
    for sparse in ("0 0 29 2 *", "0 0 * 2 1#5"):
        rows.append(
            (
                f"(c) {sparse}: parse + 3 occurrences",
                per_call(ours_sparse(sparse), 500 // k),
                per_call(croniter_sparse(sparse), max(1, 20 // k)),
                per_call(cronsim_sparse(sparse), max(1, 100 // k)),
            )
        )
    peers_d = (
        per_call(croniter_ny, max(1, 5 // k), 365),
        per_call(cronsim_ny, max(1, 10 // k), 365),
    )
    rows.append(("(d) NY 30 2 * * *, per occurrence", per_call(ours_ny, 20 // k, 365), *peers_d))
    cold_ny = per_call(ours_ny_cold, max(1, 10 // k), 365) - clear_cost / 365
    rows.append(("(d) NY 30 2 * * *, cold caches", cold_ny, *peers_d))

    print(f"Python {sys.version.split()[0]}; microseconds per call, best of {ROUNDS} rounds")
    header = f"| {'case':<40} | {'us':>8} | {'croniter':>9} | {'cronsim':>8} |"
    header += f" {'croniter/us':>11} | {'cronsim/us':>10} |"
    print(header)
    print("|" + "|".join("-" * (len(c)) for c in header.split("|")[1:-1]) + "|")
    for name, us, ci, cs in rows:
        print(
            f"| {name:<40} | {us:8.2f} | {ci:9.2f} | {cs:8.2f} | {ci / us:10.1f}x | {cs / us:9.1f}x |"
        )


if __name__ == "__main__":
    main()
