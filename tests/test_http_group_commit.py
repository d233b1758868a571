"""Group commit in the HTTP service, against a real ``python -m jobsched serve`` on
a SQLite file: writes from many connections share transactions, and yet every
write acknowledged is durable (kill -9), a bad request in a group is answered
its own error while the others in the group commit, and a group the store
cannot commit acknowledges nothing."""

from __future__ import annotations

import contextlib
import http.client
import json
import signal
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from jobsched.stores.sqlite import SQLiteStore
from tests.test_server_http import BOUND_S, TOKEN, Service

AUTH = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
CLIENTS = 12
ACKS = 300  # acknowledged writes before the kill


def post(conn: http.client.HTTPConnection, path: str, body: Any) -> tuple[int, Any]:
    conn.request("POST", path, json.dumps(body), AUTH)
    resp = conn.getresponse()
    return resp.status, json.loads(resp.read())


def metric(svc: Service, name: str) -> int:
    status, text = svc.request("GET", "/metrics")
    assert status == 200
    return sum(int(float(line.split()[-1])) for line in text.splitlines() if line.startswith(name))


def job(job_id: str, task: str = "ok") -> dict[str, Any]:
    return {"job_id": job_id, "task": task, "delay_ms": 3_600_000}


@contextlib.contextmanager
def write_lock(db: str) -> Iterator[sqlite3.Connection]:
    """Hold the file's write lock, as another writer would: the service's writer
    waits for it (busy timeout) while the requests behind it queue up."""
    lock = sqlite3.connect(db, isolation_level=None)
    try:
        lock.execute("BEGIN IMMEDIATE")
        yield lock
    finally:
        with contextlib.suppress(sqlite3.Error):
            lock.execute("ROLLBACK")
        lock.close()


class Burst:
    """Each request on its own connection, all sent at once; ``join`` waits for
    the answers, in the order of the requests."""

    def __init__(self, svc: Service, requests: list[tuple[str, Any]]) -> None:
        self.answers: list[tuple[int, Any]] = [(0, None)] * len(requests)
        self.threads = [
            threading.Thread(target=self._send, args=(svc, i, path, body))
            for i, (path, body) in enumerate(requests)
        ]
        for t in self.threads:
            t.start()

    def _send(self, svc: Service, i: int, path: str, body: Any) -> None:
        conn = http.client.HTTPConnection(*svc.address, timeout=BOUND_S)
        try:
            self.answers[i] = post(conn, path, body)
        except (OSError, http.client.HTTPException):
            pass  # killed before answering: status 0
        finally:
            conn.close()

    def join(self) -> list[tuple[int, Any]]:
        for t in self.threads:
            t.join(BOUND_S)
            assert not t.is_alive()
        return self.answers


def test_every_acknowledged_write_survives_kill_9(tmp_path: Path) -> None:
    svc = Service(tmp_path)
    acked: list[list[str]] = [[] for _ in range(CLIENTS)]
    stop = threading.Event()

    def client(n: int) -> None:
        conn = http.client.HTTPConnection(*svc.address, timeout=BOUND_S)
        with contextlib.suppress(OSError, http.client.HTTPException):  # the kill
            for i in range(100_000):
                if stop.is_set():
                    return
                status, reply = post(conn, "/v1/jobs", job(f"c{n}-{i}"))
                assert status == 201, reply
                acked[n].append(reply["job_id"])

    threads = [threading.Thread(target=client, args=(n,)) for n in range(CLIENTS)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 4 * BOUND_S
    while sum(map(len, acked)) < ACKS and time.monotonic() < deadline:
        time.sleep(0.01)
    # Writes from twelve connections at once shared transactions: fewer groups than writes.
    groups, writes = (
        metric(svc, "jobsched_http_write_groups_total"),
        metric(svc, "jobsched_http_writes_total"),
    )
    svc.proc.send_signal(signal.SIGKILL)  # mid-stream: requests are in flight
    svc.proc.wait(BOUND_S)
    stop.set()
    for t in threads:
        t.join(BOUND_S)
    ids = [job_id for mine in acked for job_id in mine]
    assert len(ids) >= ACKS, "the writers were too slow to test anything"
    assert writes >= ACKS and groups < writes, (groups, writes)
    store = SQLiteStore(svc.db)
    try:
        lost = [job_id for job_id in ids if store.get(job_id) is None]
    finally:
        store.close()
    assert lost == [], f"{len(lost)} of {len(ids)} acknowledged jobs lost: {lost[:5]}"


def test_no_answer_leaves_before_its_group_commits(tmp_path: Path) -> None:
    """Four writes queued ahead of a batch of 5,000 jobs, in one group: killed
    as soon as the first of the four is answered, the service has committed
    them (answered inside the transaction, they would be lost: the batch keeps
    the group open for a good while after them)."""
    svc = Service(tmp_path, "--no-dispatch")
    batch = [{"task": "ok", "delay_ms": 3_600_000} for _ in range(5_000)]
    with write_lock(svc.db) as lock:
        opener = Burst(svc, [("/v1/jobs", job("opener"))])  # the writer: waits for the lock
        time.sleep(0.3)
        early = Burst(svc, [("/v1/jobs", job(f"early-{i}")) for i in range(4)])
        time.sleep(0.3)
        Burst(svc, [("/v1/jobs/batch", batch)])  # after them in the queue, in their group
        time.sleep(1.0)
        lock.execute("COMMIT")
    assert opener.join()[0][0] == 201
    while all(t.is_alive() for t in early.threads):
        time.sleep(0.0005)
    svc.proc.send_signal(signal.SIGKILL)
    svc.proc.wait(BOUND_S)
    answered = [f"early-{i}" for i, (status, _) in enumerate(early.answers) if status == 201]
    assert answered
    store = SQLiteStore(svc.db)
    try:
        assert [job_id for job_id in answered if store.get(job_id) is None] == []
    finally:
        store.close()


@pytest.fixture()
def quiet(tmp_path: Path) -> Iterator[Service]:
    """A service that runs no jobs: only the requests write to the file."""
    svc = Service(tmp_path, "--no-dispatch")
    yield svc
    assert svc.stop() == 0


def test_a_bad_request_in_a_group_answers_its_error_and_the_others_commit(quiet: Service) -> None:
    svc = quiet
    assert svc.request("POST", "/v1/jobs", job("taken"))[0] == 201
    groups0, writes0 = (
        metric(svc, "jobsched_http_write_groups_total"),
        metric(svc, "jobsched_http_writes_total"),
    )
    good = [("/v1/jobs", job(f"good-{i}")) for i in range(6)]
    fresh = ("/v1/jobs", {"task": "ok", "delay_ms": 3_600_000})  # the fast path: no savepoint
    bad = [
        ("/v1/jobs", job("taken", task="other")),  # id taken with a different spec: 409
        ("/v1/jobs/batch", [job("batch-1"), job("taken", task="other")]),  # 409, batch-1 undone
        ("/v1/jobs", {**job("bad-cron"), "cron": "61 * * * *"}),  # 400
    ]
    mixed = [good[0], fresh, bad[0], good[1], good[2], bad[1], fresh, good[3], bad[2], good[4]]
    mixed += [good[5]]
    with write_lock(svc.db) as lock:
        opener = Burst(svc, [("/v1/jobs", job("opener"))])  # the writer: waits for the lock
        time.sleep(0.3)
        burst = Burst(svc, mixed)  # queued behind it
        time.sleep(1.5)  # every request read, routed and queued (the busy timeout is 5 s)
        lock.execute("COMMIT")
    assert opener.join()[0][0] == 201
    answers = burst.join()
    statuses = {
        body["job_id"]: answer
        for (_, body), answer in zip(mixed, answers, strict=True)
        if "job_id" in body
    }
    for i in range(6):
        assert statuses[f"good-{i}"][0] == 201, statuses[f"good-{i}"]
        assert svc.request("GET", f"/v1/jobs/good-{i}")[0] == 200
    assert statuses["taken"][0] == 409 and statuses["taken"][1]["code"] == 21
    assert statuses["bad-cron"][0] == 400 and statuses["bad-cron"][1]["code"] == 12
    batch_status, batch_reply = answers[5]
    assert batch_status == 409 and batch_reply["code"] == 21, batch_reply
    for status, reply in (answers[1], answers[6]):
        assert status == 201, reply
        assert svc.request("GET", f"/v1/jobs/{reply['job_id']}")[0] == 200
    assert svc.request("GET", "/v1/jobs/batch-1")[0] == 404  # undone with its request
    assert svc.request("GET", "/v1/jobs/taken")[1]["job"]["task"] == "ok"
    # The opener alone, then the eleven that queued behind it in one transaction.
    groups = metric(svc, "jobsched_http_write_groups_total") - groups0
    writes = metric(svc, "jobsched_http_writes_total") - writes0
    assert (groups, writes) == (2, 12)


def test_a_group_the_store_cannot_commit_acknowledges_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JOBSCHED_SQLITE_BUSY_TIMEOUT_MS", "300")
    svc = Service(tmp_path, "--no-dispatch")
    try:
        with write_lock(svc.db):  # held past the service's busy timeout
            answers = Burst(svc, [("/v1/jobs", job(f"lost-{i}")) for i in range(4)]).join()
        for status, reply in answers:
            assert status == 503 and reply["code"] == 11, reply
        for i in range(4):
            assert svc.request("GET", f"/v1/jobs/lost-{i}")[0] == 404
        assert svc.request("POST", "/v1/jobs", job("after"))[0] == 201  # the next group commits
    finally:
        assert svc.stop() == 0
