"""PostgreSQL benchmarks: jobsched nodes beside Procrastinate on the same server.

    .venv/bin/python bench/postgres_bench.py [--schedule 20000] [--jobs 10000] [--workers 8]

1. Durable acknowledged schedule_job per second: requests pipelined into
   ``main.py --db postgresql://...`` (each reply sent after its batch's COMMIT),
   timed from the first request written to the last reply read (the node is
   started and connected first). Beside it, Procrastinate's ``defer`` (one
   job per call and transaction) and ``batch_defer`` (1,000 jobs per call).
2. Jobs completed per second with no-op handlers, with one and two nodes:
   N jobs due now are stored first, then the nodes start
   (``main.py --realtime --workers W``, the real-time dispatcher) and run them.
   Beside it, Procrastinate workers (``run_worker(concurrency=W, wait=False)``,
   an async no-op task), one and two processes. Both rates are measured from
   the databases' own records: jobs / (last finish - first start), so that
   process start-up is left out for both.

Each system has its own database on the server (``jobsched_bench`` and
``procrastinate_bench``, recreated per run), so the test database is untouched.
Needs: pip install procrastinate. Server: $JOBSCHED_BENCH_PG (default the local
trust-auth server, postgresql://postgres@127.0.0.1:5432/test, used to create
the two databases).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parent.parent
BASE = os.environ.get("JOBSCHED_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/test")
OURS_DB, PEER_DB = "jobsched_bench", "procrastinate_bench"

PEER_APP = """
import procrastinate
app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo={dsn!r}))

@app.task(name="noop")
async def noop():
    pass
"""


def dsn_for(db: str) -> str:
    return BASE.rsplit("/", 1)[0] + "/" + db


def recreate(db: str) -> None:
    with psycopg.connect(BASE, autocommit=True) as admin:
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (db,)
        )
        admin.execute(f'DROP DATABASE IF EXISTS "{db}"')
        admin.execute(f'CREATE DATABASE "{db}"')


def node(dsn: str, *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, str(ROOT / "main.py"), "--db", dsn, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        cwd=ROOT,
    )


def line(msg_id: int, body: dict[str, object]) -> bytes:
    return json.dumps({"src": "c", "dest": "s", "body": {"msg_id": msg_id, **body}}).encode()


def pipelined(dsn: str, bodies: list[dict[str, object]]) -> float:
    """Seconds from the first request written to the last reply read."""
    proc = node(dsn)
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(line(0, {"type": "stats"}) + b"\n")
    proc.stdin.flush()
    assert b"stats" in proc.stdout.readline()  # started, connected, migrated
    data = b"".join(line(i + 1, b) + b"\n" for i, b in enumerate(bodies))
    start = time.perf_counter()
    writer = threading.Thread(target=lambda: (proc.stdin.write(data), proc.stdin.flush()))  # type: ignore[union-attr]
    writer.start()
    for _ in bodies:
        reply = proc.stdout.readline()
        assert b'"error"' not in reply, reply
    took = time.perf_counter() - start
    writer.join()
    proc.stdin.close()
    proc.wait()
    return took


def ours_schedule(n: int) -> float:
    dsn = dsn_for(OURS_DB) + "?schema=sched"
    bodies: list[dict[str, object]] = [
        {"type": "schedule_job", "task": "noop", "delay_ms": 3_600_000} for _ in range(n)
    ]
    return n / pipelined(dsn, bodies)


def ours_run(n: int, nodes: int, workers: int) -> float:
    schema = f"run{nodes}"
    dsn = dsn_for(OURS_DB) + f"?schema={schema}"
    pipelined(dsn, [{"type": "schedule_job", "task": "noop"} for _ in range(n)])
    procs = [node(dsn, "--realtime", "--workers", str(workers)) for _ in range(nodes)]
    with psycopg.connect(dsn_for(OURS_DB), autocommit=True) as db:
        while True:
            row = db.execute(
                f"SELECT count(*) FROM {schema}.jobs WHERE state <> 'completed'"
            ).fetchone()
            if row is not None and row[0] == 0:
                break
            time.sleep(0.05)
        first, last = db.execute(
            f"SELECT min(started_at), max(finished_at) FROM {schema}.runs"
        ).fetchone() or (0, 0)
    for p in procs:
        assert p.stdin is not None
        p.stdin.close()
        p.wait()
    return float(n / max((int(last) - int(first)) / 1000, 1e-9))


def peer_app(dsn: str) -> object:
    space: dict[str, object] = {"__name__": "procrastinate_bench_app"}
    exec(PEER_APP.format(dsn=dsn), space)  # the same app text the worker processes run
    return space["app"]


def peer_schedule(n: int) -> tuple[float, float]:
    app = peer_app(dsn_for(PEER_DB))
    with app.open():  # type: ignore[attr-defined]
        task = app.tasks["noop"]  # type: ignore[attr-defined]
        start = time.perf_counter()
        for _ in range(n):
            task.defer()
        one = n / (time.perf_counter() - start)
        start = time.perf_counter()
        for _ in range(n // 1000):
            task.batch_defer(*[{}] * 1000)
        batch = (n // 1000 * 1000) / (time.perf_counter() - start)
    return one, batch


PEER_WORKER = """
import sys
exec(open(sys.argv[1]).read())
app.run_worker(concurrency=int(sys.argv[2]), wait=False, install_signal_handlers=False,
               listen_notify=False, fetch_job_polling_interval=0.1)
"""


def peer_run(n: int, procs_n: int, workers: int, app_file: Path) -> float:
    dsn = dsn_for(PEER_DB)
    with psycopg.connect(dsn, autocommit=True) as db:
        db.execute("TRUNCATE procrastinate_jobs CASCADE")
    app = peer_app(dsn)
    with app.open():  # type: ignore[attr-defined]
        task = app.tasks["noop"]  # type: ignore[attr-defined]
        for _ in range(n // 1000):
            task.batch_defer(*[{}] * 1000)
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", PEER_WORKER, str(app_file), str(workers)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(procs_n)
    ]
    for p in procs:
        p.wait()
    with psycopg.connect(dsn, autocommit=True) as db:
        done, first, last = db.execute(
            "SELECT count(*) FILTER (WHERE type = 'succeeded'), "
            "extract(epoch FROM min(at) FILTER (WHERE type = 'started')), "
            "extract(epoch FROM max(at) FILTER (WHERE type = 'succeeded')) "
            "FROM procrastinate_events"
        ).fetchone() or (0, 0, 0)
    assert done == n // 1000 * 1000, (done, n)
    return float(done) / max(float(last) - float(first), 1e-9)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--schedule", type=int, default=20_000)
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--workers", type=int, default=8)
    args = parser.parse_args()
    import procrastinate

    recreate(OURS_DB)
    recreate(PEER_DB)
    app_file = Path(f"/tmp/procrastinate_bench_app_{os.getpid()}.py")
    app_file.write_text(PEER_APP.format(dsn=dsn_for(PEER_DB)))
    app = peer_app(dsn_for(PEER_DB))
    with app.open():  # type: ignore[attr-defined]
        app.schema_manager.apply_schema()  # type: ignore[attr-defined]
    with psycopg.connect(BASE) as db:
        server = db.execute("SHOW server_version").fetchone()
    print(f"PostgreSQL {server[0] if server else '?'}, procrastinate {procrastinate.__version__}")

    ours = ours_schedule(args.schedule)
    one, batch = peer_schedule(args.schedule)
    print(f"\nschedule_job, durable, pipelined ({args.schedule} jobs): {ours:,.0f}/s")
    print(f"procrastinate defer, one per call: {one:,.0f}/s  (ratio {ours / one:.1f}x)")
    print(f"procrastinate batch_defer, 1000 per call: {batch:,.0f}/s  (ratio {ours / batch:.2f}x)")

    print(f"\njobs completed per second, no-op handlers, {args.jobs} jobs, {args.workers} workers")
    for n in (1, 2):
        us = ours_run(args.jobs, n, args.workers)
        peer = peer_run(args.jobs, n, args.workers, app_file)
        print(
            f"{n} node(s): jobsched {us:,.0f}/s, procrastinate {peer:,.0f}/s, ratio {us / peer:.1f}x"
        )
    app_file.unlink()


if __name__ == "__main__":
    main()
