"""Queues, priorities and unique jobs through the protocol (docs/queues.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from jobsched.timefmt import format_ms
from tests.harness import T0, NodeProcess, Wire


def test_job_object_shows_queue_fields_after_locked_by() -> None:
    w = Wire()
    w.ok({"type": "schedule_job", "task": "t", "job_id": "a", "queue": "mail", "priority": 3,
          "unique_key": "u", "unique_for_ms": 60_000}, "job_scheduled")  # fmt: skip
    job = w.job("a")
    keys = list(job)
    assert keys[keys.index("locked_by") + 1 :][:4] == [
        "queue", "priority", "unique_key", "unique_for_ms"
    ]  # fmt: skip
    assert (job["queue"], job["priority"], job["unique_key"], job["unique_for_ms"]) == (
        "mail", 3, "u", 60_000
    )  # fmt: skip
    w.ok({"type": "schedule_job", "task": "t", "job_id": "b"}, "job_scheduled")
    assert (w.job("b")["queue"], w.job("b")["priority"], w.job("b")["unique_key"]) == (
        "default", 0, None
    )  # fmt: skip


def test_bad_queue_fields_answer_12() -> None:
    w = Wire()
    for bad in (
        {"queue": ""},
        {"queue": "a\nb"},
        {"priority": 10},
        {"priority": -1},
        {"priority": "1"},
        {"unique_for_ms": 5},
        {"unique_key": "k", "unique_for_ms": 0},
    ):
        w.err({"type": "schedule_job", "task": "t", **bad}, 12)
    w.err({"type": "configure_queue", "queue": "q", "concurrency": 0}, 12)
    w.err({"type": "configure_queue", "queue": "q", "rate_limit": {"max": 1}}, 12)
    w.err({"type": "configure_queue"}, 12)


def test_unique_key_returns_the_existing_job_as_a_duplicate() -> None:
    w = Wire()
    first = w.ok({"type": "schedule_job", "task": "t", "unique_key": "k"}, "job_scheduled")
    assert "duplicate" not in first
    again = w.ok({"type": "schedule_job", "task": "t", "unique_key": "k"}, "job_scheduled")
    assert again == {**first, "duplicate": True, "in_reply_to": again["in_reply_to"]}
    batch = w.ok(
        {"type": "schedule_jobs", "jobs": [
            {"task": "t", "unique_key": "k"},
            {"task": "t", "unique_key": "n"},
            {"task": "t", "unique_key": "n"},
            {"task": "t"},
        ]},
        "jobs_scheduled",
    )["jobs"]  # fmt: skip
    assert batch[0]["job_id"] == first["job_id"] and batch[0]["duplicate"] is True
    assert "duplicate" not in batch[1]
    assert batch[2]["job_id"] == batch[1]["job_id"] and batch[2]["duplicate"] is True
    assert "duplicate" not in batch[3]
    assert w.ok({"type": "stats"}, "stats")["total"] == 3


def test_unique_for_ms_blocks_a_finished_job_on_the_request_clock() -> None:
    w = Wire()
    body = {"type": "schedule_job", "task": "t", "unique_key": "k", "unique_for_ms": 60_000}
    first = w.ok({**body, "current_time": format_ms(T0)}, "job_scheduled")
    w.ok({"type": "execute_jobs", "current_time": format_ms(T0)}, "jobs_executed")
    assert w.job(first["job_id"])["state"] == "completed"
    dup = w.ok({**body, "current_time": format_ms(T0 + 59_999)}, "job_scheduled")
    assert dup["job_id"] == first["job_id"] and dup["duplicate"] is True
    new = w.ok({**body, "current_time": format_ms(T0 + 60_000)}, "job_scheduled")
    assert new["job_id"] != first["job_id"] and "duplicate" not in new


def test_execute_jobs_runs_by_priority_and_skips_paused_queues() -> None:
    w = Wire()
    at = format_ms(T0)
    for jid, prio, queue in (("low", 9, "a"), ("high", 0, "a"), ("mid", 4, "a"), ("held", 0, "p")):
        w.ok({"type": "schedule_job", "task": "t", "job_id": jid, "priority": prio,
              "queue": queue, "current_time": at}, "job_scheduled")  # fmt: skip
    got = w.ok({"type": "configure_queue", "queue": "p", "paused": True}, "queue_configured")
    assert got == {"type": "queue_configured", "in_reply_to": got["in_reply_to"], "queue": {
        "queue": "p", "concurrency": None, "rate_limit": None, "paused": True}}  # fmt: skip
    ran = w.ok({"type": "execute_jobs", "current_time": at}, "jobs_executed")
    assert ran["jobs"] == ["high", "mid", "low"]
    listed = w.ok({"type": "list_queues"}, "queues_listed")["queues"]
    by = {q["queue"]: q for q in listed}
    assert by["p"]["paused"] is True and by["p"]["jobs"]["scheduled"] == 1
    assert by["a"]["jobs"]["completed"] == 3 and by["a"]["running"] == 0
    page = w.ok({"type": "list_jobs", "queue": "p"}, "jobs_listed")["jobs"]
    assert [j["job_id"] for j in page] == ["held"]


def test_configure_queue_keeps_fields_left_out_and_clears_null_ones(tmp_path: object) -> None:
    node = NodeProcess("--db", str(tmp_path) + "/q.db")
    try:
        node.send({"type": "configure_queue", "msg_id": 1, "queue": "q", "concurrency": 2,
                   "rate_limit": {"max": 5, "per_ms": 1000}})  # fmt: skip
        got = node.send({"type": "configure_queue", "msg_id": 2, "queue": "q", "concurrency": None})
        assert got["type"] == "queue_configured" and got["queue"]["concurrency"] is None
        assert got["queue"]["rate_limit"] == {"max": 5, "per_ms": 1000}
        listed = node.send({"type": "list_queues", "msg_id": 3})["queues"]
        assert listed[0]["queue"] == "q" and listed[0]["rate_limit"]["max"] == 5
    finally:
        node.close()


@pytest.mark.parametrize("store", ["memory", "sqlite"])
def test_retry_job_of_a_dead_job_whose_key_another_holds_is_22(tmp_path: Path, store: str) -> None:
    node = NodeProcess(*(["--db", str(tmp_path / "q.db")] if store == "sqlite" else []))
    try:

        def send(body: dict[str, Any]) -> dict[str, Any]:
            return node.send({"msg_id": 1, **body})

        send({"type": "schedule_job", "task": "t", "job_id": "a", "unique_key": "k",
              "max_attempts": 1})  # fmt: skip
        assert (
            send({"type": "execute_job", "job_id": "a", "force_fail": True})["type"] == "job_failed"
        )
        b = send({"type": "schedule_job", "task": "t", "job_id": "b", "unique_key": "k"})
        assert b["job_id"] == "b" and "duplicate" not in b
        got = send({"type": "retry_job", "job_id": "a"})
        assert got["type"] == "error" and got["code"] == 22, got
        assert got["text"] == "job 'a': its unique_key is held by job 'b', which is not final"
        assert send({"type": "get_job", "job_id": "a"})["job"]["state"] == "dead"
        # The node goes on; once the holder is final the retry goes through.
        assert send({"type": "cancel_job", "job_id": "b"})["type"] == "job_cancelled"
        assert send({"type": "retry_job", "job_id": "a"})["type"] == "job_requeued"
        dup = send({"type": "schedule_job", "task": "t", "job_id": "c", "unique_key": "k"})
        assert dup["job_id"] == "a" and dup["duplicate"] is True
    finally:
        node.close()
