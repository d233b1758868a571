"""jobsched.Client on SQLite beside APScheduler 3's add_job on a SQLite file.

    .venv/bin/python bench/client_bench.py            # 100,000 jobs, 3 runs: ~30 s
    .venv/bin/python bench/client_bench.py --quick    # 20,000 jobs: ~10 s
    .venv/bin/python bench/client_bench.py --smoke    # 300 jobs, one run: proves it runs

1. ``Client("FILE.db").schedule_many(specs)``: durable (SQLite synchronous=FULL,
   the default), each call one transaction of --batch specs like
   ``{"task": "send-email", "payload": {"to": "user<i>@example.com"}}``;
   jobs per second ("/s") over --jobs jobs, median of the runs, each on a fresh file.
   Issue 10's target: 100,000 jobs/s.
2. ``Client.schedule`` one job at a time (each call its own transaction and fsync).
3. APScheduler 3 ``add_job`` on a SQLAlchemyJobStore on a SQLite file
   (scheduler started paused, so each add_job is stored at once; it has no
   batch call), and the ratios: ours one at a time / theirs, and our batch /
   theirs.

Peers: APScheduler 3 and SQLAlchemy (bench/peers.py); without them only our
figures are printed. Every file lives in a TemporaryDirectory ($BENCH_TMP or
the system's), removed at the end.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from peers import installed, peer, positive  # noqa: E402
from sqlite_bench import apscheduler_add_job  # noqa: E402

from jobsched import Client  # noqa: E402

TARGET = 100_000  # issue 10: SQLite schedule_many, durable jobs/s


def specs(n: int, start: int = 0) -> list[dict[str, object]]:
    return [
        {"task": "send-email", "payload": {"to": f"user{i}@example.com"}}
        for i in range(start, start + n)
    ]


def batch_rate(tmp: Path, n: int, batch: int, run: int) -> float:
    """Jobs/s of schedule_many over n jobs, in calls of ``batch``, on a fresh file."""
    with Client(tmp / f"many{run}.db") as client:
        client.schedule_many(specs(10))  # the file and its schema exist before timing
        parts = [specs(min(batch, n - i), i) for i in range(0, n, batch)]
        start = time.perf_counter()
        for part in parts:
            done = client.schedule_many(part)
        elapsed = time.perf_counter() - start
        assert len(done) == len(parts[-1]) and done[-1].job_id
        assert client.stats().total == n + 10
    return n / elapsed


def single_rate(tmp: Path, n: int) -> float:
    with Client(tmp / "single.db") as client:
        client.schedule("send-email", {"to": "warm@example.com"})
        start = time.perf_counter()
        for i in range(n):
            client.schedule("send-email", {"to": f"user{i}@example.com"})
        elapsed = time.perf_counter() - start
    return n / elapsed


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--jobs", type=positive, default=100_000, help="jobs per schedule_many run")
    parser.add_argument("--batch", type=positive, default=10_000, help="specs per call")
    parser.add_argument("--single", type=positive, default=2_000, help="Client.schedule calls")
    parser.add_argument(
        "--aps-jobs", type=positive, default=2_000, help="APScheduler add_job count"
    )
    parser.add_argument("--runs", type=positive, default=3, help="schedule_many runs")
    parser.add_argument("--quick", action="store_true", help="small sizes: ~10 s")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: proves it runs")
    args = parser.parse_args()
    if args.quick:
        args.jobs, args.single, args.aps_jobs = 20_000, 500, 500
    if args.smoke:
        args.jobs, args.batch, args.single, args.aps_jobs, args.runs = 300, 100, 20, 20, 1
    return args


def main() -> None:
    args = arguments()
    aps = peer("apscheduler", "apscheduler", "3.") is not None
    aps = aps and peer("sqlalchemy", "sqlalchemy") is not None
    py = ".".join(map(str, sys.version_info[:3]))
    peer_version = f"APScheduler {installed('apscheduler')}" if aps else "no APScheduler"
    print(f"Python {py}; {peer_version}; {os.cpu_count()} cores\n")
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP")) as where:
        tmp = Path(where)
        rates = [batch_rate(tmp, args.jobs, args.batch, run) for run in range(args.runs)]
        many = statistics.median(rates)
        single = single_rate(tmp, args.single)
        low, high = min(rates), max(rates)
        print(
            f"Client.schedule_many, SQLite FULL, {args.batch:,} per call: {many:10,.0f}/s"
            f" (median of {args.runs}: {low:,.0f}-{high:,.0f}; target {TARGET:,}: "
            f"{many / TARGET:.2f}x of it)"
        )
        print(f"Client.schedule one at a time, SQLite FULL:       {single:10,.0f}/s")
        if aps:
            theirs = apscheduler_add_job(tmp, args.aps_jobs)
            print(f"APScheduler 3 add_job, SQLAlchemyJobStore/SQLite: {theirs:10,.0f}/s")
            print(f"ratio, Client.schedule / add_job (one at a time): {single / theirs:.1f}x")
            print(f"ratio, Client.schedule_many / add_job:            {many / theirs:.1f}x")


if __name__ == "__main__":
    main()
