"""What the SQLite store promises beyond the common contract: its settings, a
connection per thread, faults as Unavailable, and queries served by indexes."""

from __future__ import annotations

import gc
import sqlite3
import threading
import uuid
from pathlib import Path

import pytest

from jobsched.errors import JobschedError, Unavailable
from jobsched.jobs import ONCE, Job, JobState
from jobsched.stores.sqlite import SQLiteStore
from jobsched.stores.sqlite_schema import list_sql

T0 = 1_705_309_200_000


def job(job_id: str, due: int = T0) -> Job:
    return Job(job_id, "t", "{}", ONCE, JobState.SCHEDULED, due, T0, T0)


@pytest.fixture
def path(tmp_path: Path) -> str:
    return str(tmp_path / "jobs.db")


@pytest.mark.parametrize(("mode", "level"), [("FULL", 2), ("NORMAL", 1), ("full", 2)])
def test_wal_and_the_synchronous_level_are_set(path: str, mode: str, level: int) -> None:
    store = SQLiteStore(path, synchronous=mode)
    db = store._local().db
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("PRAGMA synchronous").fetchone()[0] == level
    store.close()


def test_an_unknown_synchronous_level_is_refused(path: str) -> None:
    with pytest.raises(JobschedError, match="synchronous"):
        SQLiteStore(path, synchronous="SOMETIMES")


def test_each_thread_has_its_own_connection_and_transaction(path: str) -> None:
    store = SQLiteStore(path)
    inside, seen = threading.Event(), threading.Event()
    observed: list[object] = []

    def other_thread() -> None:
        inside.wait(timeout=10)
        observed.append(store.get("x"))  # the open transaction is not visible here
        seen.set()

    t = threading.Thread(target=other_thread)
    t.start()
    with store.transaction():
        store.insert(job("x"))
        inside.set()
        assert seen.wait(timeout=10)
    t.join()
    assert observed == [None]
    assert store.get("x") is not None
    store.close()


def test_writers_on_two_threads_take_turns(path: str) -> None:
    store = SQLiteStore(path)

    def writer(prefix: str) -> None:
        for i in range(50):
            with store.transaction():
                store.insert(job(f"{prefix}{i}"))

    threads = [threading.Thread(target=writer, args=(p,)) for p in "ab"]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(list(store.iter_all())) == 100
    store.close()


def test_a_locked_file_makes_writes_unavailable_and_changes_nothing(path: str) -> None:
    store = SQLiteStore(path, busy_timeout_ms=50)
    store.insert(job("old"))
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(Unavailable, match="locked"):
            store.insert(job("new"))
        with store.transaction():
            assert store.get("old") is not None  # reads are still served
            with pytest.raises(Unavailable, match="locked"):
                store.claim_due(T0, 10, "me", T0)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert [j.job_id for j in store.iter_all()] == ["old"]
    assert store.insert(job("new")).seq > 0  # and writes work again
    store.close()


def test_a_failed_commit_raises_unavailable_and_keeps_nothing(path: str) -> None:
    store = SQLiteStore(path, busy_timeout_ms=50)
    other = SQLiteStore(path, busy_timeout_ms=50)
    with pytest.raises(Unavailable), store.transaction():
        store.insert(job("a"))
        # A second connection cannot get the lock the first holds: its own
        # transaction can only read, and its write is refused.
        with other.transaction():
            other.insert(job("b"))
    assert list(store.iter_all()) == []
    store.close()
    other.close()


def plan(store: SQLiteStore, sql: str, *args: object) -> str:
    rows = store._local().db.execute(f"EXPLAIN QUERY PLAN {sql}", args).fetchall()
    return " | ".join(str(r[-1]) for r in rows)


def test_the_hot_queries_use_their_indexes(path: str) -> None:
    from jobsched.stores.sqlite_sql import CLAIM

    store = SQLiteStore(path)
    for limits in (False, True):
        claim = plan(store, CLAIM[limits], "me", T0, T0, T0, 10)
        assert "jobs_due" in claim and "TEMP B-TREE" not in claim, claim
    store.next_due()  # fails to prepare if its INDEXED BY cannot be honoured
    assert "job_id=?" in plan(store, "SELECT seq FROM jobs WHERE job_id = ?", "x")
    listing = "SELECT seq FROM jobs WHERE seq > ? AND {} = ? ORDER BY seq LIMIT ?"
    assert "jobs_state" in plan(store, listing.format("state"), 0, "dead", 10)
    assert "jobs_task" in plan(store, listing.format("task"), 0, "t", 10)
    assert "USE TEMP B-TREE" not in plan(store, listing.format("task"), 0, "t", 10)
    store.close()


def test_listing_keeps_no_job_alive_after_the_caller_drops_it(path: str) -> None:
    store = SQLiteStore(path)
    mark = f"listed-{uuid.uuid4().hex}"  # no other test's job can carry it
    for i in range(5):
        store.insert(Job(f"{mark}-{i}", mark, "{}", ONCE, JobState.SCHEDULED, T0, T0, T0))
    for i in range(100):
        state = JobState.SCHEDULED if i % 2 else None
        page = store.list_jobs(state, mark if i % 3 else None, None, 1 + i % 7)
        assert page and all(j.task == mark for j in page)
    del page
    store.close()
    gc.collect()
    assert not [o for o in gc.get_objects() if isinstance(o, Job) and o.task == mark]
    # What is worth keeping is kept: the statement text, one per filter combination
    # (two placeholder styles x state, task and queue filters on or off: 16 at most).
    assert list_sql.cache_info().currsize <= 16 and list_sql.cache_info().hits >= 90


def _claim_steps(tmp_path: Path, held: int) -> int:
    """SQLite virtual machine steps (in thousands) of one claim of 3 jobs
    of queue default, behind a paused queue and a full one of ``held`` due jobs each."""
    from jobsched.queues import QueueChange

    store = SQLiteStore(str(tmp_path / f"held{held}.db"))

    def queued(job_id: str, queue: str, priority: int) -> Job:
        j = job(job_id)
        j.queue, j.priority = queue, priority
        return j

    store.insert_many([queued(f"h{i}", "held", i % 3) for i in range(held)])
    store.insert_many([queued(f"f{i}", "full", i % 3) for i in range(held)])
    store.insert_many([queued(f"d{i}", "default", i % 2) for i in range(4)])
    store.configure_queue("held", QueueChange(paused=True))
    store.configure_queue("full", QueueChange(concurrency=1))
    assert store.claim_due(T0, 1, "me", T0 + 60_000, frozenset({"full"}))
    steps = [0]

    def count() -> int:
        steps[0] += 1
        return 0

    db = store._local().db
    db.set_progress_handler(count, 1000)
    taken = store.claim_due(T0 + 1000, 3, "me", T0 + 60_000)
    db.set_progress_handler(None, 0)
    assert sorted(j.job_id for j in taken) == ["d0", "d1", "d2"]
    store.close()
    return steps[0]


def test_a_claim_behind_held_queues_does_not_read_their_backlog(tmp_path: Path) -> None:
    """A paused queue, or a full one, holds its due jobs back. A claim took
    the other queues' jobs by walking the due index and filtering the held
    ones out, so every claim read the whole held backlog; it reads the other
    queues one by one instead: its work does not grow with that backlog."""
    small, large = _claim_steps(tmp_path, 100), _claim_steps(tmp_path, 5000)
    assert large <= small + 2, (small, large)
