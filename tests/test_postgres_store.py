"""What the PostgreSQL store adds to the contract: non-blocking claims across
nodes, wake-ups, the database clock, heartbeats, and faults answered as
error 11 with nothing changed. Real server, one fresh schema per test."""

from __future__ import annotations

import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest

from jobsched.errors import Unavailable
from jobsched.jobs import ONCE, Job, JobState
from jobsched.stores.base import ClusterClock, Membership, RunRecord, WakeupListener
from jobsched.stores.postgres import PostgresStore
from tests.backend_postgres import admin, base_dsn, fresh_schema, with_schema

S = JobState
T0 = 1_705_309_200_000
Open = Callable[[], PostgresStore]


def job(job_id: str, due: int | None = T0, state: JobState = S.SCHEDULED) -> Job:
    return Job(
        job_id=job_id,
        task="t",
        payload_json="{}",
        schedule=ONCE,
        state=state,
        due_at=due,
        created_at=T0,
        updated_at=T0,
    )


@pytest.fixture
def open_store() -> Iterator[Open]:
    opened: list[PostgresStore] = []
    with fresh_schema() as schema:

        def factory() -> PostgresStore:
            store = PostgresStore(with_schema(base_dsn(), schema))
            opened.append(store)
            return store

        try:
            yield factory
        finally:
            for store in opened:
                store.close()


def kill_connections(store: PostgresStore) -> int:
    """Terminate the server sessions of the store's connections, as a crash
    or an admin would; returns how many."""
    pids = [c.pg.info.backend_pid for c in store._pool._all if c.pg is not None]
    with admin() as db:
        for pid in pids:
            db.execute("SELECT pg_terminate_backend(%s)", (pid,))
    return len(pids)


def test_it_declares_every_optional_capability(open_store: Open) -> None:
    # The conformance suite checks each capability on the stores that declare it.
    store = open_store()
    assert isinstance(store, ClusterClock)
    assert isinstance(store, WakeupListener)
    assert isinstance(store, Membership)


# -- claims across nodes ------------------------------------------------------


def test_a_claim_skips_rows_another_node_holds_without_waiting(open_store: Open) -> None:
    a, b = open_store(), open_store()
    for i in range(10):
        a.insert(job(f"j{i}", due=T0 + i))
    with a.transaction():
        first = a.claim_due(T0 + 100, 4, "a", T0 + 1000)
        started = time.monotonic()
        second = b.claim_due(T0 + 100, 100, "b", T0 + 1000)
        assert time.monotonic() - started < 2  # SKIP LOCKED: no waiting on a's locks
    assert [j.job_id for j in first] == ["j0", "j1", "j2", "j3"]
    assert [j.job_id for j in second] == [f"j{i}" for i in range(4, 10)]
    assert all(j.locked_by == "b" for j in second)


def test_a_rolled_back_claim_leaves_the_jobs_to_the_next_node(open_store: Open) -> None:
    a, b = open_store(), open_store()
    a.insert(job("x"))
    with pytest.raises(RuntimeError), a.transaction():
        assert len(a.claim_due(T0, 10, "a", T0 + 10)) == 1
        raise RuntimeError("node crashed before commit")
    [got] = b.claim_due(T0, 10, "b", T0 + 10)
    assert (got.job_id, got.locked_by) == ("x", "b")


# -- wake-ups -----------------------------------------------------------------


def test_a_job_due_sooner_wakes_a_sleeping_listener(open_store: Open) -> None:
    sleeper, writer = open_store(), open_store()
    writer.insert(job("late", due=T0 + 60_000))
    assert not sleeper.wait_for_wakeup(0)  # starts listening; nothing pending
    woke: list[bool] = []
    t = threading.Thread(target=lambda: woke.append(sleeper.wait_for_wakeup(30)))
    t.start()
    time.sleep(0.05)
    writer.insert(job("soon", due=T0 + 5))
    t.join(30)
    assert woke == [True]
    assert sleeper._listener.last_due == T0 + 5


def test_a_job_due_later_than_another_does_not_wake(open_store: Open) -> None:
    sleeper, writer = open_store(), open_store()
    writer.insert(job("first", due=T0))
    assert not sleeper.wait_for_wakeup(0)
    writer.insert(job("later", due=T0 + 1))
    writer.insert(job("paused", due=T0 - 9, state=S.PAUSED))
    assert not sleeper.wait_for_wakeup(0.2)


def test_wake_ups_come_at_commit_and_not_after_a_rollback(open_store: Open) -> None:
    sleeper, writer = open_store(), open_store()
    assert not sleeper.wait_for_wakeup(0)
    with pytest.raises(RuntimeError), writer.transaction():
        writer.insert(job("undone"))
        raise RuntimeError
    assert not sleeper.wait_for_wakeup(0.2)
    with writer.transaction():
        for i in range(50):
            writer.insert(job(f"j{i}", due=T0 + i))
        assert not sleeper.wait_for_wakeup(0.1)  # not before the commit
    assert sleeper.wait_for_wakeup(5)
    assert sleeper._listener.last_due == T0


def test_wake_ends_a_wait_from_another_thread(open_store: Open) -> None:
    store = open_store()
    threading.Timer(0.1, store.wake).start()
    started = time.monotonic()
    assert store.wait_for_wakeup(30)
    assert time.monotonic() - started < 10


# -- clock and membership -----------------------------------------------------


def test_db_now_is_the_database_clock(open_store: Open) -> None:
    store = open_store()
    with admin() as db:
        row = db.execute("SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint").fetchone()
    assert row is not None
    assert abs(store.db_now() - int(row[0])) < 1000  # same machine: the same clock
    a, b = store.db_now(), store.db_now()
    assert b >= a


def test_heartbeats_list_recent_nodes_and_the_jobs_they_hold(open_store: Open) -> None:
    store = open_store()
    for i in range(5):
        store.insert(job(f"j{i}"))
    store.claim_due(T0, 3, "node-a", T0 + 10)
    store.claim_due(T0, 1, "node-b", T0 + 10)
    store.heartbeat("node-a", 1_000)
    store.heartbeat("node-b", 1_500)
    store.heartbeat("node-old", 10)
    store.heartbeat("node-a", 2_000)
    assert store.nodes_seen(1_000) == [("node-a", 2_000, 3), ("node-b", 1_500, 1)]


# -- faults -------------------------------------------------------------------


def test_a_killed_connection_answers_unavailable_once_then_reconnects(open_store: Open) -> None:
    store = open_store()
    store.insert(job("a"))
    assert kill_connections(store) == 1
    with pytest.raises(Unavailable):
        store.get("a")
    got = store.get("a")  # the next call reconnects
    assert got is not None and got.job_id == "a"


def test_a_connection_killed_inside_a_transaction_saves_nothing(open_store: Open) -> None:
    store, other = open_store(), open_store()
    store.insert(job("kept"))
    outcomes: list[str] = []
    with pytest.raises(Unavailable), store.transaction():
        store.insert(job("lost-1"))
        store.claim_due(T0, 10, "me", T0 + 5)
        kill_connections(store)
        for name in ("lost-2", "lost-3"):  # each later call in the block answers 11
            try:
                store.insert(job(name))
            except Unavailable:
                outcomes.append(name)
        with store.transaction():  # an inner block in a doomed transaction is harmless
            pass
    assert outcomes == ["lost-2", "lost-3"]
    assert [j.job_id for j in other.iter_all()] == ["kept"]
    kept = other.get("kept")
    assert kept is not None and kept.state is S.SCHEDULED
    store.insert(job("after"))  # and the store carries on
    assert [j.job_id for j in other.iter_all()] == ["kept", "after"]


@pytest.mark.parametrize("first", ["insert", "insert_many", "savepoint", "finish_runs", "cursor"])
def test_a_transaction_s_begin_goes_with_its_first_statement_whatever_it_is(
    open_store: Open, first: str
) -> None:
    """BEGIN is sent with a block's first statement (one round trip): a block
    that starts with a COPY, a savepoint or a pipeline is still one transaction."""
    store, other = open_store(), open_store()
    store.insert(job("held"))
    [held] = store.claim_due(T0, 1, "me", T0 + 5)
    done = held.evolve(state=S.COMPLETED, due_at=None, locked_by=None)
    with pytest.raises(RuntimeError), store.transaction():
        if first == "insert":
            store.insert(job("a"))
        elif first == "insert_many":
            store.insert_many([job("a"), job("b")])
        elif first == "savepoint":
            with store.transaction():
                store.insert(job("a"))
        elif first == "finish_runs":
            assert store.finish_runs([(done, S.RUNNING, "me")], [run_of("held")]) == [True]
        else:  # a cursor of the store's own connection, as COPY and executemany use
            with store._pool.use() as pg, pg.cursor() as cur:
                cur.execute(
                    "INSERT INTO runs (job_id, started_at, finished_at, outcome, recorded_ms) "
                    "VALUES ('held', 0, 0, 'succeeded', 0)"
                )
        store.insert(job("c"))
        assert other.get("c") is None  # not committed yet
        raise RuntimeError("undo it all")
    assert [j.job_id for j in other.iter_all()] == ["held"]
    assert other.get("held") == held and other.recent_runs("held") == []
    with store.transaction():
        pass  # a block with no statement sends none
    with store.transaction():
        store.insert(job("d"))
    assert [j.job_id for j in other.iter_all()] == ["held", "d"]


def run_of(job_id: str) -> RunRecord:
    return RunRecord(job_id, T0, T0 + 1, "succeeded", None, "me")


def test_a_connection_killed_before_a_transaction_s_first_statement_saves_nothing(
    open_store: Open,
) -> None:
    store, other = open_store(), open_store()
    store.insert(job("kept"))
    with pytest.raises(Unavailable), store.transaction():
        kill_connections(store)  # the BEGIN has not been sent yet
        with pytest.raises(Unavailable):
            store.insert(job("lost"))
        with pytest.raises(Unavailable):
            store.insert(job("lost-too"))
    assert [j.job_id for j in other.iter_all()] == ["kept"]
    store.insert(job("after"))
    assert [j.job_id for j in other.iter_all()] == ["kept", "after"]


def test_an_unreachable_server_answers_unavailable_quickly_with_backoff(
    open_store: Open,
) -> None:
    store = open_store()
    store._pool.conninfo = store._pool.conninfo.replace("port=5432", "port=1")
    kill_connections(store)
    with pytest.raises(Unavailable):
        store.get("x")  # the killed connection
    started = time.monotonic()
    messages = []
    for _ in range(50):
        with pytest.raises(Unavailable) as info:
            store.get("x")
        messages.append(info.value.text)
    assert time.monotonic() - started < 5  # backoff: no connect storm, no long waits
    assert any("next attempt in" in m for m in messages)
    with pytest.raises(Unavailable), store.transaction():  # a block: 11 inside and at its end
        store.insert(job("y"))
    assert not store.wait_for_wakeup(0.05)  # the listener just times out
    store._pool.conninfo = store._pool.conninfo.replace("port=1", "port=5432")
    store._pool._retry_at = 0.0
    assert store.get("x") is None


def test_stats_and_metrics_list_the_nodes_seen_and_the_jobs_they_hold(tmp_path: Path) -> None:
    from jobsched.server import render_nodes
    from tests.backend_postgres import database
    from tests.harness import T0, Clock, Wire

    with database(tmp_path) as factory:
        store = factory()
        w = Wire(store, Clock(T0))
        jid = w.ok({"type": "schedule_job", "task": "a"}, "job_scheduled")["job_id"]
        assert isinstance(store, Membership)
        store.heartbeat("node-a", T0)
        store.heartbeat("node-b", T0 - 120_000)  # gone a while
        store.claim_due(T0, 10, "node-a", T0 + 30_000)
        # A logical current_time far away does not hide live nodes.
        assert (
            len(w.ok({"type": "stats", "current_time": "2030-01-01T00:00:00Z"}, "stats")["nodes"])
            == 1
        )
        stats = w.ok({"type": "stats"}, "stats")
        assert stats["nodes"] == [
            {"node_id": "node-a", "last_seen": "2024-01-15T09:00:00.000Z", "jobs_held": 1}
        ]
        assert stats["jobs"]["running"] == 1 and jid
        rows = w.ctx.engine.nodes(T0)
        assert rows is not None
        text = render_nodes(rows)
        assert "jobsched_nodes 1" in text and 'jobsched_node_jobs_held{node="node-a"} 1' in text


def test_the_earliest_due_time_is_read_from_the_index_not_every_job(open_store: Open) -> None:
    """next_due and the NOTIFY of every commit that schedules read the
    earliest due time: a read of every runnable job made each a scan (35 ms
    at 200,000 jobs, Client.schedule 24/s). Its plan must probe the index."""
    from jobsched.stores.postgres_sql import MIN_DUE, MIN_DUE_AFTER, NOTIFY_SQL, notify_args

    store = open_store()
    store.insert_many([job(f"j{i}", due=T0 + i) for i in range(5000)])
    store.insert(job("early", due=T0 - 1))
    assert store.next_due() == T0 - 1
    assert store.next_due(after=T0 - 1) == T0
    reads = [
        (f"SELECT {MIN_DUE}", ()),
        (f"SELECT {MIN_DUE_AFTER}", (T0,)),
        (NOTIFY_SQL, notify_args("ch", T0, "default")),
    ]
    with admin() as db:
        db.execute(f"SET search_path = {store._pool.schema}")
        db.execute("ANALYZE jobs")
        for sql, args in reads:
            plan = "\n".join(str(r[0]) for r in db.execute(f"EXPLAIN {sql}", args))
            assert "Seq Scan" not in plan and "jobs_due" in plan, plan


def test_a_claim_reads_the_due_index_in_order_without_statistics(open_store: Open) -> None:
    """Without statistics (autovacuum off, or a burst before it runs) the
    planner read every due job of ``priority IN (...)`` and sorted them: 5 ms
    a claim at 10,000 due. The claim must walk the due index per priority."""
    from jobsched.stores import postgres_sql as q

    store = open_store()
    store.insert_many([job(f"j{i}", due=T0 + i % 100) for i in range(3000)])
    args = (T0 + 1000, 8, 8, "me", T0 + 60_000, T0)
    with admin() as db:
        db.execute(f"SET search_path = {store._pool.schema}")
        row = db.execute(
            "SELECT last_analyze, last_autoanalyze FROM pg_stat_user_tables "
            "WHERE relname = 'jobs' AND schemaname = current_schema()"
        ).fetchone()
        assert row == (None, None)  # the case under test: no statistics
        plan = "\n".join(str(r[0]) for r in db.execute(f"EXPLAIN {q.CLAIM[True]}", args))
    assert "Bitmap" not in plan and "Index Scan using jobs_due" in plan, plan
    assert [j.job_id for j in store.claim_due(T0 + 1000, 3, "me", T0 + 60_000)] == [
        "j0",
        "j100",
        "j200",
    ]


def _rows_filtered_out(plan: object) -> int:
    """The rows every node of an EXPLAIN (FORMAT JSON) plan read and threw away."""
    if isinstance(plan, list):
        return sum(_rows_filtered_out(p) for p in plan)
    if not isinstance(plan, dict):
        return 0
    own = int(plan.get("Rows Removed by Filter", 0))
    return own + sum(_rows_filtered_out(v) for v in plan.values() if isinstance(v, list | dict))


@pytest.mark.parametrize("analyzed", [False, True])
def test_a_claim_behind_held_queues_does_not_read_their_backlog(
    open_store: Open, analyzed: bool
) -> None:
    """A paused queue, or a full one, holds its due jobs back; a claim took the
    other queues' jobs by walking the due index and filtering the held ones
    out: every claim read the whole held backlog (26 ms a claim at 100,000).
    It must read the other queues' jobs per (queue, priority), with or
    without statistics (the planner then sees one queue holding most jobs)."""
    from jobsched.queues import QueueChange, QueueSettings
    from jobsched.stores.postgres_claim import claim_sql

    def queued(job_id: str, queue: str, priority: int = 0) -> Job:
        j = job(job_id, due=T0)
        j.queue, j.priority = queue, priority
        return j

    store = open_store()
    store.insert_many([queued(f"h{i}", "held", i % 3) for i in range(1500)])
    store.insert_many([queued(f"f{i}", "full", i % 3) for i in range(1500)])
    store.insert_many([queued(f"d{i}", "default", i % 2) for i in range(4)])
    store.configure_queue("held", QueueChange(paused=True))
    store.configure_queue("full", QueueChange(concurrency=1))
    assert [j.job_id for j in store.claim_due(T0, 1, "me", T0 + 60_000, frozenset({"full"}))]
    rules = [
        QueueSettings("full", 1, None, None, False),
        QueueSettings("held", None, None, None, True),
    ]
    built = claim_sql(T0 + 1000, 3, ("me", T0 + 60_000, T0), rules, None, True)
    assert built is not None
    sql, args = built
    with admin() as db:
        db.execute(f"SET search_path = {store._pool.schema}")
        if analyzed:
            db.execute("ANALYZE jobs")
        db.execute("BEGIN")  # EXPLAIN ANALYZE runs the claim: rolled back after
        row = db.execute(
            f"EXPLAIN (ANALYZE, FORMAT JSON) {sql} SELECT job_id FROM took", args
        ).fetchone()
        db.execute("ROLLBACK")
    assert row is not None
    assert _rows_filtered_out(row[0]) < 50, row[0]
    taken = store.claim_due(T0 + 1000, 3, "me", T0 + 60_000)
    assert sorted(j.job_id for j in taken) == ["d0", "d1", "d2"]


@pytest.mark.parametrize("analyzed", [False, True])
def test_a_notify_does_not_read_the_jobs_already_due(open_store: Open, analyzed: bool) -> None:
    """The NOTIFY sent before a commit reads the earliest job due in the
    future. Its bound was the database's clock_timestamp(), volatile, so it
    was a filter on the due index, not a bound of it: every NOTIFY read every
    job already due (0.9 ms at 3,000; every freed slot of a capped queue sends
    one). It must start its scan at the clock, with or without statistics."""
    from jobsched.stores.postgres_sql import NOTIFY_SQL, notify_args

    store = open_store()
    store.insert_many([job(f"p{i}", due=T0 + i) for i in range(1500)])
    store.insert_many([job(f"f{i}", due=T0 + 10**12 + i) for i in range(3)])
    with admin() as db:
        db.execute(f"SET search_path = {store._pool.schema}")
        if analyzed:
            db.execute("ANALYZE jobs")
        args = notify_args("jobsched_test_notify_plan", 0, "default")
        row = db.execute(f"EXPLAIN (ANALYZE, FORMAT JSON) {NOTIFY_SQL}", args).fetchone()
    assert row is not None
    assert _rows_filtered_out(row[0]) < 50, row[0]


def _one_slot_queue(store: PostgresStore) -> None:
    """Queue "bench" with a concurrency of 1 and jobs b0, b1, b2 due in that order."""
    from jobsched.queues import QueueChange

    for i in range(3):
        j = job(f"b{i}", due=T0 + i)
        j.queue = "bench"
        store.insert(j)
    store.configure_queue("bench", QueueChange(concurrency=1))


def _end(store: PostgresStore, job_id: str) -> None:
    """The run of ``job_id`` (claimed by "me") ends: completed, its slot free."""
    running = store.get(job_id)
    assert running is not None
    assert store.replace(running.evolve(state=S.COMPLETED, locked_by=None), S.RUNNING, "me")


def test_a_claim_after_an_empty_one_on_a_full_queue_locks_nothing(open_store: Open) -> None:
    """A limited claim locks the queue's settings row until its COMMIT is
    flushed, holding every other node's claim. A node whose last claim took
    nothing looks first, without a lock: while the queue stays full its claims
    lock and write nothing (no transaction id is assigned); once a slot is
    free it claims as before."""
    store = open_store()
    _one_slot_queue(store)
    lease = ("me", T0 + 60_000)
    assert [j.job_id for j in store.claim_due(T0 + 10, 5, *lease)] == ["b0"]
    assert store.claim_due(T0 + 10, 5, *lease) == []  # full: locked, took nothing
    conn = store._pool._state()
    assert store.claim_due(T0 + 10, 5, *lease) == []  # looked: nothing locked
    assert conn.xid is None
    _end(store, "b0")
    assert [j.job_id for j in store.claim_due(T0 + 10, 5, *lease)] == ["b1"]
    assert conn.xid is not None


def test_a_claim_guessed_from_settings_seen_before_is_made_again_when_they_changed(
    open_store: Open,
) -> None:
    """A limited claim sends the settings' lock and the claim built from the
    settings it saw last together (one round trip, not two). When another
    node changed them meanwhile, the claim was built wrong (here: a queue
    newly limited to 1 would be read as unlimited): it is undone and made
    again from the settings read."""
    from jobsched.queues import QueueChange

    def queued(job_id: str, queue: str, due: int) -> Job:
        j = job(job_id, due=due)
        j.queue = queue
        return j

    store, other_node = open_store(), open_store()
    store.insert_many([queued(f"b{i}", "bench", T0) for i in range(3)])
    store.insert_many([queued(f"o{i}", "other", T0 + 1 + i) for i in range(5)])
    store.configure_queue("bench", QueueChange(concurrency=1))
    lease = ("me", T0 + 60_000)
    taken = store.claim_due(T0 + 10, 2, *lease)
    assert [j.job_id for j in taken] == ["b0", "o0"]
    other_node.configure_queue("other", QueueChange(concurrency=1))
    assert store.claim_due(T0 + 10, 5, *lease) == []  # both queues are full
    assert sorted(j.job_id for j in store.list_jobs(S.RUNNING, None, None, 10)) == ["b0", "o0"]

    _end(store, "b0")
    assert [j.job_id for j in store.claim_due(T0 + 10, 5, *lease)] == ["b1"]
    _end(store, "b1")
    claimed: list[Job] = []
    trips = _round_trips(store, lambda: claimed.extend(store.claim_due(T0 + 10, 5, *lease)))
    assert [j.job_id for j in claimed] == ["b2"]
    assert trips == 2  # BEGIN, the lock and the claim; the COMMIT


def test_a_slot_freed_and_taken_again_in_one_transaction_wakes_no_one(open_store: Open) -> None:
    """A capped queue's freed slot wakes the nodes sleeping on it (NOTIFY), but
    a node that ends its runs and takes the slots again in one transaction
    leaves the queue full: every such round woke the other nodes for a look
    that found nothing. The NOTIFY is sent when a slot is still free at commit."""
    store = open_store()
    _one_slot_queue(store)
    lease = ("me", T0 + 60_000)
    assert [j.job_id for j in store.claim_due(T0 + 10, 5, *lease)] == ["b0"]

    with admin() as listen:
        listen.execute(f'LISTEN "{store._pool.channel}"')

        def told() -> list[str]:
            return [n.payload for n in listen.notifies(timeout=0.3, stop_after=1)]

        with store.transaction():
            _end(store, "b0")
            assert [j.job_id for j in store.claim_due(T0 + 10, 5, *lease)] == ["b1"]
        assert told() == []
        _end(store, "b1")  # b2 is due and the slot is free
        assert told() == ["0"]
        assert [j.job_id for j in store.claim_due(T0 + 10, 5, *lease)] == ["b2"]
        with store.transaction():  # the queue is full again, but a new job is due
            _end(store, "b2")
            store.insert(job("other", due=T0))
            assert [j.job_id for j in store.claim_due(T0 + 10, 1, *lease)] == ["other"]
            store.insert(job("later", due=T0 + 5))
        assert told() == ["0"]


def _round_trips(store: PostgresStore, work: Callable[[], None]) -> int:
    """How many times ``work`` waited for the server (Sync messages sent)."""
    pg = store._pool.local().pg
    assert pg is not None
    with tempfile.TemporaryFile("w+") as trace:
        pg.pgconn.trace(trace.fileno())
        try:
            work()
        finally:
            pg.pgconn.untrace()
        trace.seek(0)
        return sum(1 for line in trace if "\tF\t4\tSync" in line)


def test_nested_blocks_roll_back_alone_and_cost_no_round_trip(open_store: Open) -> None:
    """A nested transaction() is a savepoint: it rolls back alone. Its
    SAVEPOINT and RELEASE ride with the next statement (a SAVEPOINT was one
    round trip and its RELEASE another: a dispatcher's finish and claim in one
    transaction paid four), and a block that ran no statement sends neither."""
    store = open_store()
    store.insert(job("warm"))

    def flat() -> None:
        with store.transaction():
            store.insert(job("f1"))
            store.insert(job("f2"))

    def nested() -> None:
        with store.transaction():
            with store.transaction():
                store.insert(job("n1"))
            with store.transaction():
                with store.transaction():
                    pass  # no statement: no savepoint sent
                store.insert(job("n2"))

    assert _round_trips(store, nested) == _round_trips(store, flat)

    with store.transaction():
        store.insert(job("kept1"))
        with pytest.raises(RuntimeError), store.transaction():
            with store.transaction():
                store.insert(job("gone1"))
            store.insert(job("gone2"))
            raise RuntimeError("the inner block fails")
        with pytest.raises(RuntimeError), store.transaction():
            raise RuntimeError("before any statement")
        with pytest.raises(psycopg.errors.DivisionByZero), store.transaction():
            store.insert(job("gone3"))
            with store._pool.use() as pg:
                pg.execute("SELECT 1 / 0")  # the server aborts: back to the savepoint
        store.insert(job("kept2"))
    ids = {j.job_id for j in store.list_jobs(None, None, None, 100)}
    assert {"kept1", "kept2"} <= ids and not {"gone1", "gone2", "gone3"} & ids
