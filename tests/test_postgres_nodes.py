"""Several real ``main.py --db postgresql://...`` processes on one database.

``execute_jobs`` sent to every node at the same instant splits the due jobs
between them: the union of their ``jobs`` lists is exactly the due set and no
job is in two lists; each occurrence of a recurring job runs once across the
cluster. Each test has its own schema.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from tests.backend_postgres import admin, base_dsn, fresh_schema, with_schema
from tests.harness import T0, NodeProcess, run_lines

NODES = 3
ONE_TIME = 1500
RECURRING = 150
MINUTE = 60_000


@pytest.fixture
def schema() -> Iterator[str]:
    with fresh_schema() as name:
        yield name


def request(msg_id: int, body: dict[str, Any]) -> str:
    return json.dumps({"src": "c", "dest": "s", "body": {"msg_id": msg_id, **body}})


def schedule_all(dsn: str, bodies: list[dict[str, Any]]) -> list[str]:
    """Schedule through one pipelined node; return the job ids in order."""
    lines = [
        request(i, {"type": "schedule_job", **b, "current_time": T0}) for i, b in enumerate(bodies)
    ]
    out, err, code = run_lines(lines, "--db", dsn, timeout=120)
    assert code == 0, err
    replies = [json.loads(line)["body"] for line in out]
    assert all(r["type"] == "job_scheduled" for r in replies), replies[:3]
    return [str(r["job_id"]) for r in replies]


def execute_everywhere_raw(nodes: list[NodeProcess], now: int, msg_id: int) -> list[Any]:
    """Send execute_jobs to every node before reading any reply; the reply bodies."""
    line = request(msg_id, {"type": "execute_jobs", "current_time": now}).encode() + b"\n"
    for node in nodes:
        assert node.proc.stdin is not None
        node.proc.stdin.write(line)
        node.proc.stdin.flush()
    replies = []
    for node in nodes:
        assert node.proc.stdout is not None
        out = node.proc.stdout.readline()
        assert out, f"a node stopped: {node.stderr()}"
        reply = json.loads(out)["body"]
        assert reply["in_reply_to"] == msg_id
        replies.append(reply)
    return replies


def execute_everywhere(nodes: list[NodeProcess], now: int, msg_id: int) -> list[list[str]]:
    """The jobs lists of execute_jobs sent to every node at once."""
    lists = []
    for reply in execute_everywhere_raw(nodes, now, msg_id):
        assert reply["type"] == "jobs_executed", reply
        assert reply["count"] == len(reply["jobs"])
        lists.append([str(j) for j in reply["jobs"]])
    return lists


def start_nodes(dsn: str) -> list[NodeProcess]:
    nodes = [NodeProcess("--db", dsn, "--node-id", f"n{i}") for i in range(NODES)]
    for node in nodes:  # connected and migrated before the race starts
        assert node.send({"type": "stats", "msg_id": 0})["type"] == "stats"
    return nodes


def assert_split(lists: list[list[str]], due: set[str]) -> Counter[str]:
    seen = Counter(j for one in lists for j in one)
    twice = sorted(j for j, n in seen.items() if n > 1)
    assert twice == [], f"{len(twice)} jobs ran on two nodes, e.g. {twice[:5]}"
    assert set(seen) == due
    return seen


def test_execute_jobs_on_several_nodes_at_once_runs_each_due_job_once(schema: str) -> None:
    dsn = with_schema(base_dsn(), schema)
    rng = random.Random(7)
    delays = [rng.randrange(0, 20 * MINUTE) for _ in range(ONE_TIME)]
    ids = schedule_all(dsn, [{"task": "once", "delay_ms": d} for d in delays])
    nodes = start_nodes(dsn)
    try:
        seen: Counter[str] = Counter()
        for round_no, at in enumerate((5, 10, 15, 20), start=1):
            now = T0 + at * MINUTE
            due = {i for i, d in zip(ids, delays, strict=True) if d <= at * MINUTE} - set(seen)
            lists = execute_everywhere(nodes, now, round_no)
            seen.update(assert_split(lists, due))
        assert set(seen) == set(ids)
    finally:
        for node in nodes:
            assert node.close() == 0
    with admin() as db:
        rows = db.execute(
            f'SELECT state, runs, count(*) FROM "{schema}".jobs GROUP BY state, runs'
        ).fetchall()
    assert rows == [("completed", 1, ONE_TIME)]


def test_each_occurrence_of_a_recurring_job_runs_once_across_the_cluster(schema: str) -> None:
    dsn = with_schema(base_dsn(), schema)
    bodies = [{"task": "every-minute", "interval_ms": MINUTE} for _ in range(RECURRING)]
    bodies += [{"task": "hourly", "cron": "0 * * * *"} for _ in range(RECURRING)]
    ids = schedule_all(dsn, bodies)
    nodes = start_nodes(dsn)
    rounds = [T0 + MINUTE, T0 + MINUTE + 1, T0 + 3 * MINUTE, T0 + 61 * MINUTE]
    per_round = []
    try:
        for msg_id, now in enumerate(rounds, start=1):
            lists = execute_everywhere(nodes, now, msg_id)
            due = set(ids[:RECURRING]) if now != T0 + MINUTE + 1 else set()
            if now == T0 + 61 * MINUTE:
                due |= set(ids[RECURRING:])
            assert_split(lists, due)
            per_round.append([len(one) for one in lists])
    finally:
        for node in nodes:
            assert node.close() == 0
    with admin() as db:
        runs = dict(db.execute(f'SELECT job_id, runs FROM "{schema}".jobs').fetchall())
        states = {s for (s,) in db.execute(f'SELECT DISTINCT state FROM "{schema}".jobs')}
    assert states == {"scheduled"}
    assert [runs[i] for i in ids[:RECURRING]] == [3] * RECURRING
    assert [runs[i] for i in ids[RECURRING:]] == [1] * RECURRING
    assert all(sum(r) > 0 for r in per_round[::2]), per_round
