"""Storage faults through a real ``main.py --db`` node: a locked database, a
read-only file and a full disk answer error 11 for the changes that could not
be committed, change nothing, and the node keeps serving; a corrupt file, a
file that is not SQLite, or a schema newer than the code is refused at start."""

from __future__ import annotations

import contextlib
import os
import resource
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from jobsched.stores.sqlite import SQLiteStore
from tests.harness import ROOT, NodeProcess, run_lines

T = "2024-01-15T09:00:00Z"
FAST_BUSY = {"JOBSCHED_SQLITE_BUSY_TIMEOUT_MS": "200"}


def schedule(job_id: str, payload: Any = None) -> dict[str, Any]:
    body: dict[str, Any] = {"type": "schedule_job", "msg_id": 1, "task": "t", "job_id": job_id}
    body.update(current_time=T, delay_ms=1000)
    if payload is not None:
        body["payload"] = payload
    return body


def seeded(path: Path, *job_ids: str) -> Path:
    node = NodeProcess("--db", str(path))
    for job_id in job_ids:
        assert node.send(schedule(job_id))["type"] == "job_scheduled"
    assert node.close() == 0
    return path


def job_ids(path: Path) -> list[str]:
    store = SQLiteStore(str(path))
    try:
        return [j.job_id for j in store.iter_all()]
    finally:
        store.close()


def assert_unavailable(reply: dict[str, Any]) -> None:
    assert reply["type"] == "error" and reply["code"] == 11, reply
    assert "nothing" in reply["text"]


def test_a_locked_database_answers_11_for_writes_and_serves_reads(tmp_path: Path) -> None:
    path = seeded(tmp_path / "jobs.db", "old")
    node = NodeProcess("--db", str(path), env=FAST_BUSY)
    holder = sqlite3.connect(path, isolation_level=None)
    try:
        holder.execute("BEGIN EXCLUSIVE")  # another process holds the write lock
        reply = node.send(schedule("new"))
        assert_unavailable(reply)
        assert "locked" in reply["text"]
        assert node.send({"type": "get_job", "job_id": "old"})["type"] == "job_info"
        assert_unavailable(node.send({"type": "cancel_job", "job_id": "old"}))
        holder.execute("ROLLBACK")
        assert node.send(schedule("new"))["type"] == "job_scheduled"
        assert node.send({"type": "get_job", "job_id": "old"})["job"]["state"] == "scheduled"
    finally:
        holder.close()
        assert node.close() == 0
    assert job_ids(path) == ["old", "new"]


@contextlib.contextmanager
def read_only(path: Path) -> Iterator[None]:
    """Make the file read-only even for root (which chmod does not stop)."""
    if os.geteuid() != 0:
        path.chmod(0o444)
        try:
            yield
        finally:
            path.chmod(0o644)
        return
    done = subprocess.run(["chattr", "+i", str(path)], capture_output=True, check=False)
    assert done.returncode == 0, f"cannot make {path} immutable as root: {done.stderr!r}"
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=True)


def test_a_read_only_file_answers_11_for_changes_and_keeps_serving(tmp_path: Path) -> None:
    path = seeded(tmp_path / "jobs.db", "old")
    with read_only(path):
        node = NodeProcess("--db", str(path))
        try:
            for job_id in ("a", "b"):
                reply = node.send(schedule(job_id))
                assert_unavailable(reply)
                assert "read-only" in reply["text"]
            assert node.send({"type": "get_job", "job_id": "old"})["type"] == "job_info"
            assert_unavailable(node.send({"type": "execute_job", "job_id": "old"}))
            assert node.send({"type": "stats"})["total"] == 1
        finally:
            assert node.close() == 0
    assert job_ids(path) == ["old"]
    job = SQLiteStore(str(path)).get("old")
    assert job is not None and job.runs == 0


def test_a_full_disk_answers_11_and_nothing_unacknowledged_is_kept(tmp_path: Path) -> None:
    """The file-size limit makes every write past 256 KiB fail as a full disk
    would (EFBIG instead of ENOSPC: both are SQLite I/O faults), without root."""
    path = seeded(tmp_path / "jobs.db", "old")
    acked, refused = _fill(CappedNode(path, 256 << 10), "x" * 2000)
    assert refused, "the size limit was never reached"
    stored = set(job_ids(path))
    assert set(acked) <= stored  # every acknowledged job survived
    assert not stored & set(refused)  # no refused one was kept
    assert stored <= {"old", *acked, *refused}


class CappedNode(NodeProcess):
    """A main.py node whose files may not grow past ``limit`` bytes."""

    def __init__(self, path: Path, limit: int) -> None:
        def cap() -> None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

        self.proc = subprocess.Popen(
            [sys.executable, str(ROOT / "main.py"), "--db", str(path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=ROOT,
            preexec_fn=cap,
        )


def _fill(node: NodeProcess, payload: str) -> tuple[list[str], list[str]]:
    """Schedule jobs until the storage refuses; return (acknowledged, refused) ids
    and check the node still answers reads once full."""
    acked: list[str] = []
    refused: list[str] = []
    try:
        for i in range(2000):
            reply = node.send(schedule(f"j{i}", {"fill": payload}))
            if reply["type"] == "job_scheduled":
                acked.append(f"j{i}")
                continue
            assert_unavailable(reply)
            refused.append(f"j{i}")
            if len(refused) >= 3:
                break
        assert node.send({"type": "get_job", "job_id": "old"})["type"] == "job_info"
        assert node.send({"type": "stats"})["type"] == "stats"
    finally:
        assert node.close() == 0
    return acked, refused


def _can_mount() -> bool:
    return os.geteuid() == 0 and shutil.which("mount") is not None


def test_a_full_tmpfs_answers_11_and_recovers_when_space_returns(tmp_path: Path) -> None:
    if not _can_mount():
        pytest.skip("mounting a tmpfs needs root; the RLIMIT_FSIZE test covers the fault")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        path = seeded(mnt / "jobs.db", "old")
        filler = mnt / "filler"
        free = shutil.disk_usage(mnt).free
        filler.write_bytes(b"\0" * max(0, free - (256 << 10)))
        node = NodeProcess("--db", str(path))
        try:
            refused = None
            for i in range(2000):
                reply = node.send(schedule(f"j{i}", {"fill": "x" * 2000}))
                if reply["type"] != "job_scheduled":
                    assert_unavailable(reply)
                    assert "full" in reply["text"] or "I/O" in reply["text"]
                    refused = f"j{i}"
                    break
            assert refused is not None, "the disk never filled"
            assert node.send({"type": "get_job", "job_id": "old"})["type"] == "job_info"
            filler.unlink()
            assert node.send(schedule(refused))["type"] == "job_scheduled"
        finally:
            assert node.close() == 0
        assert refused in job_ids(path)
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


# -- refused at start ---------------------------------------------------------


def _start_fails(path: Path) -> str:
    out, err, code = run_lines(['{"type": "stats"}'], "--db", str(path))
    assert code != 0 and out == [], (code, out)
    return err


def test_a_file_that_is_not_sqlite_is_refused_and_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("my notes\n" * 100)
    assert "is not a SQLite database" in _start_fails(path)
    assert path.read_text() == "my notes\n" * 100


@pytest.mark.parametrize("where", ["first page", "later pages"])
def test_a_corrupt_database_is_refused_at_start(tmp_path: Path, where: str) -> None:
    path = seeded(tmp_path / "jobs.db", *[f"j{i}" for i in range(50)])
    data = bytearray(path.read_bytes())
    start, end = (100, 4096) if where == "first page" else (4096, len(data))
    data[start:end] = bytes((i * 7919 + 13) % 251 for i in range(end - start))
    path.write_bytes(bytes(data))
    err = _start_fails(path)
    assert "corrupt" in err and "refusing" in err, err


def test_a_database_from_a_newer_jobsched_is_refused_at_start(tmp_path: Path) -> None:
    path = seeded(tmp_path / "jobs.db", "a")
    db = sqlite3.connect(path)
    db.execute("INSERT INTO schema_migrations VALUES (999, 'future', 0)")
    db.commit()
    db.close()
    assert "newer than this jobsched knows" in _start_fails(path)
