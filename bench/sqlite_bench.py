"""SQLite benchmarks: jobsched's durable node beside APScheduler 3's SQLAlchemyJobStore.

    .venv/bin/python bench/sqlite_bench.py [--jobs 50000] [--big 1000000]   # about a minute
    .venv/bin/python bench/sqlite_bench.py --quick   # 2,000 jobs, 20,000 stored: ~10 s
    .venv/bin/python bench/sqlite_bench.py --smoke   # 50 jobs, 300 stored, one run each: proves it runs

1. Durable acknowledged schedule_job per second: requests pipelined into
   ``main.py --db FILE`` (synchronous=FULL, then NORMAL), timed from the first
   request written to the last reply read. Beside it, APScheduler 3 add_job per
   second on a SQLAlchemyJobStore on a SQLite file (scheduler started paused,
   so each add_job is stored at once), and the ratio. Also the latency of a
   one-at-a-time client (write one request, wait for its reply).
2. With --big N stored jobs (built directly with executemany, not through the
   node): main.py start-up time (spawn to the first reply), and execute_jobs
   for 1,000 due jobs. Beside it, APScheduler's get_due_jobs for 1,000 due
   among N rows of its own table (it only reads and unpickles them; ours runs
   them and commits their new states). With fewer than 3,000 stored jobs each
   slice holds a third of them.

Peers: APScheduler 3 and SQLAlchemy (bench/peers.py); without them only our
figures are printed. Every file lives in a TemporaryDirectory ($BENCH_TMP or the
system's), removed at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from peers import peer, positive  # noqa: E402

from jobsched.jobs import ONCE, Job, JobState  # noqa: E402
from jobsched.stores.sqlite import SQLiteStore  # noqa: E402
from jobsched.stores.sqlite_schema import COLUMNS, job_to_row  # noqa: E402

T0 = 1_705_309_200_000  # 2024-01-15T09:00:00Z
DUE = 1000
REPS = 3  # processes started per figure (--smoke: 1)


def noop(payload: object = None) -> None:
    """The APScheduler job's function (never run: the scheduler is paused)."""


class Node:
    """A main.py child with pipes; ``ask`` is one request and its reply."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(ROOT / "main.py"), *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )

    def ask(self, body: dict[str, Any]) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(body).encode() + b"\n")
        self.proc.stdin.flush()
        return dict(json.loads(self.proc.stdout.readline()))

    def pipeline(self, lines: list[bytes]) -> float:
        """Write every line from a thread, read every reply; return the seconds."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        stdin, stdout = self.proc.stdin, self.proc.stdout
        data = b"".join(lines)
        start = time.perf_counter()
        writer = threading.Thread(target=lambda: (stdin.write(data), stdin.flush()))
        writer.start()
        for _ in lines:
            reply = stdout.readline()
            assert b'"job_scheduled"' in reply, reply
        elapsed = time.perf_counter() - start
        writer.join()
        return elapsed

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(timeout=600)


def schedule_lines(n: int, tag: str) -> list[bytes]:
    return [
        json.dumps(
            {"src": "c", "dest": "s", "body": {"type": "schedule_job", "msg_id": i, "task": "t",
             "payload": {"n": i}, "delay_ms": 60_000, "job_id": f"{tag}-{i}"}}
        ).encode() + b"\n"
        for i in range(n)
    ]  # fmt: skip


def ours_schedule(tmp: Path, n: int, synchronous: str) -> float:
    rates = []
    for rep in range(REPS):
        db = tmp / f"sched-{synchronous}-{rep}.db"
        node = Node("--db", str(db), "--synchronous", synchronous)
        node.ask({"type": "stats"})  # started and the file created: not timed
        rates.append(n / node.pipeline(schedule_lines(n, f"j{rep}")))
        node.close()
    return statistics.median(rates)


def ours_latency(tmp: Path, n: int) -> tuple[float, float]:
    node = Node("--db", str(tmp / "latency.db"))
    node.ask({"type": "stats"})
    times = []
    for i in range(n):
        start = time.perf_counter()
        node.ask({"type": "schedule_job", "task": "t", "delay_ms": 1000, "job_id": f"l{i}"})
        times.append(time.perf_counter() - start)
    node.close()
    times.sort()
    return statistics.median(times) * 1000, times[min(n - 1, int(0.99 * n))] * 1000


def apscheduler_add_job(tmp: Path, n: int) -> float:
    from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore  # type: ignore[import-untyped]
    from apscheduler.schedulers.background import BackgroundScheduler  # type: ignore[import-untyped]

    store = SQLAlchemyJobStore(url=f"sqlite:///{tmp / 'aps.db'}")
    scheduler = BackgroundScheduler(jobstores={"default": store}, timezone="UTC")
    scheduler.start(paused=True)
    when = datetime.now(UTC) + timedelta(minutes=1)
    start = time.perf_counter()
    for i in range(n):
        scheduler.add_job(noop, "date", run_date=when, id=f"a{i}", args=[{"n": i}])
    elapsed = time.perf_counter() - start
    scheduler.shutdown(wait=False)
    return n / elapsed


# -- a big database -----------------------------------------------------------


def slice_size(n: int) -> int:
    """Jobs due in each of the three slices: DUE, or a third of small databases."""
    return max(1, min(DUE, n // 3))


def due_at(i: int, n: int) -> int:
    """Job i of n: due in slice 1, 2 or 3 (T0+1..3 s), or far later."""
    size = slice_size(n)
    return T0 + 1000 * (1 + i // size) if i < 3 * size else T0 + 86_400_000 + i


def due_in_slice(k: int, n: int) -> int:
    return sum(1 for i in range(min(n, 3 * slice_size(n))) if due_at(i, n) == T0 + 1000 * k)


def build_big(path: Path, n: int) -> float:
    """n jobs: slice_size(n) due in each of three slices at T0+1..3 s, the rest far later."""
    SQLiteStore(str(path)).close()
    start = time.perf_counter()
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA synchronous = OFF")
    marks = ", ".join("?" * (len(COLUMNS) + 1))
    sql = f"INSERT INTO jobs ({', '.join(COLUMNS)}, touched_ms) VALUES ({marks})"
    template = Job("x", "t", '{"n":1}', ONCE, JobState.SCHEDULED, 0, T0, T0)
    db.execute("BEGIN")
    batch: list[tuple[Any, ...]] = []
    for i in range(n):
        row = job_to_row(template)
        batch.append((f"big-{i}", *row[1:4], due_at(i, n), *row[5:], 0))
        if len(batch) == 50_000:
            db.executemany(sql, batch)
            batch.clear()
    db.executemany(sql, batch)
    db.execute("COMMIT")
    db.close()
    return time.perf_counter() - start


def ours_big(path: Path, n: int) -> dict[str, float]:
    starts = []
    for _ in range(REPS):
        t = time.perf_counter()
        node = Node("--db", str(path))
        node.ask({"type": "get_job", "job_id": "none"})
        starts.append(time.perf_counter() - t)
        node.close()
    node = Node("--db", str(path))
    node.ask({"type": "get_job", "job_id": "none"})
    runs = []
    for k in (1, 2, 3):
        t = time.perf_counter()
        reply = node.ask({"type": "execute_jobs", "current_time": T0 + 1000 * k})
        runs.append(time.perf_counter() - t)
        assert reply["count"] == due_in_slice(k, n), reply
    node.close()
    return {"start": statistics.median(starts), "execute": statistics.median(runs)}


APS_START = """
import sys
import time
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.background import BackgroundScheduler
store = SQLAlchemyJobStore(url="sqlite:///" + sys.argv[1])
scheduler = BackgroundScheduler(jobstores={"default": store}, timezone="UTC")
scheduler.start(paused=True)
print(store.get_next_run_time(), flush=True)
time.sleep(60)  # killed by the bench once it has answered
"""


def apscheduler_big(tmp: Path, n: int) -> dict[str, float]:
    from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
    from apscheduler.schedulers.background import BackgroundScheduler

    path = tmp / "aps-big.db"
    store = SQLAlchemyJobStore(url=f"sqlite:///{path}")
    scheduler = BackgroundScheduler(jobstores={"default": store}, timezone="UTC")
    scheduler.start(paused=True)
    when = datetime.now(UTC) + timedelta(days=1)  # never due while we look
    # A reference any process can resolve: the rows are read by other processes.
    scheduler.add_job("builtins:len", "date", run_date=when, id="proto", args=[{"n": 1}])
    state = store.lookup_job("proto").__getstate__()
    scheduler.remove_job("proto")
    scheduler.shutdown(wait=False)
    db = sqlite3.connect(path)
    rows = []
    for i in range(n):
        job = pickle.dumps({**state, "id": f"big-{i}"})
        rows.append((f"big-{i}", due_at(i, n) / 1000, job))
    db.executemany("INSERT INTO apscheduler_jobs VALUES (?, ?, ?)", rows)
    db.commit()
    db.close()
    starts = []
    for _ in range(REPS):  # a fresh process, as for main.py: spawn to its first answer
        t = time.perf_counter()
        child = subprocess.Popen(
            [sys.executable, "-c", APS_START, str(path)], stdout=subprocess.PIPE
        )
        try:
            assert child.stdout is not None
            assert child.stdout.readline(), "the APScheduler process ended early"
            starts.append(time.perf_counter() - t)
        finally:
            child.kill()  # not shutdown(): APScheduler 3 then processes every due job
            child.wait()
    store = SQLAlchemyJobStore(url=f"sqlite:///{path}")
    scheduler = BackgroundScheduler(jobstores={"default": store}, timezone="UTC")
    scheduler.start(paused=True)
    times = []
    for _ in range(3):  # the same first slice: nothing is removed between reads
        t = time.perf_counter()
        due = store.get_due_jobs(datetime.fromtimestamp((T0 + 1000) / 1000, UTC))
        times.append(time.perf_counter() - t)
        assert len(due) == due_in_slice(1, n), len(due)
    scheduler.shutdown(wait=False)
    return {"start": statistics.median(starts), "get_due": statistics.median(times)}


def schedule_part(tmp: Path, args: argparse.Namespace, peers: bool) -> None:
    full = ours_schedule(tmp, args.jobs, "FULL")
    normal = ours_schedule(tmp, args.jobs, "NORMAL")
    p50, p99 = ours_latency(tmp, args.latency)
    print(f"schedule_job pipelined, FULL:   {full:10,.0f} acknowledged/s (median of {REPS})")
    print(f"schedule_job pipelined, NORMAL: {normal:10,.0f} acknowledged/s (median of {REPS})")
    if peers:
        aps = apscheduler_add_job(tmp, args.aps_jobs)
        print(f"APScheduler 3 add_job, SQLAlchemyJobStore/SQLite: {aps:10,.0f}/s")
        print(f"ratio (FULL / APScheduler): {full / aps:.1f}x")
    print(f"one-at-a-time schedule_job, FULL: p50 {p50:.2f} ms, p99 {p99:.2f} ms", flush=True)


def big_part(tmp: Path, n: int, peers: bool) -> None:
    build = build_big(tmp / "big.db", n)
    ours = ours_big(tmp / "big.db", n)
    due = due_in_slice(1, n)
    print(f"{n:,} jobs built in {build:.1f} s (executemany)")
    print(f"main.py start-up to first reply: {ours['start'] * 1000:.0f} ms (median of {REPS})")
    print(f"execute_jobs, {due} due: {ours['execute'] * 1000:.1f} ms (median of 3)", flush=True)
    if not peers:
        return
    theirs = apscheduler_big(tmp, n)
    print(
        "APScheduler process start (import, start paused, get_next_run_time): "
        f"{theirs['start'] * 1000:.0f} ms (median of {REPS})"
    )
    print(f"APScheduler get_due_jobs, {due} due: {theirs['get_due'] * 1000:.1f} ms")


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument(
        "--jobs", type=positive, default=50_000, help="pipelined schedule_job count"
    )
    parser.add_argument("--aps-jobs", type=positive, default=2000, help="APScheduler add_job count")
    parser.add_argument("--latency", type=positive, default=300, help="one-at-a-time requests")
    parser.add_argument("--big", type=int, default=1_000_000, help="jobs stored (0: skip)")
    parser.add_argument("--big-only", action="store_true", help="skip the schedule_job part")
    parser.add_argument("--quick", action="store_true", help="small sizes: ~10 s")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: proves it runs")
    args = parser.parse_args()
    if args.quick:
        args.jobs, args.aps_jobs, args.latency, args.big = 2000, 200, 100, 20_000
    if args.smoke:
        global REPS
        args.jobs, args.aps_jobs, args.latency, args.big = 50, 20, 10, 300
        REPS = 1
    return args


def main() -> None:
    args = arguments()
    # APScheduler's SQLAlchemyJobStore needs both.
    peers = bool(peer("apscheduler", "apscheduler", "3.")) and bool(
        peer("sqlalchemy", "sqlalchemy")
    )
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP")) as d:
        tmp = Path(d)
        if not args.big_only:
            schedule_part(tmp, args, peers)
        if args.big > 0:
            big_part(tmp, args.big, peers)


if __name__ == "__main__":
    main()
