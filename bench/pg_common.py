"""What postgres_bench.py's parts share: the server, the two databases a run
creates and drops, the child processes stopped before they are dropped, the
handlers each system runs, and how rates are computed and compared.

A module of bench/ that is not a script (tests/test_bench_smoke.py HELPERS).
"""

from __future__ import annotations

import os
import statistics
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

ROOT = Path(__file__).resolve().parent.parent
BASE = os.environ.get("JOBSCHED_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/test")
OURS_DB = f"jobsched_bench_{os.getpid()}"
PEER_DB = f"procrastinate_bench_{os.getpid()}"
WAIT_S = 300  # longest wait for a run to finish before giving up
CHILDREN: list[subprocess.Popen[bytes]] = []  # stopped before the databases are dropped

# Procrastinate's tasks, async: run_worker(concurrency=W) runs W coroutines at once,
# its own model. A sync task would run through asgiref's sync_to_async on the
# event loop's default executor, min(32, cores + 4) threads: 6 here, fewer than
# W = 8, so the sleep run would measure that pool, not the scheduler.
PEER_APP = """
import asyncio
import procrastinate
app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo={dsn!r}))

@app.task(name="noop")
async def noop():
    pass

@app.task(name="sleep")
async def sleep(ms):
    await asyncio.sleep(ms / 1000)

@app.task(name="send-email")
async def send_email(to):
    pass
"""
# Our handler for the I/O-bound run: a plain function, run on the node's --workers
# threads (jobsched.runner), the way a blocking I/O handler runs in jobsched.
OUR_TASKS = """
import time
from jobsched import task

@task("sleep")
def sleep(payload):
    time.sleep(payload["ms"] / 1000)
"""


@dataclass(frozen=True)
class Load:
    """The jobs a completed-jobs run runs: the task, its arguments (our payload,
    Procrastinate's kwargs), our nodes' extra flags, and how long a handler sleeps."""

    task: str
    kwargs: dict[str, object]
    node_args: tuple[str, ...] = ()
    sleep_ms: int = 0


PEER_WORKER = """
import sys
exec(open(sys.argv[1]).read())
app.run_worker(concurrency=int(sys.argv[2]), wait=False, install_signal_handlers=False,
               listen_notify=False, fetch_job_polling_interval=0.1)
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


def wait_until(done: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not done():
        if time.monotonic() > deadline:
            raise SystemExit(f"gave up after {WAIT_S} s waiting for {what}")
        time.sleep(0.05)


def rate(n: int, seconds: float) -> float:
    # One job finishes within the clock's resolution: count it as a millisecond.
    return n / max(seconds, 0.001)


def ratio(ours: float, theirs: float) -> str:
    return f"{ours / theirs:.2f}x" if theirs > 0 else "n/a"


def spread(rates: list[float]) -> str:
    return f"{statistics.median(rates):,.0f}/s ({min(rates):,.0f}-{max(rates):,.0f})"


def peer_app(dsn: str) -> Any:
    space: dict[str, object] = {"__name__": "procrastinate_bench_app"}
    exec(PEER_APP.format(dsn=dsn), space)  # the same app text the worker processes run
    return space["app"]
