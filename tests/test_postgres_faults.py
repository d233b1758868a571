"""The database goes away under running nodes: requests answer error 11 and
change nothing, the node reconnects and carries on, and no job is lost or run
twice. Sessions are ended with pg_terminate_backend (what a server restart or
a failover does to them), which spares the other users of the test server."""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from collections.abc import Iterator

import pytest

from tests.backend_postgres import admin, base_dsn, fresh_schema, with_schema
from tests.harness import T0, NodeProcess
from tests.test_postgres_nodes import execute_everywhere_raw, schedule_all

MINUTE = 60_000


@pytest.fixture
def schema() -> Iterator[str]:
    with fresh_schema() as name:
        yield name


def node_dsn(schema: str) -> str:
    # application_name marks this test's sessions, so that only they are ended.
    return with_schema(base_dsn(), schema) + f"&application_name=js_{schema}"


def terminate(schema: str, *, wait: bool = False) -> int:
    """End this test's sessions. pg_terminate_backend only signals the backend;
    with wait, return once the sessions are gone, so that the node's next
    request meets a dead session rather than racing the signal."""
    with admin() as db:
        rows = db.execute(
            "SELECT pid FROM pg_stat_activity WHERE application_name = %s",
            (f"js_{schema}",),
        ).fetchall()
        pids = [pid for (pid,) in rows]
        for pid in pids:
            db.execute("SELECT pg_terminate_backend(%s)", (pid,))
        deadline = time.monotonic() + 10
        while wait and pids and time.monotonic() < deadline:
            (alive,) = db.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE pid = ANY(%s)", (pids,)
            ).fetchone()
            if alive == 0:
                break
            time.sleep(0.01)
    return len(pids)


def test_a_node_answers_11_when_its_session_dies_then_carries_on(schema: str) -> None:
    node = NodeProcess("--db", node_dsn(schema))
    try:
        ok = node.send({"type": "schedule_job", "msg_id": 1, "task": "a", "job_id": "a"})
        assert ok["type"] == "job_scheduled"
        # The node does its first housekeeping (rescue, retention) after that
        # reply; had it met the dead session, it would have reconnected before
        # msg 2. A second batch's reply comes after that housekeeping, and the
        # next is not due for seconds, so the session dies with the node idle.
        assert node.send({"type": "stats", "msg_id": 10})["type"] == "stats"
        assert terminate(schema, wait=True) >= 1
        lost = node.send({"type": "schedule_job", "msg_id": 2, "task": "b", "job_id": "b"})
        assert (lost["type"], lost["code"]) == ("error", 11), lost
        again = node.send({"type": "schedule_job", "msg_id": 3, "task": "b", "job_id": "b"})
        assert again["type"] == "job_scheduled", again
        stats = node.send({"type": "stats", "msg_id": 4})
        assert stats["total"] == 2
        assert terminate(schema, wait=True) >= 1
        read = node.send({"type": "get_job", "msg_id": 5, "job_id": "a"})
        assert (read["type"], read["code"]) == ("error", 11)
        assert node.send({"type": "get_job", "msg_id": 6, "job_id": "a"})["type"] == "job_info"
    finally:
        assert node.close() == 0


def _killer(schema: str, stop: threading.Event, kills: list[int]) -> None:
    rng = random.Random(3)
    while not stop.is_set():
        kills.append(terminate(schema))
        stop.wait(rng.uniform(0.02, 0.2))


def test_execute_jobs_on_three_nodes_while_sessions_are_killed(schema: str) -> None:
    """Every acknowledged run is in one list only; every job runs exactly once
    as the database records it, however many batches were cut off."""
    dsn = node_dsn(schema)
    rng = random.Random(11)
    delays = [rng.randrange(60 * MINUTE) for _ in range(1500)]
    ids = schedule_all(dsn, [{"task": "t", "delay_ms": d} for d in delays])
    # Quiet logs: the harness never drains stderr, and hundreds of connection
    # errors would fill the pipe and block the nodes.
    quiet = ("--log-level", "CRITICAL")
    nodes = [NodeProcess("--db", dsn, "--node-id", f"n{i}", *quiet) for i in range(3)]
    for node in nodes:  # started before the faults begin
        assert node.send({"type": "stats", "msg_id": 0})["type"] == "stats"
    acked: Counter[str] = Counter()
    texts: list[str] = []
    errors: Counter[int] = Counter()
    stop, kills = threading.Event(), list[int]()
    killer = threading.Thread(target=_killer, args=(schema, stop, kills))
    killer.start()
    try:
        for msg_id in range(1, 400):  # a minute of logical time per round, then catch-up rounds
            now = T0 + min(msg_id, 60) * MINUTE
            for reply in execute_everywhere_raw(nodes, now, msg_id):
                if reply["type"] == "error":
                    errors[reply["code"]] += 1
                    texts.append(reply["text"])
                else:
                    acked.update(reply["jobs"])
            if msg_id >= 60 and _left(schema) == 0:
                break
    finally:
        stop.set()
        killer.join()
        codes = [node.close() for node in nodes]
    assert codes == [0, 0, 0]  # no node crashed
    assert set(errors) <= {11}
    assert sum(kills) > 0 and errors[11] > 0  # the faults did hit requests
    twice = [j for j, n in acked.items() if n > 1]
    assert twice == []
    with admin() as db:
        runs = dict(
            db.execute(f'SELECT job_id, count(*) FROM "{schema}".runs GROUP BY job_id').fetchall()
        )
        states = db.execute(
            f'SELECT state, runs, count(*) FROM "{schema}".jobs GROUP BY state, runs'
        ).fetchall()
    assert states == [("completed", 1, len(ids))]
    assert runs == dict.fromkeys(ids, 1)  # one committed run per job: none lost, none doubled
    # Every acknowledged job is in a list: a COMMIT whose answer was cut off
    # is looked up (pg_xact_status), so no batch that did commit answers 11.
    assert set(acked) == set(ids)
    print(f"kills={sum(kills)} errors={errors[11]}", Counter(t[:100] for t in texts))


def _left(schema: str) -> int:
    with admin() as db:
        row = db.execute(f"SELECT count(*) FROM \"{schema}\".jobs WHERE state <> 'completed'")
        found = row.fetchone()
    assert found is not None
    return int(found[0])
