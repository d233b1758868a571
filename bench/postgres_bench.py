"""PostgreSQL benchmarks: jobsched nodes beside Procrastinate on the same server.

    .venv/bin/python bench/postgres_bench.py [--schedule 20000] [--jobs 10000] [--workers 8]
    .venv/bin/python bench/postgres_bench.py --quick   # 2,000 schedules, 1,000 jobs: 10-30 s
    .venv/bin/python bench/postgres_bench.py --smoke   # 50 and 50, 2 workers, one node: proves it runs

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

Each run creates its own two databases on the server (``jobsched_bench_<pid>`` and
``procrastinate_bench_<pid>``), so the test database is untouched and two runs do not
collide; both are dropped at the end, also after an error or Ctrl-C, and the child
processes are stopped first. Temporary files live in a TemporaryDirectory. Without
Procrastinate (bench/peers.py) only our figures are printed. An unreachable server
is an error (exit status 2). Server: $JOBSCHED_BENCH_PG (default the local
trust-auth server, postgresql://postgres@127.0.0.1:5432/test, used to create the
two databases).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from types import ModuleType
from typing import IO, Any

import psycopg
from peers import peer, positive

ROOT = Path(__file__).resolve().parent.parent
BASE = os.environ.get("JOBSCHED_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/test")
OURS_DB = f"jobsched_bench_{os.getpid()}"
PEER_DB = f"procrastinate_bench_{os.getpid()}"
BATCH = 1000  # Procrastinate's batch_defer size
WAIT_S = 300  # longest wait for a run to finish before giving up
CHILDREN: list[subprocess.Popen[bytes]] = []  # stopped before the databases are dropped

PEER_APP = """
import procrastinate
app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo={dsn!r}))

@app.task(name="noop")
async def noop():
    pass
"""


def dsn_for(db: str) -> str:
    return BASE.rsplit("/", 1)[0] + "/" + db


def admin() -> psycopg.Connection[tuple[Any, ...]]:
    return psycopg.connect(BASE, autocommit=True, connect_timeout=5)


def drop(db: str) -> None:
    with admin() as conn:
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (db,)
        )
        conn.execute(f'DROP DATABASE IF EXISTS "{db}"')


@contextmanager
def databases(*names: str) -> Iterator[None]:
    """Create the databases; on the way out (error and Ctrl-C included) stop every
    child process and drop them."""
    try:
        for db in names:
            with admin() as conn:
                conn.execute(f'CREATE DATABASE "{db}"')
        yield
    finally:
        for child in CHILDREN:
            if child.poll() is None:
                child.kill()
            child.wait()
        for db in names:
            drop(db)


def spawn(cmd: list[str], **kw: Any) -> subprocess.Popen[bytes]:
    child = subprocess.Popen(cmd, stderr=subprocess.DEVNULL, cwd=ROOT, **kw)
    CHILDREN.append(child)
    return child


def node(dsn: str, *args: str) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, str(ROOT / "main.py"), "--db", dsn, *args]
    return spawn(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE)


def line(msg_id: int, body: dict[str, object]) -> bytes:
    return json.dumps({"src": "c", "dest": "s", "body": {"msg_id": msg_id, **body}}).encode()


def write_all(stdin: IO[bytes], data: bytes) -> None:
    # A node that died (or was stopped on Ctrl-C) is reported by the reading side.
    with suppress(BrokenPipeError, ValueError):
        stdin.write(data)
        stdin.flush()


def pipelined(dsn: str, bodies: list[dict[str, object]]) -> float:
    """Seconds from the first request written to the last reply read."""
    proc = node(dsn)
    assert proc.stdin is not None and proc.stdout is not None
    stdin, stdout = proc.stdin, proc.stdout
    stdin.write(line(0, {"type": "stats"}) + b"\n")
    stdin.flush()
    assert b"stats" in stdout.readline()  # started, connected, migrated
    data = b"".join(line(i + 1, b) + b"\n" for i, b in enumerate(bodies))
    start = time.perf_counter()
    writer = threading.Thread(target=write_all, args=(stdin, data))
    writer.start()
    for _ in bodies:
        reply = stdout.readline()
        assert b'"error"' not in reply and reply, reply
    took = time.perf_counter() - start
    writer.join()
    stdin.close()
    proc.wait()
    return took


def ours_schedule(n: int) -> float:
    dsn = dsn_for(OURS_DB) + "?schema=sched"
    bodies: list[dict[str, object]] = [
        {"type": "schedule_job", "task": "noop", "delay_ms": 3_600_000} for _ in range(n)
    ]
    return n / pipelined(dsn, bodies)


def wait_until(done: Any, what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not done():
        if time.monotonic() > deadline:
            raise SystemExit(f"gave up after {WAIT_S} s waiting for {what}")
        time.sleep(0.05)


def ours_run(n: int, nodes: int, workers: int) -> float:
    schema = f"run{nodes}"
    dsn = dsn_for(OURS_DB) + f"?schema={schema}"
    pipelined(dsn, [{"type": "schedule_job", "task": "noop"} for _ in range(n)])
    procs = [node(dsn, "--realtime", "--workers", str(workers)) for _ in range(nodes)]
    with psycopg.connect(dsn_for(OURS_DB), autocommit=True) as db:

        def done() -> bool:
            if any(p.poll() is not None for p in procs):
                raise SystemExit("a jobsched node exited before running every job")
            sql = f"SELECT count(*) FROM {schema}.jobs WHERE state <> 'completed'"
            row = db.execute(sql).fetchone()
            return row is not None and row[0] == 0

        wait_until(done, f"{n} jobsched jobs")
        sql = f"SELECT min(started_at), max(finished_at) FROM {schema}.runs"
        first, last = db.execute(sql).fetchone() or (0, 0)
    for p in procs:
        assert p.stdin is not None
        p.stdin.close()
        p.wait()
    return rate(n, (int(last) - int(first)) / 1000)


def rate(n: int, seconds: float) -> float:
    # One job finishes within the clock's resolution: count it as a millisecond.
    return n / max(seconds, 0.001)


def ratio(ours: float, theirs: float) -> str:
    return f"{ours / theirs:.2f}x" if theirs > 0 else "n/a"


def peer_app(dsn: str) -> Any:
    space: dict[str, object] = {"__name__": "procrastinate_bench_app"}
    exec(PEER_APP.format(dsn=dsn), space)  # the same app text the worker processes run
    return space["app"]


def defer_batches(task: Any, n: int) -> None:
    for start in range(0, n, BATCH):
        task.batch_defer(*[{}] * min(BATCH, n - start))


def peer_schedule(n: int) -> tuple[float, float]:
    app = peer_app(dsn_for(PEER_DB))
    with app.open():
        task = app.tasks["noop"]
        start = time.perf_counter()
        for _ in range(n):
            task.defer()
        one = n / (time.perf_counter() - start)
        start = time.perf_counter()
        defer_batches(task, n)
        batch = n / (time.perf_counter() - start)
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
    with app.open():
        defer_batches(app.tasks["noop"], n)
    cmd = [sys.executable, "-c", PEER_WORKER, str(app_file), str(workers)]
    procs = [spawn(cmd, stdout=subprocess.DEVNULL) for _ in range(procs_n)]
    for p in procs:
        p.wait(timeout=WAIT_S)
    with psycopg.connect(dsn, autocommit=True) as db:
        done, first, last = db.execute(
            "SELECT count(*) FILTER (WHERE type = 'succeeded'), "
            "extract(epoch FROM min(at) FILTER (WHERE type = 'started')), "
            "extract(epoch FROM max(at) FILTER (WHERE type = 'succeeded')) "
            "FROM procrastinate_events"
        ).fetchone() or (0, None, None)
    if done != n or first is None or last is None:
        raise SystemExit(f"procrastinate ran {done} of {n} jobs")
    return rate(done, float(last) - float(first))


def schedule_part(n: int, procrastinate: ModuleType | None) -> None:
    ours = ours_schedule(n)
    print(f"\nschedule_job, durable, pipelined ({n:,} jobs): {ours:,.0f}/s", flush=True)
    if procrastinate is None:
        return
    one, batch = peer_schedule(n)
    print(f"procrastinate defer, one per call: {one:,.0f}/s  (ratio {ratio(ours, one)})")
    print(
        f"procrastinate batch_defer, {BATCH:,} per call: {batch:,.0f}/s  "
        f"(ratio {ratio(ours, batch)})",
        flush=True,
    )


def run_part(n: int, workers: int, counts: tuple[int, ...], app_file: Path | None) -> None:
    print(f"\njobs completed per second, no-op handlers, {n:,} jobs, {workers} workers")
    for nodes in counts:
        us = ours_run(n, nodes, workers)
        if app_file is None:
            print(f"{nodes} node(s): jobsched {us:,.0f}/s", flush=True)
            continue
        theirs = peer_run(n, nodes, workers, app_file)
        print(
            f"{nodes} node(s): jobsched {us:,.0f}/s, procrastinate {theirs:,.0f}/s, "
            f"ratio {ratio(us, theirs)}",
            flush=True,
        )


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--schedule", type=positive, default=20_000)
    parser.add_argument("--jobs", type=positive, default=10_000)
    parser.add_argument("--workers", type=positive, default=8)
    parser.add_argument("--quick", action="store_true", help="2,000 and 1,000: 10-30 s")
    parser.add_argument("--smoke", action="store_true", help="50 and 50: proves it runs")
    args = parser.parse_args()
    if args.quick:
        args.schedule, args.jobs = min(args.schedule, 2000), min(args.jobs, 1000)
    if args.smoke:
        args.schedule, args.jobs, args.workers = 50, 50, 2
    return args


def main() -> None:
    args = arguments()
    try:
        with admin() as conn:
            row = conn.execute("SHOW server_version").fetchone()
    except psycopg.OperationalError as exc:
        print(f"PostgreSQL is unreachable at {BASE} (set JOBSCHED_BENCH_PG): {exc}")
        sys.exit(2)
    procrastinate = peer("procrastinate", "procrastinate")
    peer_version = f", procrastinate {procrastinate.__version__}" if procrastinate else ""
    print(f"PostgreSQL {row[0] if row else '?'}{peer_version}")
    names = (OURS_DB, PEER_DB) if procrastinate else (OURS_DB,)
    with tempfile.TemporaryDirectory() as tmp, databases(*names):
        app_file = None
        if procrastinate is not None:
            app_file = Path(tmp) / "procrastinate_bench_app.py"
            app_file.write_text(PEER_APP.format(dsn=dsn_for(PEER_DB)))
            app = peer_app(dsn_for(PEER_DB))
            with app.open():
                app.schema_manager.apply_schema()
        schedule_part(args.schedule, procrastinate)
        run_part(args.jobs, args.workers, (1,) if args.smoke else (1, 2), app_file)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:  # the databases are already dropped: no traceback
        sys.exit(130)
