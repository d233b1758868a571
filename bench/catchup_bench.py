"""Catch-up after an outage: execute_jobs with minutely cron jobs a year late, beside APScheduler 3.

    .venv/bin/python bench/catchup_bench.py [--jobs N] [--late-days D] [--peer-jobs K]
    .venv/bin/python bench/catchup_bench.py --quick   # 100 jobs; the peer on 1 job, 7 days: ~2 s
    .venv/bin/python bench/catchup_bench.py --smoke   # 10 jobs 2 days late: proves it runs

N `* * * * *` jobs (UTC) are scheduled at T; nothing runs until T + D days. Then:

1. jobsched: one ``engine.execute_due(T + D days)`` on ``Engine(MemoryStore())``
   (what ``execute_jobs`` does): every job is claimed once, its missed occurrences
   are merged into that run and counted as ``skipped``. Timed: that call. The
   skipped count per job is printed too (policies.count_between capped its walk at
   100,000 before it called CronExpr.count_between).
2. jobsched's counting alone: ``CronExpr.count_between(due, now)`` for each job.
3. APScheduler 3: a late wake-up computes each job's missed run times with
   ``job._get_run_times(now)`` (a CronTrigger enumerates every missed
   occurrence; the scheduler then coalesces them). At ~20 us per occurrence a
   year costs ~10 s per job, so it is timed on K jobs and scaled to N (the jobs
   are identical and independent). --quick also times it over at most 7 days
   and scales that to D days (its cost is linear in the occurrences).

Everything stays in memory: nothing is written to disk. Without APScheduler 3
(bench/peers.py) only our rows are printed.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from peers import peer, positive

from jobsched import validate
from jobsched.cron import CronExpr
from jobsched.engine import Engine
from jobsched.stores.memory import MemoryStore

T = 1_704_067_200_000  # 2024-01-01T00:00:00Z
DAY_MS = 86_400_000
CRON = "* * * * *"


@dataclass(frozen=True)
class Ours:
    execute_s: float
    count_s: float
    skipped: list[int]
    exact: int  # what CronExpr.count_between says each job skipped


def bench_ours(n: int, late_ms: int) -> Ours:
    engine = Engine(MemoryStore())
    spec = validate.schedule_spec({"task": "tick", "cron": CRON})
    jobs = [engine.schedule(spec, T) for _ in range(n)]
    now = T + late_ms
    start = time.perf_counter()
    ran, failed = engine.execute_due(now)
    execute_s = time.perf_counter() - start
    assert len(ran) == n and not failed, (len(ran), len(failed))
    skipped = [got.skipped for job in jobs if (got := engine.store.get(job.job_id))]
    expr = CronExpr.parse(CRON)
    dues = [job.due_at if job.due_at is not None else T for job in jobs]
    start = time.perf_counter()
    counts = [expr.count_between(due, now) for due in dues]
    count_s = time.perf_counter() - start
    return Ours(execute_s, count_s, skipped, counts[0])


def bench_aps(k: int, timed_ms: int) -> tuple[float, int] | None:
    """Seconds for k jobs' _get_run_times over `timed_ms`, and the run times of one;
    None when APScheduler 3 is not installed (peers.peer said so)."""
    if peer("apscheduler", "apscheduler", "3.") is None:
        return None
    from apscheduler.job import Job  # type: ignore[import-untyped]
    from apscheduler.schedulers.background import (  # type: ignore[import-untyped]
        BackgroundScheduler,
    )
    from apscheduler.triggers.cron import CronTrigger  # type: ignore[import-untyped]

    scheduler = BackgroundScheduler(timezone="UTC")  # never started: only a parent for jobs
    first = datetime.fromtimestamp((T + 60_000) / 1000, UTC)
    jobs = [
        Job(
            scheduler,
            id=f"j{i}",
            func=print,
            trigger=CronTrigger.from_crontab(CRON, timezone="UTC"),
            executor="default",
            args=(),
            kwargs={},
            name=f"j{i}",
            misfire_grace_time=None,
            coalesce=True,
            max_instances=1,
            next_run_time=first,
        )
        for i in range(k)
    ]
    now = datetime.fromtimestamp(T / 1000, UTC) + timedelta(milliseconds=timed_ms)
    start = time.perf_counter()
    runs = [len(job._get_run_times(now)) for job in jobs]
    return time.perf_counter() - start, runs[0]


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--jobs", type=positive, default=1000, help="cron jobs (default 1000)")
    parser.add_argument("--late-days", type=positive, default=365, help="how late (default 365)")
    parser.add_argument("--peer-jobs", type=positive, default=2, help="APScheduler jobs timed")
    parser.add_argument("--quick", action="store_true", help="100 jobs; peer on 1 job, 7 days")
    parser.add_argument("--smoke", action="store_true", help="10 jobs 2 days late")
    args = parser.parse_args()
    if args.smoke:
        args.jobs, args.late_days, args.quick = 10, 2, True
    return args


def main() -> None:
    args = arguments()
    n, k = (min(args.jobs, 100), 1) if args.quick else (args.jobs, args.peer_jobs)
    late_ms = args.late_days * DAY_MS
    peer_ms = min(late_ms, 7 * DAY_MS) if args.quick else late_ms
    py = ".".join(map(str, sys.version_info[:3]))
    print(f"Python {py}; {n:,} `{CRON}` jobs (UTC), {args.late_days} days late\n")

    ours = bench_ours(n, late_ms)
    row("jobsched execute_due", ours.execute_s, f"{ours.execute_s / n * 1e6:,.0f} us/job")
    print(f"  skipped per job: {ours.skipped[0]:,} (exactly: {ours.exact:,})")
    row("jobsched count_between alone", ours.count_s, f"{ours.count_s / n * 1e6:,.1f} us/job")

    peer_run = bench_aps(k, peer_ms)
    if peer_run is None:
        return
    seconds, runs = peer_run
    scaled = seconds / k * n * (late_ms / peer_ms)
    days = peer_ms / DAY_MS
    row("APScheduler 3 _get_run_times", scaled, f"timed: {k} job(s), {days:g} days, scaled")
    print(f"  run times per job over {days:g} days: {runs:,}")
    print(f"  ratio APScheduler / execute_due:   {scaled / ours.execute_s:,.1f}x")
    print(f"  ratio APScheduler / count_between: {scaled / ours.count_s:,.1f}x")


def row(name: str, seconds: float, note: str) -> None:
    print(f"{name:<30} {seconds * 1e3:12.1f} ms  ({note})")


if __name__ == "__main__":
    main()
