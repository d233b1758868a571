"""Dashboard benchmarks: how long the dashboard's reads take with many jobs stored.

    .venv/bin/python bench/dashboard_bench.py              # 1,000,000 jobs, SQLite and PostgreSQL
    .venv/bin/python bench/dashboard_bench.py --quick      # 20,000 jobs: a few seconds
    .venv/bin/python bench/dashboard_bench.py --jobs 200000 --backend sqlite

The jobs (and a run record per run of the last hour, --runs) are written
directly, as bench/sqlite_bench.py does (executemany on SQLite, COPY on
PostgreSQL), in a realistic mix: 70% completed, 10% one-time scheduled over
the next days, 5% cron, 5% dead with an error, 5% retrying, 3% cancelled, 2%
paused; in five queues (queue-0 to queue-4), priorities 0-2. PostgreSQL then
gets VACUUM ANALYZE, as autovacuum would give it after a bulk load
(index-only scans need the visibility map).

Then a real service (``Service`` with the dashboard, on a loopback port, no
dispatcher) answers over HTTP, one keep-alive client, median of --rounds:

- the overview uncached (counts by state, runs per minute of the last hour,
  nodes) and cached (counts are kept 2 s, runs per minute 5 s); the uncached
  one as viewers meet it (counts taken the way measured fastest so far), and
  each way of counting by state on its own (by index: one index-only count per
  state; by scan: one GROUP BY), called directly, without HTTP;
- the first page of jobs (50), unfiltered, by state, by queue;
- upcoming runs of the next 24 hours (500 at most) and the failures page;
- the queues page, uncached (counts by queue and state: a scan) and cached.

Target: under 300 ms for the overview and the first page of jobs. Everything is removed at the end: the SQLite file's
TemporaryDirectory ($BENCH_TMP or the system's), the PostgreSQL schema.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from jobsched.cli import open_store  # noqa: E402
from jobsched.cron import CronExpr  # noqa: E402
from jobsched.engine import Engine  # noqa: E402
from jobsched.jobs import ONCE, CronSchedule, Job, JobState  # noqa: E402
from jobsched.messages import Context  # noqa: E402
from jobsched.server import Service, make_server  # noqa: E402
from jobsched.stores.sqlite_schema import COLUMNS, job_to_row  # noqa: E402
from jobsched.timefmt import now_ms  # noqa: E402
from jobsched.web.dashboard import Dashboard  # noqa: E402

PG = os.environ.get("JOBSCHED_TEST_PG") or "postgresql://postgres@127.0.0.1:5432/test"
TARGET_MS = 300.0
BATCH = 50_000
ERROR = "RuntimeError: upstream answered 503 Service Unavailable"
MIX = (  # (share in 100, state, kind)
    (70, JobState.COMPLETED, "once"),
    (10, JobState.SCHEDULED, "once"),
    (5, JobState.SCHEDULED, "cron"),
    (5, JobState.DEAD, "once"),
    (5, JobState.RETRYING, "once"),
    (3, JobState.CANCELLED, "once"),
    (2, JobState.PAUSED, "once"),
)
SLOTS = [(state, kind) for share, state, kind in MIX for _ in range(share)]
CRON = CronSchedule(CronExpr.parse("*/15 * * * *", "Europe/London"))


def job_rows(n: int, now: int) -> Iterator[tuple[Any, ...]]:
    """The rows of n jobs (COLUMNS, then touched_ms), in the MIX."""
    for i in range(n):
        state, kind = SLOTS[i % 100]
        due = (
            None
            if state in (JobState.COMPLETED, JobState.CANCELLED, JobState.DEAD)
            else (now + (i * 997) % (7 * 86_400_000))
        )
        job = Job(
            job_id=f"job-{i:07d}", task=f"task-{i % 20}", payload_json='{"n":1}',
            schedule=CRON if kind == "cron" else ONCE, state=state, due_at=due,
            created_at=now - 86_400_000, updated_at=now - (n - i),
            attempts=3 if state is JobState.DEAD else 1 if state is JobState.RETRYING else 0,
            queue=f"queue-{i % 5}", priority=i % 3,
            last_error=ERROR if state in (JobState.DEAD, JobState.RETRYING) else None,
            paused_from=JobState.SCHEDULED if state is JobState.PAUSED else None,
        )  # fmt: skip
        yield (*job_to_row(job), now)


def run_rows(runs: int, n: int, now: int) -> Iterator[tuple[Any, ...]]:
    """Run records spread over the last hour, one in 20 failed."""
    for i in range(runs):
        at = now - 3_600_000 + (i * 3_600_000) // max(runs, 1)
        failed = i % 20 == 0
        yield (f"job-{i % n:07d}", at - 5, at, "failed" if failed else "succeeded",
               ERROR if failed else None, "bench", at)  # fmt: skip


RUN_COLUMNS = "job_id, started_at, finished_at, outcome, error, node, recorded_ms"


def fill_sqlite(path: str, n: int, runs: int) -> float:
    open_store(path).close()  # the schema
    start = time.perf_counter()
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA synchronous = OFF")
    marks = ", ".join("?" * (len(COLUMNS) + 1))
    insert = f"INSERT INTO jobs ({', '.join(COLUMNS)}, touched_ms) VALUES ({marks})"
    now = now_ms()
    db.execute("BEGIN")
    for rows, sql in (
        (job_rows(n, now), insert),
        (run_rows(runs, n, now), f"INSERT INTO runs ({RUN_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)"),
    ):
        batch: list[tuple[Any, ...]] = []
        for row in rows:
            batch.append(row)
            if len(batch) == BATCH:
                db.executemany(sql, batch)
                batch.clear()
        db.executemany(sql, batch)
    db.execute("COMMIT")
    db.close()
    return time.perf_counter() - start


def fill_postgres(dsn: str, schema: str, n: int, runs: int) -> float:
    import psycopg

    open_store(dsn).close()  # the schema, through the store's own migrations
    start = time.perf_counter()
    now = now_ms()
    with psycopg.connect(PG, autocommit=True) as pg:
        pg.execute(f'SET search_path = "{schema}"')
        with pg.cursor() as cur:
            with cur.copy(f"COPY jobs ({', '.join(COLUMNS)}, touched_ms) FROM STDIN") as copy:
                for row in job_rows(n, now):
                    copy.write_row(row)
            with cur.copy(f"COPY runs ({RUN_COLUMNS}) FROM STDIN") as copy:
                for row in run_rows(runs, n, now):
                    copy.write_row(row)
        pg.execute("VACUUM ANALYZE jobs")
        pg.execute("VACUUM ANALYZE runs")
    return time.perf_counter() - start


@contextmanager
def service(db: str) -> Iterator[tuple[http.client.HTTPConnection, Dashboard]]:
    """The service with its dashboard on a loopback port, no dispatcher."""
    store = open_store(db)
    engine = Engine(store)
    clock = store.db_now if hasattr(store, "db_now") else now_ms
    dash = Dashboard(engine, db, None, clock)
    server = make_server(Service(Context(engine, clock), web=dash.web), "127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    conn = http.client.HTTPConnection(*server.server_address, timeout=120)
    try:
        yield conn, dash
    finally:
        conn.close()
        server.shutdown()
        server.server_close(1.0)
        dash.stop()
        store.close()


def timed(
    conn: http.client.HTTPConnection, path: str, before: Callable[[], None], rounds: int
) -> float:
    """Median ms of GET path over rounds (``before`` runs untimed before each)."""

    def get() -> None:
        conn.request("GET", path)
        response = conn.getresponse()
        body = response.read()
        assert response.status == 200, (path, response.status, body[:200])
        json.loads(body)

    return median_ms(get, before, rounds)


def median_ms(call: Callable[[], object], before: Callable[[], None], rounds: int) -> float:
    times = []
    for _ in range(rounds):
        before()
        start = time.perf_counter()
        call()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def measure(db: str, rounds: int) -> list[tuple[str, float]]:
    with service(db) as (conn, dash):
        q = dash.queries

        def uncached() -> None:
            q.counts.forget()  # what a viewer pays when nothing recent is cached
            q.runs.forget()

        def nothing() -> None:
            pass

        def queues_uncached() -> None:
            q.queue_counts.forget()

        return [
            ("overview, uncached", timed(conn, "/v1/dashboard/overview", uncached, rounds)),
            ("  counts by state, by index", median_ms(q._count_by_index, nothing, rounds)),
            ("  counts by state, by scan", median_ms(q._count_by_scan, nothing, rounds)),
            ("overview, cached", timed(conn, "/v1/dashboard/overview", nothing, rounds)),
            ("jobs, first page of 50", timed(conn, "/v1/jobs?limit=50", nothing, rounds)),
            ("jobs, state=dead", timed(conn, "/v1/jobs?state=dead&limit=50", nothing, rounds)),
            ("jobs, state=scheduled&task=task-3", timed(
                conn, "/v1/jobs?state=scheduled&task=task-3&limit=50", nothing, rounds)),
            ("jobs, queue=queue-3", timed(
                conn, "/v1/jobs?queue=queue-3&limit=50", nothing, rounds)),
            ("upcoming, 24 h (500 at most)", timed(conn, "/v1/dashboard/upcoming", nothing, rounds)),
            ("failures, newest 100", timed(conn, "/v1/dashboard/failures", nothing, rounds)),
            ("queues, uncached", timed(conn, "/v1/dashboard/queues", queues_uncached, rounds)),
            ("queues, cached", timed(conn, "/v1/dashboard/queues", nothing, rounds)),
        ]  # fmt: skip


def report(name: str, n: int, runs: int, fill_s: float, figures: list[tuple[str, float]]) -> None:
    print(f"\n{name}: {n:,} jobs, {runs:,} runs in the last hour (filled in {fill_s:.1f} s)")
    for what, ms in figures:
        targeted = what.startswith(("overview", "jobs"))  # the target: these two pages
        mark = "" if ms < TARGET_MS or not targeted else f"   over the {TARGET_MS:.0f} ms target"
        print(f"  {what:<36} {ms:8.1f} ms{mark}")


def bench_sqlite(n: int, runs: int, rounds: int) -> None:
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP")) as tmp:
        path = str(Path(tmp) / "dashboard.db")
        fill = fill_sqlite(path, n, runs)
        report("SQLite", n, runs, fill, measure(path, rounds))


def bench_postgres(n: int, runs: int, rounds: int) -> None:
    import psycopg

    schema = f"bench_dash_{uuid.uuid4().hex[:10]}"
    dsn = f"{PG}{'&' if '?' in PG else '?'}schema={schema}"
    try:
        fill = fill_postgres(dsn, schema, n, runs)
        report("PostgreSQL", n, runs, fill, measure(dsn, rounds))
    finally:
        with psycopg.connect(PG, autocommit=True) as pg:
            pg.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--jobs", type=int, default=1_000_000)
    p.add_argument("--runs", type=int, default=100_000, help="run records in the last hour")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--backend", choices=("sqlite", "postgres", "both"), default="both")
    p.add_argument("--quick", action="store_true", help="20,000 jobs, 2,000 runs")
    args = p.parse_args()
    if args.quick:
        args.jobs, args.runs, args.rounds = 20_000, 2_000, 3
    if args.backend in ("sqlite", "both"):
        bench_sqlite(args.jobs, args.runs, args.rounds)
    if args.backend in ("postgres", "both"):
        bench_postgres(args.jobs, args.runs, args.rounds)


if __name__ == "__main__":
    main()
