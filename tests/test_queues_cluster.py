"""Queue limits and unique keys across real node processes (docs/queues.md).

Each node process runs the real Dispatcher and Runner on a PostgreSQL schema
or a SQLite file, with a short lease and a handler that logs the start and end
of every run (wall clock, the same machine for all) to the node's own file.
From those logs:

- a queue with concurrency 2 never has more than 2 runs overlapping, over all
  nodes, and finishes every job;
- a rate limit of 5 per second never starts more than 5 runs in a window;
- concurrent schedule_job requests with one unique_key, from several
  processes, leave exactly one job;
- a SIGKILLed node's slots are free again after its lease, not before.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from jobsched.client import Client
from jobsched.client_types import JobState
from tests.backend_postgres import base_dsn, fresh_schema, with_schema
from tests.harness import ROOT

LEASE_MS = 1500
DONE_TIMEOUT_S = 30

NODE = """
import os, signal, sys, threading, time
from datetime import datetime
sys.path.insert(0, sys.argv[6])
from jobsched.dispatcher import Dispatcher
from jobsched.engine import Engine, EngineConfig
from jobsched.runner import Runner, TaskRegistry

kind, target, name, path, lease = sys.argv[1:6]
fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

def work(payload):
    os.write(fd, f"S {payload['id']} {time.time():.6f}\\n".encode())
    time.sleep(payload.get("ms", 0) / 1000)
    os.write(fd, f"E {payload['id']} {time.time():.6f}\\n".encode())

registry = TaskRegistry()
registry.register("work", work)
if kind == "postgres":
    from jobsched.stores.postgres import PostgresStore
    store = PostgresStore(target)
    clock = store.db_now
else:
    from jobsched.stores.sqlite import SQLiteStore
    store = SQLiteStore(target)
    clock = None
engine = Engine(store, registry, EngineConfig(node_id=name, lease_ms=int(lease)))

def claimed(event):  # "C": a claim, at the node's (the cluster's) clock, as the limits count it
    if event["event"] == "started":
        at = datetime.fromisoformat(event["at"].replace("Z", "+00:00")).timestamp()
        os.write(fd, f"C {event['job_id']} {at:.6f}\\n".encode())

dispatcher = Dispatcher(
    engine, Runner(registry, 8), clock=clock, poll_ms=100, owner=name, events=claimed
)
stop = threading.Event()
signal.signal(signal.SIGTERM, lambda *_: stop.set())
dispatcher.start()
print("ready", flush=True)
stop.wait()
dispatcher.stop(5)
store.close()
"""

# One process scheduling the same unique_key from many threads at once.
UNIQUE = """
import json, sys, threading
sys.path.insert(0, sys.argv[4])
from jobsched.client import Client

target, key, threads = sys.argv[1], sys.argv[2], int(sys.argv[3])
window = int(sys.argv[5]) if sys.argv[5] != "-" else None
clients = [Client(target) for _ in range(threads)]
clients[0].list_queues()  # the schema exists before the race
gate, out = threading.Barrier(threads), []

def one(client):
    gate.wait()
    got = client.schedule("work", {"id": "u"}, delay_ms=3_600_000, queue="uq",
                          unique_key=key, unique_for_ms=window)
    out.append([got.job_id, got.duplicate])

ts = [threading.Thread(target=one, args=(c,)) for c in clients]
[t.start() for t in ts]
[t.join() for t in ts]
print(json.dumps(out))
"""


@pytest.fixture(params=["postgres", "sqlite"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str]]:
    if request.param == "sqlite":
        yield "sqlite", str(tmp_path / "jobs.db")
        return
    with fresh_schema() as schema:
        yield "postgres", with_schema(base_dsn(), schema)


@pytest.fixture
def pg() -> Iterator[tuple[str, str]]:
    with fresh_schema() as schema:
        yield "postgres", with_schema(base_dsn(), schema)


def start_node(
    target: tuple[str, str], log: Path, lease_ms: int = LEASE_MS
) -> subprocess.Popen[bytes]:
    args = [*target, log.stem, str(log), str(lease_ms), str(ROOT)]
    proc = subprocess.Popen(
        [sys.executable, "-c", NODE, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,  # logs could fill an undrained pipe and block the node
        cwd=ROOT,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline() == b"ready\n"
    return proc


def stop_all(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        p.wait(timeout=30)


def runs(*logs: Path) -> list[tuple[float, float | None]]:
    """Every run in the logs: (start, end), end None for a run cut off by a kill."""
    out: list[tuple[float, float | None]] = []
    for log in logs:
        started: dict[str, list[float]] = {}
        for line in log.read_text().splitlines() if log.exists() else []:
            kind, job, at = line.split()
            if kind == "C":
                continue
            if kind == "S":
                started.setdefault(job, []).append(float(at))
            else:
                out.append((started[job].pop(0), float(at)))
        out += [(s, None) for starts in started.values() for s in starts]
    return sorted(out, key=lambda r: r[0])


def most_overlapping(spans: list[tuple[float, float | None]]) -> int:
    """The most runs in flight at once; an end at the same instant as a start
    counts first (a slot freed, then taken)."""
    edges = [(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans if e is not None]
    level = peak = 0
    for _, step in sorted(edges):
        level += step
        peak = max(peak, level)
    return peak


def claims(*logs: Path) -> list[float]:
    """When each run was claimed, on the cluster's clock (the nodes' claim events)."""
    lines = [line.split() for log in logs for line in log.read_text().splitlines()]
    return sorted(float(at) for kind, _, at in lines if kind == "C")


def wait_done(client: Client, queue: str, n: int) -> None:
    deadline = time.monotonic() + DONE_TIMEOUT_S
    while time.monotonic() < deadline:
        info = [q for q in client.list_queues() if q.name == queue]
        if info and info[0].counts[JobState.COMPLETED] == n:
            return
        time.sleep(0.1)
    raise AssertionError(f"queue {queue}: not all {n} jobs completed in time: {info}")


def _jobs(client: Client, queue: str, n: int, ms: int, **extra: int) -> None:
    for i in range(n):
        client.schedule("work", {"id": f"{queue}-{i}", "ms": ms}, queue=queue, **extra)  # type: ignore[arg-type]


def test_concurrency_2_holds_across_nodes(target: tuple[str, str], tmp_path: Path) -> None:
    nodes = 3 if target[0] == "postgres" else 2
    with Client(target[1]) as client:
        client.configure_queue("lim", concurrency=2)
        procs = [start_node(target, tmp_path / f"n{i}.log") for i in range(nodes)]
        try:
            _jobs(client, "lim", 8, 300)
            wait_done(client, "lim", 8)
        finally:
            stop_all(procs)
    spans = runs(*(tmp_path / f"n{i}.log" for i in range(nodes)))
    assert len(spans) == 8 and all(e is not None for _, e in spans)
    assert most_overlapping(spans) == 2  # never 3; and 2 did run together


def test_a_rate_limit_of_5_per_second_holds_across_nodes(
    pg: tuple[str, str], tmp_path: Path
) -> None:
    with Client(pg[1]) as client:
        client.configure_queue("rate", rate_limit=(5, 1000))
        procs = [start_node(pg, tmp_path / f"n{i}.log") for i in range(2)]
        try:
            _jobs(client, "rate", 20, 0)
            wait_done(client, "rate", 20)
        finally:
            stop_all(procs)
    assert len(runs(tmp_path / "n0.log", tmp_path / "n1.log")) == 20
    # Starts are counted at the claim, on the cluster's clock, which is what
    # the nodes' claim events carry (a handler starts later, by however long
    # a loaded machine makes it wait). Each node reads the database's clock as
    # an offset measured over a round trip: a window 50 ms short of the
    # limit's covers the two nodes' error in it.
    starts = claims(tmp_path / "n0.log", tmp_path / "n1.log")
    assert len(starts) == 20
    window = 1.0 - 0.05
    worst = max(sum(1 for t in starts if s <= t < s + window) for s in starts)
    assert worst <= 5, f"{worst} starts within {window} s"
    # 20 starts at 5 a second take at least three full windows after the first.
    assert starts[-1] - starts[0] >= 3 * 1.0 - 0.05


def _race(
    target: str, key: str, procs: int, threads: int, window: int | None
) -> list[list[object]]:
    args = [target, key, str(threads), str(ROOT), "-" if window is None else str(window)]
    running = [
        subprocess.Popen([sys.executable, "-c", UNIQUE, *args], stdout=subprocess.PIPE, cwd=ROOT)
        for _ in range(procs)
    ]
    out: list[list[object]] = []
    for p in running:
        stdout, _ = p.communicate(timeout=60)
        assert p.returncode == 0
        out += json.loads(stdout)
    return out


@pytest.mark.parametrize("window", [None, 60_000])
def test_one_unique_key_from_many_processes_makes_one_job(
    target: tuple[str, str], window: int | None
) -> None:
    procs = 3 if target[0] == "postgres" else 2
    key = f"k-{window}"
    answers = _race(target[1], key, procs, 36 // procs, window)
    assert len(answers) == 36
    assert len({job_id for job_id, _ in answers}) == 1
    assert sorted(bool(dup) for _, dup in answers) == [False] + [True] * 35
    with Client(target[1]) as client:
        jobs = list(client.iter_jobs())
    assert [j.unique_key for j in jobs] == [key]


def test_a_killed_node_s_slots_are_free_after_its_lease(
    pg: tuple[str, str], tmp_path: Path
) -> None:
    with Client(pg[1]) as client:
        client.configure_queue("held", concurrency=2)
        first = start_node(pg, tmp_path / "a.log")
        _jobs(client, "held", 4, 800, max_attempts=3, base_ms=100)
        deadline = time.monotonic() + 10
        while len(runs(tmp_path / "a.log")) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        first.send_signal(signal.SIGKILL)  # mid-run: both slots held by a dead node
        first.wait(timeout=10)
        killed = time.time()
        second = start_node(pg, tmp_path / "b.log")
        try:
            wait_done(client, "held", 4)
        finally:
            stop_all([second])
    held, after = runs(tmp_path / "a.log"), runs(tmp_path / "b.log")
    assert len(held) == 2 and all(e is None for _, e in held)
    # The dead node renewed its lease at the latest when killed: nothing of
    # the queue may start until that lease ends, then the slots work again.
    assert after[0][0] >= held[0][0] + LEASE_MS / 1000 - 0.05
    assert after[0][0] >= killed
    assert len(after) == 4 and most_overlapping(after) == 2


def test_a_run_ending_in_a_capped_queue_wakes_sleeping_nodes(pg: tuple[str, str]) -> None:
    """The NOTIFY a new due job sends, sent when a slot of a queue with a
    concurrency limit frees, and only then (an unlimited queue's run ending
    wakes nobody: nobody can be waiting on it)."""
    import psycopg

    from jobsched.stores.postgres import PostgresStore
    from jobsched.transitions import on_success

    with Client(pg[1]) as client:
        client.configure_queue("capped", concurrency=1)
        for queue in ("capped", "capped", "free"):
            client.schedule("work", {"id": queue}, queue=queue)
    store = PostgresStore(pg[1])
    with psycopg.connect(base_dsn(), autocommit=True) as listen:
        listen.execute(f'LISTEN "{store._pool.channel}"')
        now = store.db_now()
        claimed = {job.queue: job for job in store.claim_due(now, 10, "me", now + 60_000)}
        assert sorted(claimed) == ["capped", "free"]  # one slot: one capped job waits

        def end(job_queue: str) -> list[str]:
            job = claimed[job_queue]
            assert store.replace(on_success(job, now + 5, now), JobState.RUNNING, "me")
            return [n.payload for n in listen.notifies(timeout=0.5, stop_after=1)]

        assert end("free") == []
        assert end("capped") == ["0"]
    store.close()
