"""Transactional enqueue: ``Client.schedule(..., connection=conn)`` writes the
job inside the application's own open transaction, on SQLite (sqlite3) and
PostgreSQL (psycopg 3): rolled back, there is no job; committed, the job
exists and a running node is woken at once (PostgreSQL: the NOTIFY goes out on
the application's connection, at its commit; SQLite: the node's dispatcher
notices the commit through ``PRAGMA data_version``)."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from jobsched import Client, JobSpec, JobState, ScheduledJob
from jobsched.dispatcher import Dispatcher
from jobsched.engine import Engine, EngineConfig
from jobsched.errors import JobExists, JobNotFound, Malformed
from jobsched.runner import Runner, TaskRegistry
from jobsched.stores.base import Store
from jobsched.stores.postgres import PostgresStore
from jobsched.stores.sqlite import SQLiteStore
from tests.backend_postgres import base_dsn, fresh_schema, with_schema
from tests.harness import NodeProcess

LATER = datetime(2031, 3, 1, tzinfo=UTC)
# The node polls its store this rarely: only a wake-up explains a prompt run.
POLL_MS = 60_000
PROMPT_S = 5.0


class Target:
    """A store target (a client on it) and how to open the application's connection."""

    def __init__(self, kind: str, where: str) -> None:
        self.kind, self.where = kind, where
        self.client = Client(where)
        self.opened: list[Any] = []

    def connect(self, **kw: Any) -> Any:
        if self.kind == "sqlite":
            conn: Any = sqlite3.connect(self.where, **kw)
        else:
            conn = psycopg.connect(base_dsn(), **kw)
        self.opened.append(conn)
        return conn

    def close(self) -> None:
        for conn in self.opened:
            conn.close()
        self.client.close()


@pytest.fixture(params=["sqlite", "postgres"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Target]:
    if request.param == "sqlite":
        t = Target("sqlite", str(tmp_path / "jobs.db"))
        yield t
        t.close()
        return
    with fresh_schema() as schema:
        t = Target("postgres", with_schema(base_dsn(), schema))
        yield t
        t.close()


def _exists(t: Target, job_id: str) -> bool:
    """Seen from outside the application's transaction (another client)."""
    with Client(t.where) as other:
        try:
            other.get(job_id)
        except JobNotFound:
            return False
        return True


def test_rolled_back_there_is_no_job_committed_there_is(target: Target) -> None:
    conn = target.connect()
    job = target.client.schedule("t", {"n": 1}, run_at=LATER, job_id="tx-1", connection=conn)
    assert job == ScheduledJob("tx-1", LATER, False)
    assert not _exists(target, "tx-1")  # not committed yet
    conn.rollback()
    assert not _exists(target, "tx-1")
    target.client.schedule("t", {"n": 2}, run_at=LATER, job_id="tx-1", connection=conn)
    conn.commit()
    assert _exists(target, "tx-1")
    assert target.client.get("tx-1").payload == {"n": 2}


def test_a_batch_goes_with_the_transaction(target: Target) -> None:
    conn = target.connect()
    specs = [JobSpec("t", {"i": i}, run_at=LATER, job_id=f"b-{i}") for i in range(50)]
    assert len(target.client.schedule_many(specs, connection=conn)) == 50
    conn.rollback()
    assert target.client.stats().total == 0
    target.client.schedule_many(specs, connection=conn)
    conn.commit()
    assert [j.job_id for j in target.client.iter_jobs()] == [f"b-{i}" for i in range(50)]


def test_the_jobs_commit_with_the_applications_own_writes(target: Target) -> None:
    conn = target.connect()
    conn.execute("CREATE TEMP TABLE app_orders (id INTEGER PRIMARY KEY, item TEXT)")
    conn.commit()
    conn.execute("INSERT INTO app_orders VALUES (1, 'book')")
    target.client.schedule("ship", {"order": 1}, run_at=LATER, job_id="ship-1", connection=conn)
    # A failed call undoes only itself: the transaction stays usable.
    with pytest.raises(JobExists):
        target.client.schedule("other", run_at=LATER, job_id="ship-1", connection=conn)
    with pytest.raises(Malformed, match=r"^delay_ms: "):
        target.client.schedule("ship", delay_ms=-1, connection=conn)
    with pytest.raises(Malformed, match=r"^jobs\[1\]\.task: "):
        target.client.schedule_many([{"task": "a"}, {"task": ""}], connection=conn)
    # A re-send inside the same transaction sees the job written in it.
    again = target.client.schedule(
        "ship", {"order": 1}, run_at=LATER, job_id="ship-1", connection=conn
    )
    assert again.job_id == "ship-1"
    conn.execute("INSERT INTO app_orders VALUES (2, 'lamp')")
    conn.commit()
    assert conn.execute("SELECT count(*) FROM app_orders").fetchone()[0] == 2
    assert [j.job_id for j in target.client.iter_jobs()] == ["ship-1"]


def test_the_applications_connection_settings_are_left_as_they_were(target: Target) -> None:
    if target.kind == "sqlite":
        conn = target.connect()
        conn.row_factory = sqlite3.Row
        target.client.schedule("t", run_at=LATER, job_id="rf", connection=conn)
        assert conn.row_factory is sqlite3.Row
        conn.commit()
        assert conn.execute("SELECT job_id FROM jobs").fetchone()["job_id"] == "rf"
        return
    conn = target.connect(row_factory=dict_row)
    path = conn.execute("SHOW search_path").fetchone()["search_path"]
    target.client.schedule("t", run_at=LATER, job_id="rf", connection=conn)
    assert conn.row_factory is dict_row
    assert conn.execute("SHOW search_path").fetchone()["search_path"] == path
    conn.commit()
    assert target.client.get("rf").state is JobState.SCHEDULED


def test_connections_that_cannot_hold_the_job_are_refused(target: Target, tmp_path: Path) -> None:
    if target.kind == "sqlite":
        auto = target.connect(isolation_level=None)
        other = sqlite3.connect(tmp_path / "other.db")
        target.opened.append(other)
        wrong_db = (
            f"is a connection to '{tmp_path / 'other.db'}', "
            f"not to this store's database '{target.where}'"
        )
    else:
        auto = target.connect(autocommit=True)
        other = psycopg.connect(base_dsn().rsplit("/", 1)[0] + "/postgres")
        target.opened.append(other)
        wrong_db = "is to database 'postgres', not to the store's 'test'"
    with pytest.raises(Malformed, match=r"^connection: has no transaction open"):
        target.client.schedule("t", connection=auto)
    with pytest.raises(Malformed) as err:
        target.client.schedule("t", connection=other)
    assert err.value.text == f"connection: {wrong_db}"
    assert target.client.stats().total == 0
    if target.kind == "postgres":
        failed = target.connect()
        with pytest.raises(psycopg.errors.DivisionByZero):
            failed.execute("SELECT 1 / 0")
        with pytest.raises(Malformed, match="its transaction has failed"):
            target.client.schedule("t", connection=failed)
        with auto.transaction():  # an autocommit connection inside a transaction block
            target.client.schedule("t", run_at=LATER, job_id="in-block", connection=auto)
        assert _exists(target, "in-block")


def _open_store(t: Target) -> Store:
    if t.kind == "sqlite":
        return SQLiteStore(t.where)
    return PostgresStore(t.where)


def test_a_commit_wakes_a_sleeping_dispatcher_at_once(target: Target) -> None:
    # Its own store handle, as another process would have. Leases of an hour:
    # its maintenance (every lease / 3) would not look at the store either.
    store = _open_store(target)
    engine = Engine(store, config=EngineConfig(lease_ms=3_600_000))
    dispatcher = Dispatcher(engine, Runner(TaskRegistry(), 1), poll_ms=POLL_MS)
    dispatcher.start()
    try:
        time.sleep(0.3)  # asleep: nothing is due, and it would look again in a minute
        conn = target.connect()
        target.client.schedule("t", {"n": 1}, job_id="wake-me", connection=conn)
        time.sleep(0.3)
        assert not _exists(target, "wake-me")
        conn.commit()
        committed = time.monotonic()
        while target.client.get("wake-me").state is not JobState.COMPLETED:
            assert time.monotonic() - committed < PROMPT_S, "no wake-up: the job waits for a poll"
            time.sleep(0.02)
    finally:
        dispatcher.stop(1.0)
        store.close()


def test_a_commit_wakes_a_running_node_at_once(target: Target) -> None:
    node = NodeProcess("--db", target.where, "--realtime", "--poll-ms", str(POLL_MS))
    try:
        assert node.send({"type": "stats"})["type"] == "stats"  # up, and asleep: nothing is due
        time.sleep(0.3)
        conn = target.connect()
        target.client.schedule("t", {"n": 1}, job_id="wake-me", connection=conn)
        time.sleep(0.3)
        assert not _exists(target, "wake-me")  # not committed: neither seen nor run
        conn.commit()
        committed = time.monotonic()
        while target.client.get("wake-me").state is not JobState.COMPLETED:
            assert time.monotonic() - committed < PROMPT_S, node.stderr()
            time.sleep(0.02)
        assert time.monotonic() - committed < PROMPT_S < POLL_MS / 1000
        assert node.close() == 0
    finally:
        node.proc.kill()


def test_a_rolled_back_job_never_runs(target: Target) -> None:
    node = NodeProcess("--db", target.where, "--realtime", "--poll-ms", "50")
    try:
        assert node.send({"type": "stats"})["type"] == "stats"
        conn = target.connect()
        target.client.schedule("t", job_id="never", connection=conn)
        target.client.schedule("t", job_id="marker", connection=conn)
        conn.rollback()
        target.client.schedule("t", job_id="after")
        deadline = time.monotonic() + PROMPT_S
        while target.client.get("after").state is not JobState.COMPLETED:
            assert time.monotonic() < deadline, node.stderr()
            time.sleep(0.02)
        reply = node.send({"type": "list_jobs"})
        assert [j["job_id"] for j in reply["jobs"]] == ["after"], json.dumps(reply)
        assert node.close() == 0
    finally:
        node.proc.kill()
