"""Several ``main.py`` processes on one SQLite file: claims are atomic, so every
due job runs exactly once however the processes' ``execute_jobs`` interleave."""

from __future__ import annotations

import multiprocessing
import threading
import time
from pathlib import Path
from typing import Any

from jobsched.jobs import ONCE, Job, JobState
from jobsched.stores.sqlite import SQLiteStore
from tests.harness import NodeProcess

T0 = 1_705_309_200_000
HOUR = 3_600_000
DUE, LATER = 3000, 500


STEP = 1000  # due times spread over CALLS steps, so each call claims a slice
CALLS = 30


def seed(path: Path, round_no: int) -> set[str]:
    """DUE jobs due within this round's CALLS steps, LATER ones never; return the due ids."""
    store = SQLiteStore(str(path))
    start = T0 + round_no * HOUR
    due: set[str] = set()
    with store.transaction():
        for i in range(DUE + LATER):
            job_id = f"r{round_no}-{i}"
            at = start + (i * 7919) % (CALLS * STEP) if i < DUE else T0 + 1000 * HOUR + i
            store.insert(Job(job_id, "t", "{}", ONCE, JobState.SCHEDULED, at, T0, T0))
            if i < DUE:
                due.add(job_id)
    store.close()
    return due


def execute_in(path: Path, start: int, ready: threading.Barrier, out: list[str]) -> None:
    """One node process: once both are up, CALLS execute_jobs one at a time, each
    at a later current_time, so that the two processes' claims interleave."""
    node = NodeProcess("--db", str(path))
    try:
        assert node.send({"type": "stats"})["type"] == "stats"
        ready.wait(timeout=60)
        for k in range(CALLS + 1):
            reply = node.send(
                {"type": "execute_jobs", "msg_id": k, "current_time": start + k * STEP}
            )
            assert reply["type"] == "jobs_executed", reply
            out.extend(reply["jobs"])
    finally:
        assert node.close() == 0


def test_two_processes_run_every_due_job_exactly_once(tmp_path: Path) -> None:
    path = tmp_path / "shared.db"
    for round_no in range(3):
        due = seed(path, round_no)
        results: dict[str, list[str]] = {"a": [], "b": []}
        ready = threading.Barrier(2)
        start = T0 + round_no * HOUR
        nodes = [
            threading.Thread(target=execute_in, args=(path, start, ready, results[name]))
            for name in results
        ]
        for t in nodes:
            t.start()
        for t in nodes:
            t.join()
        ran_a, ran_b = results["a"], results["b"]
        assert len(ran_a) == len(set(ran_a)) and len(ran_b) == len(set(ran_b))
        assert not set(ran_a) & set(ran_b), "a job ran in both processes"
        assert set(ran_a) | set(ran_b) == due
    store = SQLiteStore(str(path))
    counts = store.counts()
    store.close()
    assert counts.get(JobState.COMPLETED) == 3 * DUE
    assert counts.get(JobState.SCHEDULED) == 3 * LATER
    assert not counts.get(JobState.RUNNING)


def _open_at(path: str, at: float, answers: Any) -> None:
    while time.time() < at:
        pass
    try:
        SQLiteStore(path).close()
        answers.put("ok")
    except Exception as exc:  # the answer is the test's
        answers.put(f"{type(exc).__name__}: {exc}")


def test_processes_opening_a_new_file_together_all_start(tmp_path: Path) -> None:
    """Nodes started together on a file that does not exist yet: turning it
    to WAL took a lock SQLite's busy handler does not wait for, and about one
    open in thirty failed with "database is locked" (6 processes at a time)."""
    ctx = multiprocessing.get_context("fork")
    answers = ctx.Queue()
    failed: list[str] = []
    for r in range(12):
        path, at = str(tmp_path / f"new{r}.db"), time.time() + 0.3
        procs = [ctx.Process(target=_open_at, args=(path, at, answers)) for _ in range(6)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(30)
        failed += [a for a in (answers.get(timeout=5) for _ in procs) if a != "ok"]
    assert failed == []
