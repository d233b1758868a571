"""``jobsched.Service``: the dispatcher inside the application, on real stores."""

from __future__ import annotations

import os
import queue
import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest

import jobsched
from jobsched.errors import JobschedError, Malformed
from jobsched.runner import TaskRegistry

WAIT = 10.0


def _registry(got: queue.Queue[Any]) -> TaskRegistry:
    reg = TaskRegistry()

    @reg.task("record", pass_context=True)
    def record(payload: Any, ctx: jobsched.TaskContext) -> None:
        got.put((payload, ctx.job_id, ctx.attempt))

    return reg


def _jobsched_threads() -> set[str]:
    return {t.name for t in threading.enumerate() if t.name.startswith("jobsched")}


@pytest.mark.parametrize("where", ["sqlite", "memory"])
def test_it_runs_jobs_and_stops_cleanly(tmp_path: Path, where: str) -> None:
    db = str(tmp_path / "jobs.db") if where == "sqlite" else ":memory:"
    got: queue.Queue[Any] = queue.Queue()
    before = _jobsched_threads()
    with jobsched.Service(db, registry=_registry(got), workers=2, grace=1) as svc:
        assert svc.running and _jobsched_threads() - before
        svc.client.schedule("record", {"n": 1})
        svc.client.schedule_many([{"task": "record", "payload": {"n": 2}}])
        seen = sorted([got.get(timeout=WAIT), got.get(timeout=WAIT)], key=lambda x: x[0]["n"])
        assert [s[0] for s in seen] == [{"n": 1}, {"n": 2}]
        with pytest.raises(Malformed):  # the service's registry: a typo is refused
            svc.client.schedule("recrod", {})
        store = svc.store
    assert not svc.running
    assert _jobsched_threads() - before == set(), "a thread outlived the service"
    with pytest.raises(JobschedError):
        svc.client  # noqa: B018  # stopped: no client
    if where == "sqlite":
        assert store is not None
        open_files = {os.path.realpath(f"/proc/self/fd/{fd}") for fd in os.listdir("/proc/self/fd")}
        assert not {f for f in open_files if f.startswith(os.path.realpath(db))}, "store open"
        rows = sqlite3.connect(db).execute("SELECT state FROM jobs").fetchall()
        assert sorted(r[0] for r in rows) == ["completed", "completed"]


def test_with_no_handler_a_task_is_refused_and_webhook_is_known() -> None:
    """As under serve: a typo is not "completed" as a no-op, however few
    handlers the application registered (none here)."""
    with jobsched.Service(":memory:", registry=TaskRegistry(), grace=1) as svc:
        with pytest.raises(Malformed, match="no handler is registered for task 'typo-task'"):
            svc.client.schedule("typo-task", {})
        url = "http://127.0.0.1:9/hook"  # scheduled far ahead: never run here
        assert svc.client.schedule("webhook", {"url": url}, delay_ms=3_600_000).job_id


def test_task_modules_by_name_and_a_failed_start_closes_nothing_twice(tmp_path: Path) -> None:
    with pytest.raises(ModuleNotFoundError):
        jobsched.Service(":memory:", tasks=["no_such_module_here"])
    svc = jobsched.Service(tmp_path / "nowhere" / "x.db")
    with pytest.raises(JobschedError):
        svc.start()
    assert not svc.running
    svc.stop()  # harmless


def test_the_dispatcher_gives_handlers_their_job_context() -> None:
    got: queue.Queue[Any] = queue.Queue()
    with jobsched.Service(registry=_registry(got), grace=1) as svc:
        job = svc.client.schedule("record", {"n": 1})
        assert got.get(timeout=WAIT) == ({"n": 1}, job.job_id, 1)
