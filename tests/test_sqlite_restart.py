"""Restart: a ``main.py --db`` node stopped (EOF or SIGTERM) and started again on
the same file finds every job as it was: states, failure counts, due times,
schedules, retry settings and run history, and carries on from there."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

from tests.harness import NodeProcess

T0 = "2024-01-15T09:00:00Z"
T1 = "2024-01-15T09:30:00Z"
T2 = "2024-01-15T14:00:00Z"


def body(kind: str, **fields: Any) -> dict[str, Any]:
    return {"type": kind, "msg_id": 1, **fields}


def ok(node: NodeProcess, kind: str, expect: str, **fields: Any) -> dict[str, Any]:
    reply = node.send(body(kind, **fields))
    assert reply["type"] == expect, reply
    return reply


def build_history(node: NodeProcess) -> None:
    """One job in every state, with failures, retries and runs behind it."""
    sched = {"current_time": T0}
    ok(
        node,
        "schedule_job",
        "job_scheduled",
        task="mail",
        job_id="once",
        delay_ms=3_600_000,
        **sched,
    )
    ok(node, "schedule_job", "job_scheduled", task="rep", job_id="cron", cron="*/15 * * * *",
       timezone="Europe/Paris", payload={"k": [1, "ü"]}, **sched)  # fmt: skip
    ok(
        node,
        "schedule_job",
        "job_scheduled",
        task="tick",
        job_id="every",
        interval_ms=60_000,
        **sched,
    )
    ok(node, "schedule_job", "job_scheduled", task="f", job_id="flaky", max_attempts=5,
       base_ms=3_600_000, max_backoff_ms=14_400_000, **sched)  # fmt: skip
    ok(node, "schedule_job", "job_scheduled", task="f", job_id="doomed", max_attempts=1, **sched)
    ok(node, "schedule_job", "job_scheduled", task="p", job_id="paused", delay_ms=10, **sched)
    ok(node, "schedule_job", "job_scheduled", task="c", job_id="gone", **sched)
    ok(node, "schedule_job", "job_scheduled", task="d", job_id="done", **sched)
    for _ in range(2):
        ok(node, "execute_job", "job_failed", job_id="flaky", force_fail=True, current_time=T0)
    ok(node, "execute_job", "job_failed", job_id="doomed", force_fail=True, current_time=T0)
    ok(node, "pause_job", "job_paused", job_id="paused", current_time=T0)
    ok(node, "cancel_job", "job_cancelled", job_id="gone", current_time=T0)
    ran = ok(node, "execute_jobs", "jobs_executed", current_time=T1)
    assert {"done", "cron", "every"} <= set(ran["jobs"])


def snapshot(node: NodeProcess) -> dict[str, Any]:
    jobs = ok(node, "list_jobs", "jobs_listed", limit=1000)["jobs"]
    full = {j["job_id"]: ok(node, "get_job", "job_info", job_id=j["job_id"])["job"] for j in jobs}
    return {"list": jobs, "jobs": full, "stats": ok(node, "stats", "stats")}


def test_everything_is_as_it_was_after_a_restart(tmp_path: Path) -> None:
    db = str(tmp_path / "jobs.db")
    node = NodeProcess("--db", db)
    build_history(node)
    before = snapshot(node)
    assert node.close() == 0

    node = NodeProcess("--db", db)
    after = snapshot(node)
    assert after == before
    jobs = after["jobs"]
    assert (jobs["flaky"]["state"], jobs["flaky"]["attempts"]) == ("retrying", 2)
    assert [r["outcome"] for r in jobs["flaky"]["recent_runs"]] == ["failed", "failed"]
    assert jobs["doomed"]["state"] == "dead" and jobs["gone"]["state"] == "cancelled"
    assert jobs["done"]["state"] == "completed" and jobs["done"]["runs"] == 1
    assert jobs["cron"]["schedule"] == {
        "kind": "cron",
        "cron": "*/15 * * * *",
        "timezone": "Europe/Paris",
    }
    assert jobs["cron"]["due_at"] == "2024-01-15T09:45:00.000Z"
    assert jobs["every"]["due_at"] == "2024-01-15T09:31:00.000Z"  # on the grid of T0
    assert jobs["flaky"]["due_at"] == "2024-01-15T13:00:00.000Z"  # 4 h backoff after 2 failures

    # And it carries on: the retry succeeds, the schedules keep their grids.
    ran = ok(node, "execute_jobs", "jobs_executed", current_time=T2)["jobs"]
    assert set(ran) == {"once", "cron", "every", "flaky"}
    assert node.send(body("get_job", job_id="flaky"))["job"]["state"] == "completed"
    nxt = node.send(body("get_job", job_id="every"))["job"]["due_at"]
    assert nxt == "2024-01-15T14:01:00.000Z"
    assert node.close() == 0


def test_a_sigterm_stop_keeps_every_acknowledged_change(tmp_path: Path) -> None:
    db = str(tmp_path / "jobs.db")
    node = NodeProcess("--db", db)
    build_history(node)
    before = snapshot(node)
    node.proc.send_signal(signal.SIGTERM)
    assert node.proc.wait(timeout=30) == 0
    node = NodeProcess("--db", db)
    assert snapshot(node) == before
    assert node.close() == 0
