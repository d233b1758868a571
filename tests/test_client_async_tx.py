"""Transactional enqueue from asyncio: ``await AsyncClient(pg_url).schedule(...,
connection=aconn)`` with a ``psycopg.AsyncConnection`` writes the job inside
the application's async transaction (rolled back: no job; committed: the job
exists and a sleeping node is woken by the NOTIFY at the commit), while the
event loop goes on running other tasks; connections that cannot hold the job
are refused with error 12. Real PostgreSQL, a fresh schema per test."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.pq import TransactionStatus
from psycopg.rows import dict_row

from jobsched import AsyncClient, Client, JobSpec, JobState, ScheduledJob
from jobsched.client_types import WrongConnection
from jobsched.errors import JobExists, JobNotFound, Malformed
from tests.backend_postgres import base_dsn, fresh_schema, with_schema
from tests.harness import NodeProcess, assert_mypy_strict

ROOT = Path(__file__).resolve().parent.parent
LATER = datetime(2031, 3, 1, tzinfo=UTC)
POLL_MS = 60_000  # the node polls this rarely: only a wake-up explains a prompt run
PROMPT_S = 5.0
HOLD_S = 0.6  # how long another session keeps the jobs table locked


@pytest.fixture
def dsn() -> Iterator[str]:
    with fresh_schema() as schema:
        where = with_schema(base_dsn(), schema)
        Client(where).close()  # creates the schema's tables
        yield where


def _exists(dsn: str, job_id: str) -> bool:
    """Seen from outside the application's transaction (another client)."""
    with Client(dsn) as other:
        try:
            other.get(job_id)
        except JobNotFound:
            return False
        return True


async def _connect(**kw: Any) -> psycopg.AsyncConnection[Any]:
    return await psycopg.AsyncConnection.connect(base_dsn(), **kw)


def test_rolled_back_there_is_no_job_committed_there_is(dsn: str) -> None:
    async def app() -> None:
        async with AsyncClient(dsn) as client, await _connect() as conn:
            job = await client.schedule("t", {"n": 1}, run_at=LATER, job_id="tx-1", connection=conn)
            assert job == ScheduledJob("tx-1", LATER, False)
            assert not _exists(dsn, "tx-1")  # not committed yet
            await conn.rollback()
            assert not _exists(dsn, "tx-1")
            await client.schedule("t", {"n": 2}, run_at=LATER, job_id="tx-1", connection=conn)
            await conn.commit()
            assert (await client.get("tx-1")).payload == {"n": 2}

    asyncio.run(app())


def test_a_batch_goes_with_the_transaction(dsn: str) -> None:
    specs = [JobSpec("t", {"i": i}, run_at=LATER, job_id=f"b-{i}") for i in range(50)]

    async def app() -> None:
        async with AsyncClient(dsn) as client, await _connect() as conn:
            assert len(await client.schedule_many(specs, connection=conn)) == 50
            await conn.rollback()
            assert (await client.stats()).total == 0
            async with conn.transaction():  # the other way to hold a transaction
                await client.schedule_many(specs, connection=conn)
            ids = [j.job_id async for j in client.iter_jobs()]
            assert ids == [f"b-{i}" for i in range(50)]

    asyncio.run(app())


def test_the_jobs_commit_with_the_applications_own_writes(dsn: str) -> None:
    async def app() -> None:
        async with AsyncClient(dsn) as client, await _connect(row_factory=dict_row) as conn:
            await conn.execute("CREATE TEMP TABLE app_orders (id INTEGER PRIMARY KEY, item TEXT)")
            await conn.commit()
            path = await (await conn.execute("SHOW search_path")).fetchone()
            await conn.execute("INSERT INTO app_orders VALUES (1, 'book')")
            await client.schedule("ship", {"order": 1}, run_at=LATER, job_id="s-1", connection=conn)
            # A failed call undoes only itself: the transaction stays usable.
            with pytest.raises(JobExists):
                await client.schedule("other", run_at=LATER, job_id="s-1", connection=conn)
            with pytest.raises(Malformed, match=r"^jobs\[1\]\.task: "):
                await client.schedule_many([{"task": "a"}, {"task": ""}], connection=conn)
            # A job with a unique key (its own statements), and a re-send that
            # sees the job written in this transaction.
            await client.schedule(
                "mail", run_at=LATER, job_id="m-1", unique_key="mail:1", connection=conn
            )
            again = await client.schedule(
                "ship", {"order": 1}, run_at=LATER, job_id="s-1", connection=conn
            )
            assert again.job_id == "s-1"
            # The application's connection is as it was: its row factory, its search_path.
            assert conn.row_factory is dict_row
            assert await (await conn.execute("SHOW search_path")).fetchone() == path
            await conn.execute("INSERT INTO app_orders VALUES (2, 'lamp')")
            await conn.commit()
            count = await (await conn.execute("SELECT count(*) AS n FROM app_orders")).fetchone()
            assert count == {"n": 2}
            assert sorted([j.job_id async for j in client.iter_jobs()]) == ["m-1", "s-1"]

    asyncio.run(app())


def _lock_jobs_table(dsn: str) -> threading.Timer:
    """Another session holds the jobs table against writes for HOLD_S."""
    schema = dsn.rsplit("schema=", 1)[1]
    locker = psycopg.connect(base_dsn())
    locker.execute(f'LOCK TABLE "{schema}".jobs IN EXCLUSIVE MODE')

    def release() -> None:
        locker.rollback()
        locker.close()

    timer = threading.Timer(HOLD_S, release)
    timer.start()
    return timer


def test_the_event_loop_runs_on_while_the_call_waits(dsn: str) -> None:
    # The job's INSERT waits for another session's lock for HOLD_S: if the
    # call held the loop meanwhile, the ticker could not tick.
    async def app() -> tuple[float, int]:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        async with AsyncClient(dsn) as client, await _connect() as conn:
            ticking = asyncio.create_task(ticker())
            await asyncio.sleep(0.05)
            timer = _lock_jobs_table(dsn)
            start, before = time.monotonic(), ticks
            await client.schedule("t", run_at=LATER, job_id="slow", connection=conn)
            took, during = time.monotonic() - start, ticks - before
            ticking.cancel()
            timer.join()
            await conn.commit()
        return took, during

    took, during = asyncio.run(app())
    assert took >= HOLD_S * 0.8, took  # it did wait for the lock
    assert during >= 20, (took, during)  # ~60 expected at one tick per 10 ms
    assert _exists(dsn, "slow")


def test_a_cancelled_call_leaves_nothing_running_on_the_connection(dsn: str) -> None:
    # Cancelled while its INSERT waits, the call still ends before the
    # CancelledError arrives: no statement of ours reaches the connection
    # after the application's rollback (it would begin a transaction there).
    async def app() -> float:
        async with AsyncClient(dsn) as client, await _connect() as conn:
            await conn.execute("SELECT 1")  # the application's transaction is open
            timer = _lock_jobs_table(dsn)
            call = asyncio.create_task(
                client.schedule("t", run_at=LATER, job_id="cancelled", connection=conn)
            )
            await asyncio.sleep(0.2)
            start = time.monotonic()
            call.cancel()
            with pytest.raises(asyncio.CancelledError):
                await call
            waited = time.monotonic() - start
            timer.join()
            await conn.rollback()
            await asyncio.sleep(0.3)
            assert conn.info.transaction_status == TransactionStatus.IDLE
        return waited

    waited = asyncio.run(app())
    assert waited >= (HOLD_S - 0.2) * 0.8, waited  # it waited for the call's end
    assert not _exists(dsn, "cancelled")


def test_a_commit_wakes_a_running_node_at_once(dsn: str) -> None:
    node = NodeProcess("--db", dsn, "--realtime", "--poll-ms", str(POLL_MS))
    try:
        assert node.send({"type": "stats"})["type"] == "stats"  # up, and asleep
        time.sleep(0.3)

        async def app() -> float:
            async with AsyncClient(dsn) as client, await _connect() as conn:
                await client.schedule("t", {"n": 1}, job_id="wake-me", connection=conn)
                specs = [JobSpec("t", {"i": i}, job_id=f"wake-{i}") for i in range(3)]
                await client.schedule_many(specs, connection=conn)
                await asyncio.sleep(0.3)
                assert not _exists(dsn, "wake-me")  # not committed: neither seen nor run
                await conn.commit()
                return time.monotonic()

        committed = asyncio.run(app())
        with Client(dsn) as client:
            for job_id in ["wake-me", "wake-0", "wake-1", "wake-2"]:
                while client.get(job_id).state is not JobState.COMPLETED:
                    assert time.monotonic() - committed < PROMPT_S, node.stderr()
                    time.sleep(0.02)
        assert time.monotonic() - committed < PROMPT_S < POLL_MS / 1000
        assert node.close() == 0
    finally:
        node.proc.kill()


def test_connections_that_cannot_hold_the_job_are_refused(dsn: str, tmp_path: Path) -> None:
    async def app() -> None:
        async with await _connect() as conn:
            # The synchronous Client cannot await an AsyncConnection.
            with Client(dsn) as sync, pytest.raises(WrongConnection) as err:
                sync.schedule("t", connection=conn)
            assert err.value.code == 12
            assert err.value.text == (
                "connection: is a psycopg.AsyncConnection, which this synchronous Client "
                "cannot use: pass it to jobsched.AsyncClient, or give a psycopg.Connection"
            )
            with Client(tmp_path / "sync.db") as sync, pytest.raises(WrongConnection) as err:
                sync.schedule("t", connection=conn)
            assert err.value.text.endswith(
                "sync.db: it takes a sqlite3.Connection, not psycopg.AsyncConnection (AsyncClient "
                "takes a psycopg.AsyncConnection for a postgresql:// target only; aiosqlite "
                "connections are not supported)"
            )
            with Client("http://127.0.0.1:9") as sync, pytest.raises(WrongConnection) as err:
                sync.schedule("t", connection=conn)
            assert err.value.text.endswith("use jobsched.AsyncClient with a postgresql:// target")
            # A SQLite target takes a sqlite3.Connection only.
            async with AsyncClient(tmp_path / "jobs.db") as lite:
                with pytest.raises(WrongConnection) as err:
                    await lite.schedule("t", connection=conn)
                assert err.value.code == 12
                assert "takes a sqlite3.Connection" in err.value.text
                assert "not psycopg.AsyncConnection" in err.value.text
                assert "aiosqlite connections are not supported" in err.value.text
                assert (await lite.stats()).total == 0
            # A service cannot join a transaction (refused before any request).
            async with AsyncClient("http://127.0.0.1:9") as http:
                with pytest.raises(WrongConnection, match="over HTTP, which cannot write") as err:
                    await http.schedule_many([{"task": "t"}], connection=conn)
                assert err.value.text.endswith("use a postgresql:// target")
            await conn.rollback()

        async with AsyncClient(dsn) as client:
            async with await _connect(autocommit=True) as auto:
                with pytest.raises(Malformed, match=r"^connection: has no transaction open"):
                    await client.schedule("t", connection=auto)
            other_db = base_dsn().rsplit("/", 1)[0] + "/postgres"
            async with await psycopg.AsyncConnection.connect(other_db) as other:
                with pytest.raises(Malformed) as bad:
                    await client.schedule("t", connection=other)
                assert (
                    bad.value.text
                    == "connection: is to database 'postgres', not to the store's 'test'"
                )
            async with await _connect() as failed:
                with pytest.raises(psycopg.errors.DivisionByZero):
                    await failed.execute("SELECT 1 / 0")
                with pytest.raises(Malformed, match="its transaction has failed"):
                    await client.schedule("t", connection=failed)
            assert (await client.stats()).total == 0

    asyncio.run(app())


def test_a_sqlite_target_still_takes_a_sqlite_connection(tmp_path: Path) -> None:
    # The AsyncConnection path leaves the other connection= uses as they were.
    path = tmp_path / "jobs.db"

    async def app() -> None:
        async with AsyncClient(path) as client:
            conn = sqlite3.connect(path, check_same_thread=False)
            try:
                await client.schedule("t", run_at=LATER, job_id="lite", connection=conn)
                conn.commit()
            finally:
                conn.close()
            assert (await client.get("lite")).state is JobState.SCHEDULED

    asyncio.run(app())


def test_the_documented_example_passes_mypy_strict(tmp_path: Path) -> None:
    # The AsyncConnection example of docs/client.md, as written there.
    text = (ROOT / "docs" / "client.md").read_text()
    section = text[text.index("### `connection=` with a `psycopg.AsyncConnection`") :]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    assert "connection=conn" in code and "AsyncConnection" in code
    example = tmp_path / "async_tx_example.py"
    example.write_text(code)
    assert_mypy_strict(example)
