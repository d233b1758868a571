"""GET /v1/events end to end, read the way a script reads it (http.client, as
``curl -N`` would): run events of jobs scheduled through the API, ``id:`` and
``retry:`` fields, resuming with Last-Event-ID, heartbeats, the streams' own
bound (they hold no HTTP thread and take no --max-connections slot), and the
runs of another node on the same PostgreSQL schema."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from jobsched.jobs import JobState
from tests.backend_postgres import base_dsn, fresh_schema, with_schema
from tests.test_server_http import ROOT, TASKS, TOKEN, Service

BOUND_S = 10.0


class Events:
    """One subscriber: an open GET /v1/events, read frame by frame."""

    def __init__(
        self, svc: Service, last_event_id: str | None = None, token: str | None = TOKEN
    ) -> None:
        host, port = svc.address
        self.conn = http.client.HTTPConnection(host, port, timeout=BOUND_S)
        headers = {} if token is None else {"Authorization": f"Bearer {token}"}
        if last_event_id is not None:
            headers["Last-Event-ID"] = last_event_id
        self.conn.request("GET", "/v1/events", headers=headers)
        self.response = self.conn.getresponse()
        self.comments: list[str] = []
        self.retry: int | None = None

    def frame(self) -> dict[str, Any] | None:
        """The next event, as {"id", "body"}; None for a frame with no data
        (the opening retry and comments, heartbeats: kept in .comments)."""
        event: dict[str, Any] = {}
        while True:
            line = self.response.readline().decode()
            assert line, "the stream ended"
            line = line.rstrip("\n")
            if not line:
                return event or None
            field, _, value = line.partition(": ")
            if line.startswith(":"):
                self.comments.append(line[1:].strip())
            elif field == "retry":
                self.retry = int(value)
            elif field == "id":
                event["id"] = value
            elif field == "data":
                event["body"] = json.loads(value)

    def until(self, predicate: Any, within: float = BOUND_S) -> list[dict[str, Any]]:
        """Events up to and including the first that satisfies ``predicate``."""
        seen: list[dict[str, Any]] = []
        end = time.monotonic() + within
        while time.monotonic() < end:
            event = self.frame()
            if event is not None:
                seen.append(event)
                if predicate(event["body"]):
                    return seen
        raise AssertionError(f"not seen within {within} s; got {seen}")

    def close(self) -> None:
        self.response.close()  # it holds the socket: the connection alone would not close it
        self.conn.close()


@pytest.fixture(scope="module")
def svc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    s = Service(
        tmp_path_factory.mktemp("sse"),
        "--event-heartbeat-s",
        "0.3",
        "--max-event-streams",
        "3",
        "--max-connections",
        "2",
        "--http-threads",
        "1",
        db="",
    )
    yield s
    assert s.stop() == 0


def _finished(job_id: str) -> Any:
    return lambda body: body["job_id"] == job_id and body["event"] in ("succeeded", "failed")


def test_a_script_reads_the_events_of_a_job_scheduled_through_the_api(svc: Service) -> None:
    events = Events(svc)
    try:
        assert events.response.status == 200
        assert events.response.getheader("Content-Type").startswith("text/event-stream")
        assert events.response.getheader("Content-Length") is None
        assert events.frame() is None and events.retry == 2000  # the opening: retry, a comment
        status, reply = svc.request("POST", "/v1/jobs", {"task": "ok", "payload": {"n": 1}})
        assert status == 201
        seen = events.until(_finished(reply["job_id"]))
    finally:
        events.close()
    bodies = [e["body"] for e in seen if e["body"]["job_id"] == reply["job_id"]]
    assert [b["event"] for b in bodies] == ["started", "succeeded"]
    started, done = bodies
    assert started["type"] == "run_event" and started["task"] == "ok"
    assert started["lateness_ms"] >= 0 and done["duration_ms"] >= 0
    assert started["due_at"] == done["due_at"] == reply["scheduled_at"]
    boot, n = seen[-1]["id"].rsplit("-", 1)
    assert seen[0]["id"] == f"{boot}-{int(n) - len(seen) + 1}"  # ids count up, one per event


def test_last_event_id_resumes_after_the_last_event_seen(svc: Service) -> None:
    first = Events(svc)
    try:
        first.frame()
        _, a = svc.request("POST", "/v1/jobs", {"task": "ok"})
        seen = first.until(_finished(a["job_id"]))
    finally:
        first.close()
    _, b = svc.request("POST", "/v1/jobs", {"task": "boom", "max_attempts": 1})  # while away
    time.sleep(0.3)
    again = Events(svc, last_event_id=seen[0]["id"])
    try:
        resumed = again.until(_finished(b["job_id"]))
    finally:
        again.close()
    assert resumed[0]["id"] == seen[1]["id"]  # everything after the id given, nothing before
    failed = resumed[-1]["body"]
    assert failed["event"] == "failed" and "RuntimeError: boom" in failed["error"]
    assert failed["retry_scheduled"] is False


def test_a_client_from_before_a_restart_is_told_and_gets_the_ring(svc: Service) -> None:
    # The ring holds at least this job's events, whichever tests ran before
    # in this process (the suite's workers share the tests out).
    listener = Events(svc)
    try:
        listener.frame()
        _, job = svc.request("POST", "/v1/jobs", {"task": "ok"})
        listener.until(_finished(job["job_id"]))
    finally:
        listener.close()
    events = Events(svc, last_event_id="0-41")
    try:
        first = events.until(lambda body: True)  # the ring, from its oldest event
        assert any("restarted" in c for c in events.comments)
        assert first[0]["id"].endswith("-1")
    finally:
        events.close()


def test_heartbeats_keep_a_quiet_stream_talking(svc: Service) -> None:
    events = Events(svc)
    try:
        events.frame()
        started = time.monotonic()
        while "keep-alive" not in events.comments:
            assert events.frame() is None
        assert time.monotonic() - started < 3
    finally:
        events.close()


def test_streams_hold_no_thread_and_no_connection_slot_and_have_their_own_bound(
    svc: Service,
) -> None:
    # One HTTP thread, two connection slots, three stream slots.
    streams = [Events(svc) for _ in range(3)]
    try:
        assert all(s.response.status == 200 for s in streams)
        with socket.create_connection(svc.address, timeout=5) as sock:
            sock.sendall(
                b"GET /v1/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
                + TOKEN.encode()
                + b"\r\n\r\n"
            )
            assert sock.recv(4096).startswith(b"HTTP/1.1 503 ")
        started = time.monotonic()
        for _ in range(3):  # the only thread and both slots are free for requests
            assert svc.request("GET", "/healthz", token=None)[0] == 200
            assert svc.request("GET", "/v1/jobs?limit=1")[0] == 200
        assert time.monotonic() - started < 2
    finally:
        for s in streams:
            s.close()
    time.sleep(0.5)  # hung-up streams free their slots
    again = Events(svc)
    assert again.response.status == 200
    again.close()
    assert not [line for line in svc.log if "Traceback" in line]


def test_the_stream_needs_the_token(svc: Service) -> None:
    events = Events(svc, token=None)
    assert events.response.status == 401
    events.close()


# -- another node on the same PostgreSQL schema ----------------------------------------


def test_the_stream_shows_runs_of_another_node_on_the_same_postgres(tmp_path: Path) -> None:
    with fresh_schema() as schema:
        dsn = with_schema(base_dsn(), schema)
        # This service runs nothing itself: every run is the other node's.
        svc = Service(tmp_path, "--no-dispatch", db=dsn)
        tasks = tmp_path / "node_tasks.py"
        tasks.write_text(TASKS)
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        other = subprocess.Popen(
            [sys.executable, str(ROOT / "main.py"), "--db", dsn, "--realtime",
             "--tasks", str(tasks), "--node-id", "other-node"],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            cwd=tmp_path, env=env,
        )  # fmt: skip
        events = Events(svc)
        try:
            events.frame()
            time.sleep(0.6)  # the follower's first poll marks where "new" starts
            status, reply = svc.request("POST", "/v1/jobs", {"task": "ok", "payload": {}})
            assert status == 201
            seen = events.until(_finished(reply["job_id"]), within=15)
            status, overview = svc.request("GET", "/v1/dashboard/overview")
            queues = svc.request("GET", "/v1/dashboard/queues")[1]["queues"]
        finally:
            events.close()
            other.send_signal(signal.SIGTERM)
            other.communicate(timeout=15)
            assert svc.stop() == 0
    done = seen[-1]["body"]
    assert done["event"] == "succeeded" and done["task"] == "ok"
    assert done["node"] == "other-node" and done["source"] == "store"
    # The overview lists the cluster's nodes from their heartbeats: the other one.
    assert status == 200 and overview["nodes"] is not None
    assert [n["node_id"].split("/")[0] for n in overview["nodes"]] == ["other-node"]
    # Counted on the dashboard's own connection, one index range per state.
    assert overview["jobs"] == {**dict.fromkeys(JobState, 0), "completed": 1}
    assert [(q["queue"], q["jobs"]["completed"], q["running"]) for q in queues] == [
        ("default", 1, 0)
    ]


def test_a_run_of_this_service_s_dispatcher_is_reported_once_with_its_occurrence(
    tmp_path: Path,
) -> None:
    """The store follower reported every run of a recurring job a second
    time, from the jobs table (source "store"), with the next occurrence as
    its due_at: the table shows a claimed recurring job due at its next one
    already. The dispatcher reports its own starts; the follower, only the
    others'."""
    svc = Service(tmp_path)  # SQLite: the follower reads its tables
    marker = tmp_path / "marker"
    events = Events(svc)
    try:
        events.frame()
        time.sleep(0.6)  # the follower's first poll
        spec = {"task": "slow", "job_id": "tick", "interval_ms": 1000,
                "payload": {"marker": str(marker), "seconds": 0.7}}  # fmt: skip
        assert svc.request("POST", "/v1/jobs", spec)[0] == 201
        seen: list[dict[str, Any]] = []
        for _ in range(3):  # three runs, each seen running by several polls
            seen += events.until(_finished("tick"), within=10)
    finally:
        events.close()
        assert svc.stop() == 0
    started = [e["body"] for e in seen if e["body"]["event"] == "started"]
    assert all(b.get("source") != "store" for b in started), started
    dues = [b["due_at"] for b in started]
    assert len(dues) == len(set(dues)) == 3, dues
