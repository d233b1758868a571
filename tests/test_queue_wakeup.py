"""A node whose due jobs sit in a full queue sleeps until a slot frees (or a
rate window opens), instead of claiming again every 100 ms (docs/queues.md,
jobsched/dispatch_wait.py).

Each test counts the dispatcher's claims through an Engine subclass and runs
it with a long poll (POLL_MS), so that a start well before the poll can only
come from a wake-up. Bounds are generous (a loaded 2-core machine): the
polling this replaced made ten claims a second while blocked.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from jobsched.dispatcher import Dispatcher
from jobsched.engine import Engine
from jobsched.errors import Unavailable
from jobsched.isolation import SUCCESS
from jobsched.jobs import JobState
from jobsched.queues import QueueChange
from jobsched.runner import Runner, TaskRegistry
from jobsched.spec import ScheduleSpec
from jobsched.stores.base import ClusterClock, Store
from jobsched.stores.memory import MemoryStore
from jobsched.stores.postgres import PostgresStore
from jobsched.stores.sqlite import SQLiteStore
from jobsched.timefmt import now_ms
from tests.backend_postgres import database

POLL_MS = 10_000  # no start in these tests may wait for the poll
BLOCKED_S = 1.0  # how long a node is kept blocked
PROMPT_S = 0.8  # "at once" on a loaded machine; far below POLL_MS
MOST_CLAIMS = 4  # claims while blocked for BLOCKED_S (the 100 ms polling made ~10)

Factory = Any


class Counting(Engine):
    """An engine that counts the dispatcher's claims, and keeps the time
    (the dispatcher's clock) of those that took jobs."""

    claims = 0

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.took: list[tuple[int, int]] = []  # (now, jobs taken)

    def claim(self, now: int, *args: Any, **kwargs: Any) -> Any:
        self.claims += 1
        taken = super().claim(now, *args, **kwargs)
        if taken:
            self.took.append((now, len(taken)))
        return taken


class Starts:
    """A handler that records each start (wall s) and blocks on ``gate`` when
    its payload says so."""

    def __init__(self) -> None:
        self.at: list[tuple[str, float]] = []
        self.gate = threading.Event()
        self.entered = threading.Event()
        self.lock = threading.Lock()

    def __call__(self, payload: Any) -> None:
        with self.lock:
            self.at.append((payload["id"], time.time()))
        if payload.get("hold"):
            self.entered.set()
            assert self.gate.wait(30)

    def wait_for(self, n: int, timeout_s: float = 10.0) -> None:
        deadline = time.monotonic() + timeout_s
        while len(self.at) < n and time.monotonic() < deadline:
            time.sleep(0.005)
        assert len(self.at) >= n, self.at


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Factory]:
    """A factory of handles on one store (the memory store: the same one)."""
    if request.param == "postgres":
        with database(tmp_path) as factory:
            yield factory
        return
    opened: list[Store] = []

    def factory() -> Store:
        if request.param == "memory":
            if not opened:
                opened.append(MemoryStore())
            return opened[0]
        opened.append(SQLiteStore(str(tmp_path / "j.db")))
        return opened[-1]

    yield factory
    for s in opened:
        s.close()


def node(store: Store, starts: Starts, workers: int = 4) -> tuple[Counting, Dispatcher]:
    reg = TaskRegistry()
    reg.register("work", starts)
    engine = Counting(store, reg)
    clock = store.db_now if isinstance(store, ClusterClock) else now_ms
    return engine, Dispatcher(engine, Runner(reg, workers), clock=clock, poll_ms=POLL_MS)


def jobs(engine: Engine, queue: str, *payloads: str) -> None:
    for i, payload in enumerate(payloads):
        spec = ScheduleSpec(task="work", payload_json=payload, queue=queue, job_id=f"{queue}{i}")
        engine.schedule(spec, now_ms())


def test_a_node_blocked_by_its_own_run_sleeps_and_starts_the_next_at_its_end(
    make_store: Factory,
) -> None:
    starts = Starts()
    engine, d = node(make_store(), starts)
    engine.configure_queue("one", QueueChange(concurrency=1))
    jobs(engine, "one", '{"id": "a", "hold": true}', '{"id": "b"}')
    d.start()
    try:
        assert starts.entered.wait(10)
        before = engine.claims
        time.sleep(BLOCKED_S)  # b is due, its queue is full: nothing to do
        assert engine.claims - before <= MOST_CLAIMS
        released = time.time()
        starts.gate.set()
        starts.wait_for(2)
    finally:
        d.stop(5)
    assert [name for name, _ in starts.at] == ["a", "b"]
    assert starts.at[1][1] - released < PROMPT_S


@pytest.mark.parametrize("make_store", ["sqlite", "postgres"], indirect=True)
def test_a_slot_freed_by_another_process_wakes_the_blocked_node(make_store: Factory) -> None:
    """The other handle holds the queue's only slot and ends its run: on
    PostgreSQL its commit NOTIFYs, on SQLite it changes data_version."""
    starts = Starts()
    other = Engine(make_store(), TaskRegistry())
    other.configure_queue("one", QueueChange(concurrency=1))
    jobs(other, "one", '{"id": "a"}', '{"id": "b"}')
    now = _now(other.store)
    [held] = other.claim(now, 10, "other", now + 60_000)
    engine, d = node(make_store(), starts)
    d.start()
    try:
        time.sleep(BLOCKED_S)
        assert starts.at == [] and engine.claims <= MOST_CLAIMS
        freed = time.time()
        other.finish_all([(held.job, SUCCESS, _now(other.store), now)])
        starts.wait_for(1)
    finally:
        d.stop(5)
    assert starts.at[0][1] - freed < PROMPT_S


def test_a_rate_limited_node_looks_again_when_its_window_opens(make_store: Factory) -> None:
    starts = Starts()
    engine, d = node(make_store(), starts)
    engine.configure_queue("rated", QueueChange(rate_max=2, rate_per_ms=500))
    jobs(engine, "rated", *[f'{{"id": "{i}"}}' for i in range(6)])
    d.start()
    try:
        starts.wait_for(6)
    finally:
        d.stop(5)
    # Three windows of two starts (the store holds the limit), each claimed
    # as its window opens (the poll would make it 10 s), on the claims' clock.
    assert [n for _, n in engine.took] == [2, 2, 2], engine.took
    gaps = [b - a for (a, _), (b, _) in zip(engine.took, engine.took[1:], strict=False)]
    assert all(500 <= gap < 500 + PROMPT_S * 1000 for gap in gaps), gaps
    # A claim per window, and at most one more per run ended (its outcome is
    # written at once); a node that polled (or spun) would make many more.
    assert engine.claims <= 6 * 2, engine.claims


def test_a_node_blocked_on_one_queue_starts_another_queue_s_job_on_time(
    make_store: Factory,
) -> None:
    """Due jobs of a paused queue do not keep the node from the next job of a
    free queue: it sleeps until that one is due, not until the poll."""
    starts = Starts()
    engine, d = node(make_store(), starts)
    engine.configure_queue("held", QueueChange(paused=True))
    jobs(engine, "held", '{"id": "h0"}', '{"id": "h1"}')
    due = now_ms() + 1500
    spec = ScheduleSpec(task="work", payload_json='{"id": "b"}', queue="free", run_at=due)
    engine.schedule(spec, now_ms())
    d.start()
    try:
        starts.wait_for(1, timeout_s=POLL_MS / 1000)
    finally:
        d.stop(5)
    assert [name for name, _ in starts.at] == ["b"]
    assert starts.at[0][1] * 1000 - due < PROMPT_S * 1000, starts.at[0][1] * 1000 - due


@pytest.mark.parametrize("make_store", ["sqlite", "postgres"], indirect=True)
def test_a_job_another_process_makes_due_wakes_a_node_blocked_on_another_queue(
    make_store: Factory,
) -> None:
    """On PostgreSQL the commit NOTIFYs although jobs due sooner (blocked in
    a paused queue) exist; on SQLite any commit of another connection wakes."""
    starts = Starts()
    other = Engine(make_store(), TaskRegistry())
    other.configure_queue("held", QueueChange(paused=True))
    jobs(other, "held", '{"id": "h0"}', '{"id": "h1"}')
    engine, d = node(make_store(), starts)
    d.start()
    try:
        time.sleep(BLOCKED_S)
        assert starts.at == [] and engine.claims <= MOST_CLAIMS
        made = time.time()
        spec = ScheduleSpec(task="work", payload_json='{"id": "b"}', queue="free")
        other.schedule(spec, _now(other.store))
        starts.wait_for(1)
    finally:
        d.stop(5)
    assert starts.at[0][1] - made < PROMPT_S


def _now(store: Store) -> int:
    return store.db_now() if isinstance(store, ClusterClock) else now_ms()


class Failing(Counting):
    """Its claim raises while ``fail`` is set, as a storage fault would."""

    fail = False

    def claim(self, now: int, *args: Any, **kwargs: Any) -> Any:
        if self.fail:
            raise Unavailable("storage unavailable (injected)")
        return super().claim(now, *args, **kwargs)


def test_outcomes_written_in_a_failed_claim_s_transaction_are_kept_and_written_later(
    tmp_path: Path,
) -> None:
    """An ended run of a full queue is written in the next claim's
    transaction: when that claim fails, its write is undone with it, the
    outcome stays to be written, and the run is recorded once."""
    starts = Starts()
    reg = TaskRegistry()
    reg.register("work", starts)
    store = SQLiteStore(str(tmp_path / "j.db"))
    engine = Failing(store, reg)
    engine.configure_queue("one", QueueChange(concurrency=1))
    jobs(engine, "one", '{"id": "a"}', '{"id": "b"}')
    runner = Runner(reg, 4)
    runner.start()
    d = Dispatcher(engine, runner, poll_ms=POLL_MS)
    try:
        now = now_ms()
        d.step(now)  # a starts; b is due and its queue is full: blocked
        deadline = time.monotonic() + 10
        while d._done.empty() and time.monotonic() < deadline:  # a's handler has not ended
            time.sleep(0.005)
        engine.fail = True
        with pytest.raises(Unavailable):
            d.step(now + 1)  # a's outcome, then the claim that fails
        assert store.get("one0").state is JobState.RUNNING  # undone with the claim
        engine.fail = False
        d.run_until_idle(now + 2)
    finally:
        runner.stop()
        store.close()
    assert [name for name, _ in starts.at] == ["a", "b"]
    assert [r.outcome for r in store.recent_runs("one0")] == ["succeeded"]
    assert store.get("one1").state is JobState.COMPLETED


@pytest.mark.parametrize("concurrency", [2, None])
def test_ended_runs_are_written_in_the_next_claim_s_transaction(
    make_store: Factory, concurrency: int | None
) -> None:
    """A node writes its ended runs' outcomes in its next claim's transaction:
    one commit a round, not two (on a durable store the fsync is most of a
    round), and a capped queue's slots its ended runs hold are free for that
    claim. The dispatcher wrote them in the claim's transaction only for
    queues it knew were capped, and learnt that only when it looked for a
    rate window: every round on a capped queue was three transactions (a
    claim that found the slots held by its own ended runs, the outcomes, the
    claim again), and on any other queue two."""
    store = make_store()
    commits = _count_commits(store)
    reg = TaskRegistry()  # no handlers: every run ends as it starts
    engine = Counting(store, reg)
    if concurrency is not None:
        engine.configure_queue("two", QueueChange(concurrency=concurrency))
    for i in range(20):
        spec = ScheduleSpec(task="noop", payload_json="null", queue="two", job_id=f"two{i}")
        engine.schedule(spec, now_ms())
    clock = store.db_now if isinstance(store, ClusterClock) else now_ms
    runner = Runner(reg, 2)
    runner.start()
    before = len(commits)
    try:
        Dispatcher(engine, runner, clock=clock, poll_ms=POLL_MS).run_until_idle(clock())
    finally:
        runner.stop()
    assert all(store.get(f"two{i}").state is JobState.COMPLETED for i in range(20))
    assert len(engine.took) == 10
    assert engine.claims - len(engine.took) <= 2  # the end
    if isinstance(store, SQLiteStore | PostgresStore):
        assert len(commits) - before <= len(engine.took) + 3  # one a round, and the end


def _count_commits(store: Store) -> list[None]:
    """A list that grows by one at each commit of ``store`` (a SQL store)."""
    commits: list[None] = []
    if isinstance(store, SQLiteStore | PostgresStore):
        commit = store._pool._tx_commit if isinstance(store, PostgresStore) else store._tx_commit

        def counted(conn: Any) -> None:
            commits.append(None)
            commit(conn)

        if isinstance(store, PostgresStore):
            store._pool._tx_commit = counted  # type: ignore[method-assign]
        else:
            store._tx_commit = counted  # type: ignore[method-assign]
    return commits
