"""Dispatch on the real clock: short delays (tens of ms), generous bounds.

Each test waits on an Event set by the handler, never on a fixed sleep, and
allows seconds where tens of milliseconds are expected (a loaded 2-core CI).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from jobsched.dispatcher import Dispatcher
from jobsched.engine import Engine
from jobsched.jobs import JobState
from jobsched.runner import Runner, TaskRegistry
from jobsched.spec import ScheduleSpec
from jobsched.stores.base import ClusterClock, Store
from jobsched.stores.memory import MemoryStore
from jobsched.stores.sqlite import SQLiteStore
from jobsched.timefmt import now_ms
from tests.backend_postgres import database
from tests.harness import NodeProcess

T0_MS = 1_705_309_200_000
BOUND_S = 5.0  # "on time" means tens of ms; this only catches "never"


class Recorder:
    def __init__(self, expect: int) -> None:
        self.starts: list[tuple[Any, float]] = []
        self.expect = expect
        self.done = threading.Event()
        self.lock = threading.Lock()

    def __call__(self, payload: Any) -> None:
        with self.lock:
            self.starts.append((payload, time.time() * 1000))
            if len(self.starts) >= self.expect:
                self.done.set()


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "postgres":
        with database(tmp_path) as factory:
            yield factory()
        return
    s: Store = MemoryStore() if request.param == "memory" else SQLiteStore(str(tmp_path / "j.db"))
    yield s
    s.close()


def test_postgres_wakes_the_dispatcher_for_another_nodes_job(tmp_path: Path) -> None:
    """No wake() call: the other node's commit NOTIFYs the sleeping dispatcher."""
    rec = Recorder(1)
    with database(tmp_path) as factory:
        engine, d = running(factory(), rec, poll_ms=60_000)
        try:
            time.sleep(0.1)  # let the loop go to sleep with nothing due
            other = Engine(factory(), engine.registry)
            t = now_ms()
            other.schedule(ScheduleSpec(task="rec", payload_json="{}", delay_ms=20), t)
            assert rec.done.wait(BOUND_S)  # without the wake-up: 60 s
        finally:
            d.stop(1.0)


def running(store: Store, rec: Recorder, poll_ms: int = 1000) -> tuple[Engine, Dispatcher]:
    reg = TaskRegistry()
    reg.register("rec", rec)
    engine = Engine(store, reg)
    d = Dispatcher(engine, Runner(reg, workers=2), poll_ms=poll_ms)
    d.start()
    return engine, d


def test_jobs_run_at_their_time_not_before(store: Store) -> None:
    rec = Recorder(3)
    engine, d = running(store, rec)
    try:
        t = now_ms()
        for delay in (90, 30, 60):
            engine.schedule(
                ScheduleSpec(task="rec", payload_json=json.dumps(t + delay), delay_ms=delay), t
            )
        d.wake()
        assert rec.done.wait(BOUND_S)
    finally:
        d.stop(1.0)
    assert [due for due, _ in rec.starts] == [t + 30, t + 60, t + 90]
    # The ms clock floors; PostgreSQL dispatches on the database's clock, whose
    # measured offset from ours may be off by a few ms.
    slack = 25 if isinstance(store, ClusterClock) else 1
    for due, started in rec.starts:
        assert due <= started + slack < due + BOUND_S * 1000
    assert d.metrics.lateness_count == 3


def test_a_wake_up_beats_a_long_poll(store: Store) -> None:
    rec = Recorder(1)
    engine, d = running(store, rec, poll_ms=60_000)
    try:
        time.sleep(0.05)  # let the loop go to sleep with nothing due
        t = now_ms()
        engine.schedule(ScheduleSpec(task="rec", payload_json="{}", delay_ms=20), t)
        d.wake()
        assert rec.done.wait(BOUND_S)  # without the wake-up: 60 s
    finally:
        d.stop(1.0)


def test_an_interval_job_keeps_running(store: Store) -> None:
    rec = Recorder(3)
    engine, d = running(store, rec)
    try:
        spec = ScheduleSpec(task="rec", payload_json="{}", interval_ms=40)
        job = engine.schedule(spec, now_ms())
        d.wake()
        assert rec.done.wait(BOUND_S)
    finally:
        d.stop(1.0)
    after = engine.get(job.job_id)
    assert after.runs >= 3 and after.state is JobState.SCHEDULED


# -- the stdio node with --realtime -------------------------------------------------


def _schedule(delay_ms: int, job_id: str) -> dict[str, Any]:
    return {
        "type": "schedule_job",
        "msg_id": 1,
        "task": "t",
        "delay_ms": delay_ms,
        "job_id": job_id,
    }


def test_realtime_node_runs_jobs_and_writes_no_unsolicited_lines() -> None:
    node = NodeProcess("--realtime")
    try:
        assert node.send(_schedule(20, "a"))["type"] == "job_scheduled"
        deadline = time.monotonic() + BOUND_S
        state = "scheduled"
        while state != "completed" and time.monotonic() < deadline:
            reply = node.send({"type": "get_job", "msg_id": 2, "job_id": "a"})
            assert reply["type"] == "job_info" and reply["in_reply_to"] == 2  # no event lines
            state = reply["job"]["state"]
            time.sleep(0.02)
        assert state == "completed"
    finally:
        assert node.close() == 0


def test_realtime_node_with_events_reports_each_run() -> None:
    node = NodeProcess("--realtime", "--events", "--node-id", "n1")
    try:
        reply = node.send(_schedule(20, "b"))
        assert reply == {
            "type": "job_scheduled",
            "in_reply_to": 1,
            "job_id": "b",
            "scheduled_at": reply["scheduled_at"],
        }
        assert node.proc.stdout is not None
        lines = [json.loads(node.proc.stdout.readline()) for _ in range(2)]
    finally:
        assert node.close() == 0
    assert [line["src"] for line in lines] == ["n1", "n1"]
    assert [line["dest"] for line in lines] == ["events", "events"]
    bodies = [line["body"] for line in lines]
    assert [b["event"] for b in bodies] == ["started", "succeeded"]
    assert all(b["type"] == "run_event" and b["job_id"] == "b" and b["task"] == "t" for b in bodies)
    assert bodies[0]["due_at"] == reply["scheduled_at"]


def test_run_event_durations_are_never_negative_on_fast_runs() -> None:
    durations = _fast_run_durations(NodeProcess("--realtime", "--events"), 40)
    assert len(durations) == 40
    assert min(durations) >= 0, sorted(durations)[:5]


def test_duration_is_the_handlers_own_time_whatever_the_dispatchers_clock() -> None:
    """duration_ms is measured around the handler on a monotonic clock. It was
    the dispatcher's clock at collection minus the worker's wall start carried
    onto that clock: with a clock that lags the wall (an injected clock, the
    database's clock, a step whose "now" was read before the outcome arrived)
    it came out negative."""
    registry = TaskRegistry()

    @registry.task("nap")
    def nap(payload: object) -> None:
        time.sleep(0.02)

    engine = Engine(MemoryStore(), registry)
    engine.schedule(ScheduleSpec(task="nap", payload_json="{}"), T0_MS)
    events: list[dict[str, Any]] = []
    dispatcher = Dispatcher(engine, Runner(registry, 1), clock=lambda: T0_MS, events=events.append)
    dispatcher.runner.start()
    try:
        dispatcher.run_until_idle(T0_MS)
    finally:
        dispatcher.runner.stop()
    ended = [e for e in events if e["event"] == "succeeded"]
    assert len(ended) == 1
    assert 20 <= ended[0]["duration_ms"] < 2000, ended[0]


def _fast_run_durations(node: NodeProcess, n: int) -> list[float]:
    durations: list[float] = []
    try:
        assert node.proc.stdin is not None and node.proc.stdout is not None
        for i in range(n):
            body = {**_schedule(5 + i % 7, f"d{i}"), "msg_id": i}
            line = json.dumps({"src": "c", "dest": "s", "body": body})
            node.proc.stdin.write(line.encode() + b"\n")
        node.proc.stdin.flush()
        deadline = time.monotonic() + BOUND_S
        while len(durations) < n and time.monotonic() < deadline:
            body = json.loads(node.proc.stdout.readline())["body"]
            if body.get("event") == "succeeded":
                durations.append(body["duration_ms"])
    finally:
        assert node.close() == 0
    return durations
