"""Dispatch lateness and throughput: jobsched's dispatcher beside APScheduler 3.

    .venv/bin/python bench/dispatch_bench.py [--jobs 10000] [--spread 10] [--workers 8]
    .venv/bin/python bench/dispatch_bench.py --quick   # 1,000 jobs over 2 s, 1 round: ~10 s
    .venv/bin/python bench/dispatch_bench.py --smoke   # 50 jobs over 0.2 s: proves it runs

1. Lateness (handler start minus due time) of ``--jobs`` no-op jobs whose due
   times are spread evenly over ``--spread`` seconds: jobsched's Dispatcher on
   the memory store (and, for reference, on SQLite), and APScheduler 3's
   BackgroundScheduler (MemoryJobStore, a ThreadPoolExecutor of the same size)
   on the very same due times. Each handler measures its own start.
2. Throughput: ``--throughput-jobs`` no-op jobs all due at once in a SQLite
   file (synchronous=FULL), ``--workers`` workers: jobs run per second, until
   the last is completed in the store; beside APScheduler 3 with its
   SQLAlchemyJobStore on a SQLite file.

The systems run one after the other in one process, never at the same time.
Peers: APScheduler 3 and SQLAlchemy (bench/peers.py); without them only our rows are
printed. The SQLite files live in a TemporaryDirectory, removed at the end.
"""

from __future__ import annotations

import argparse
import gc
import logging
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from peers import peer, positive

from jobsched.dispatcher import Dispatcher
from jobsched.engine import Engine
from jobsched.jobs import JobState
from jobsched.runner import Runner, TaskRegistry
from jobsched.spec import ScheduleSpec
from jobsched.stores.base import Store
from jobsched.stores.memory import MemoryStore
from jobsched.stores.sqlite import SQLiteStore


class Lateness:
    """Collects handler start minus due, in ms; ``done`` once ``n`` have run."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.values: list[float] = []
        self.lock = threading.Lock()
        self.done = threading.Event()

    def record(self, due_ms: float) -> None:
        late = time.time() * 1000 - due_ms
        with self.lock:
            self.values.append(late)
            if len(self.values) >= self.n:
                self.done.set()


def summary(name: str, values: list[float], expected: int) -> dict[str, Any]:
    ordered = sorted(values)

    def pct(p: float) -> float:
        return ordered[min(len(ordered) - 1, int(p * len(ordered)))] if ordered else float("nan")

    return {
        "name": name,
        "ran": len(values),
        "missed": expected - len(values),
        "p50": pct(0.50),
        "p99": pct(0.99),
        "max": ordered[-1] if ordered else float("nan"),
        "mean": statistics.fmean(values) if values else float("nan"),
    }


def due_times(n: int, spread_s: float, lead_s: float) -> list[int]:
    start = int(time.time() * 1000 + lead_s * 1000)
    return [start + int(i * spread_s * 1000 / n) for i in range(n)]


# -- jobsched -----------------------------------------------------------------------


def jobsched_lateness(store: Store, dues: list[int], workers: int, lead_s: float) -> list[float]:
    lat = Lateness(len(dues))
    reg = TaskRegistry()
    reg.register("noop", lambda payload: lat.record(payload))
    engine = Engine(store, reg)
    with store.transaction():
        for due in dues:
            engine.schedule(ScheduleSpec(task="noop", payload_json=str(due), run_at=due), due)
    dispatcher = Dispatcher(engine, Runner(reg, workers))
    dispatcher.start()
    lat.done.wait(lead_s + (dues[-1] - dues[0]) / 1000 + 30)
    dispatcher.stop(5)
    return lat.values


def jobsched_throughput(path: str, n: int, workers: int) -> tuple[float, float]:
    """(seconds until every handler ran, seconds until every job is completed)."""
    store = SQLiteStore(path)
    lat = Lateness(n)
    reg = TaskRegistry()
    reg.register("noop", lambda payload: lat.record(0))
    engine = Engine(store, reg)
    now = int(time.time() * 1000)
    with store.transaction():
        for _ in range(n):
            engine.schedule(ScheduleSpec(task="noop", payload_json="0", run_at=now), now)
    dispatcher = Dispatcher(engine, Runner(reg, workers))
    t0 = time.perf_counter()
    dispatcher.start()
    lat.done.wait(600)
    ran = time.perf_counter() - t0
    while store.counts().get(JobState.COMPLETED, 0) < n:
        time.sleep(0.005)
    completed = time.perf_counter() - t0
    dispatcher.stop(5)
    store.close()
    return ran, completed


# -- APScheduler 3 ------------------------------------------------------------------


def _aps(jobstore: Any, workers: int) -> Any:
    from apscheduler.executors.pool import ThreadPoolExecutor
    from apscheduler.schedulers.background import BackgroundScheduler

    return BackgroundScheduler(
        jobstores={"default": jobstore},
        executors={"default": ThreadPoolExecutor(workers)},
        job_defaults={"misfire_grace_time": None, "coalesce": False, "max_instances": 1},
        timezone=UTC,
    )


def aps_lateness(dues: list[int], workers: int, lead_s: float) -> list[float]:
    from apscheduler.jobstores.memory import MemoryJobStore

    lat = Lateness(len(dues))
    sched = _aps(MemoryJobStore(), workers)
    for due in dues:
        when = datetime.fromtimestamp(due / 1000, UTC)
        sched.add_job(lat.record, "date", run_date=when, args=[due])
    sched.start()
    lat.done.wait(lead_s + (dues[-1] - dues[0]) / 1000 + 30)
    sched.shutdown(wait=True)
    return lat.values


def _noop_aps(counter: list[int], done: threading.Event, n: int, lock: threading.Lock) -> None:
    with lock:
        counter[0] += 1
        if counter[0] >= n:
            done.set()


APS_STATE: dict[str, Any] = {}


def aps_noop() -> None:  # module level: the SQLAlchemy store pickles a reference to it
    s = APS_STATE
    _noop_aps(s["counter"], s["done"], s["n"], s["lock"])


def aps_throughput(path: str, n: int, workers: int) -> float:
    from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore

    APS_STATE.update(counter=[0], done=threading.Event(), n=n, lock=threading.Lock())
    sched = _aps(SQLAlchemyJobStore(url=f"sqlite:///{path}"), workers)
    sched.start(paused=True)
    when = datetime.now(UTC)
    for i in range(n):
        sched.add_job(f"{__name__}:aps_noop", "date", run_date=when, id=f"j{i}")
    t0 = time.perf_counter()
    sched.resume()
    APS_STATE["done"].wait(600)
    took = time.perf_counter() - t0
    sched.shutdown(wait=True)
    return took


# -- main ---------------------------------------------------------------------------


def _row(r: dict[str, Any]) -> str:
    return (
        f"| {r['name']:<41} | {r['ran']:>6} | {r['missed']:>6} | {r['p50']:>8.2f} | "
        f"{r['p99']:>8.2f} | {r['max']:>8.2f} |"
    )


def _timed(label: str, fn: Callable[[], Any]) -> Any:
    print(f"running: {label} ...", file=sys.stderr, flush=True)
    return fn()


def _lateness_rounds(args: argparse.Namespace, tmp: Path, aps: bool) -> list[dict[str, Any]]:
    """Alternate the systems, round after round, so that a noisy neighbour on a
    shared machine hits both alike; pool each system's values over the rounds."""
    n, w, lead = args.jobs, args.workers, args.lead
    pooled: dict[str, list[float]] = {}
    names = {
        "ours": "jobsched Dispatcher, memory store",
        "aps": "APScheduler 3 BackgroundScheduler, memory",
        "sqlite": "jobsched Dispatcher, SQLite (FULL)",
    }
    for r in range(args.rounds):
        for key in ("ours", "aps", "sqlite") if aps else ("ours", "sqlite"):
            print(f"round {r + 1}: {key} ...", file=sys.stderr, flush=True)
            # Each system starts from a settled heap, as `jobsched node` and
            # `serve` do after start-up (cli._settle_heap): the previous
            # rounds' engines and schedulers are collected, and what is left
            # is out of the collector's reach. Without it a full collection
            # of that garbage lands in the next system's timing (35 ms).
            gc.collect()
            gc.freeze()
            dues = due_times(n, args.spread, lead)
            if key == "ours":
                values = jobsched_lateness(MemoryStore(), dues, w, lead)
            elif key == "aps":
                values = aps_lateness(dues, w, lead)
            else:
                store = SQLiteStore(str(tmp / f"lateness{r}.db"))
                values = jobsched_lateness(store, dues, w, lead)
                store.close()
            one = summary(names[key], values, n)
            print(
                f"  p50 {one['p50']:.2f} p99 {one['p99']:.2f} max {one['max']:.2f} ms",
                file=sys.stderr,
            )
            pooled.setdefault(key, []).extend(values)
    return [summary(names[k], v, n * args.rounds) for k, v in pooled.items()]


def ratio(theirs: float, ours: float) -> str:
    return f"{theirs / ours:.2f}x" if ours > 0 else "n/a"


def lateness_part(args: argparse.Namespace, tmp: Path, aps: bool) -> None:
    rows = _lateness_rounds(args, tmp, aps)
    print(
        f"\nDispatch lateness, {args.jobs} no-op jobs due within {args.spread:g} s, "
        f"{args.workers} workers, {args.rounds} rounds pooled (ms)\n"
    )
    print(
        "| system                                    |    ran | missed |      p50 |      p99 |      max |"
    )
    print(
        "|-------------------------------------------|--------|--------|----------|----------|----------|"
    )
    for r in rows:
        print(_row(r))
    if aps:
        ours, theirs = rows[0], rows[1]
        print(
            f"\nAPScheduler / jobsched: p50 {ratio(theirs['p50'], ours['p50'])}, "
            f"p99 {ratio(theirs['p99'], ours['p99'])}"
        )


def throughput_part(args: argparse.Namespace, tmp: Path, aps: bool) -> None:
    tn, w = args.throughput_jobs, args.workers
    ran, completed = _timed(
        "jobsched throughput", lambda: jobsched_throughput(str(tmp / "tp.db"), tn, w)
    )
    print(f"\nThroughput, {tn} no-op jobs due at once, SQLite file, {w} workers\n")
    print("| system                                             | seconds | jobs/s |")
    print("|----------------------------------------------------|---------|--------|")
    print(f"| jobsched, until every handler ran                  | {ran:7.2f} | {tn / ran:6.0f} |")
    print(
        f"| jobsched, until every job is completed in SQLite   | {completed:7.2f} | {tn / completed:6.0f} |"
    )
    if not aps:
        return
    aps_s = _timed("APScheduler throughput", lambda: aps_throughput(str(tmp / "aps.db"), tn, w))
    print(
        f"| APScheduler 3, SQLAlchemyJobStore, every job ran   | {aps_s:7.2f} | {tn / aps_s:6.0f} |"
    )
    print(f"\njobsched / APScheduler jobs/s: {aps_s / completed:.1f}x")


def arguments() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--jobs", type=positive, default=10_000)
    p.add_argument("--spread", type=float, default=10.0, help="seconds the due times span")
    p.add_argument("--workers", type=positive, default=8)
    p.add_argument("--lead", type=float, default=2.0, help="seconds before the first due time")
    p.add_argument(
        "--rounds", type=positive, default=3, help="lateness rounds, systems alternating"
    )
    p.add_argument("--throughput-jobs", type=positive, default=5_000)
    p.add_argument("--quick", action="store_true", help="1,000 jobs over 2 s, 1 round")
    p.add_argument("--smoke", action="store_true", help="50 jobs over 0.2 s: proves it runs")
    args = p.parse_args()
    if args.quick:
        args.jobs, args.spread, args.lead, args.rounds, args.throughput_jobs = 1000, 2, 0.5, 1, 500
    if args.smoke:
        args.jobs, args.spread, args.lead, args.rounds, args.throughput_jobs = 50, 0.2, 0.2, 1, 50
    return args


def main() -> None:
    args = arguments()
    logging.basicConfig(level=logging.ERROR)
    # APScheduler's SQLAlchemyJobStore (the throughput part) needs both.
    aps = bool(peer("apscheduler", "apscheduler", "3.")) and bool(peer("sqlalchemy", "sqlalchemy"))
    with tempfile.TemporaryDirectory(prefix="dispatch_bench_") as d:
        lateness_part(args, Path(d), aps)
        throughput_part(args, Path(d), aps)


if __name__ == "__main__":
    main()
