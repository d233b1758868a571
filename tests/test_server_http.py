"""The HTTP API end to end, against a real ``python -m jobsched serve`` process on a
free loopback port with a real SQLite file: every route, auth (a blank token is
refused at start), the body bound, the mapping of error codes to statuses,
/metrics through a Prometheus parser, and SIGTERM in the middle of a run
followed by a restart."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "s3cret-token"
BOUND_S = 10.0

TASKS = """
import time
from pathlib import Path
from jobsched import task

@task("ok")
def ok(payload):
    pass

@task("boom")
def boom(payload):
    raise RuntimeError("boom")

@task("slow")
def slow(payload):
    with open(payload["marker"], "a") as f:
        f.write("started\\n")
    time.sleep(payload.get("seconds", 60))
"""


class Service:
    """A real ``python -m jobsched serve`` on a free loopback port. ``db`` ""
    is the memory store; ``preexec_fn`` runs in the child (resource limits)."""

    def __init__(
        self,
        tmp: Path,
        *extra: str,
        db: str | None = None,
        tasks_text: str = TASKS,
        preexec_fn: Callable[[], None] | None = None,
    ) -> None:
        tasks = tmp / "server_tasks.py"
        tasks.write_text(tasks_text)
        self.db = str(tmp / "jobs.db") if db is None else db
        args = [sys.executable, "-m", "jobsched", "serve", "--db", self.db]
        args += ["--listen", "127.0.0.1:0", "--tasks", str(tasks), "--log-level", "WARNING"]
        env = {**os.environ, "JOBSCHED_TOKEN": TOKEN}
        self.proc = subprocess.Popen(
            [*args, *extra],
            cwd=ROOT,
            env=env,
            stderr=subprocess.PIPE,
            text=True,
            preexec_fn=preexec_fn,
        )
        self.log: list[str] = []
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.log.append(line)
            if line.startswith("jobsched: listening on http://"):
                self.url = line.split("listening on ")[1].strip()
                break
        else:
            raise AssertionError(f"the service did not start: {''.join(self.log)}")
        threading.Thread(target=self._drain, daemon=True).start()

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.url.removeprefix("http://").rsplit(":", 1)
        return host, int(port)

    def _drain(self) -> None:
        assert self.proc.stderr is not None
        self.log.extend(self.proc.stderr)

    def request(
        self, method: str, path: str, body: Any = None, token: str | None = TOKEN
    ) -> tuple[int, Any]:
        data = body if isinstance(body, bytes) else None if body is None else json.dumps(body)
        req = urllib.request.Request(
            self.url + path,
            data=data.encode() if isinstance(data, str) else data,
            method=method,
        )
        if token is not None:
            req.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(req, timeout=BOUND_S) as resp:
                status, raw = resp.status, resp.read()
                ctype = resp.headers["Content-Type"]
        except urllib.error.HTTPError as err:
            status, raw, ctype = err.code, err.read(), err.headers["Content-Type"]
        return status, raw.decode() if ctype.startswith("text/plain") else json.loads(raw)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=30)


@pytest.fixture(scope="module")
def svc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    s = Service(tmp_path_factory.mktemp("svc"), "--max-body-bytes", "4096", "--grace", "1")
    yield s
    assert s.stop() == 0


def wait_state(svc: Service, job_id: str, state: str) -> dict[str, Any]:
    deadline = time.monotonic() + BOUND_S
    while True:
        status, reply = svc.request("GET", f"/v1/jobs/{job_id}")
        assert status == 200, reply
        if reply["job"]["state"] == state or time.monotonic() > deadline:
            assert reply["job"]["state"] == state, reply
            return dict(reply["job"])
        time.sleep(0.02)


def error(reply: Any, code: int) -> str:
    assert reply["type"] == "error" and reply["code"] == code, reply
    return str(reply["text"])


# -- auth, bounds, routing ------------------------------------------------------------


def test_healthz_needs_no_token_and_everything_else_does(svc: Service) -> None:
    assert svc.request("GET", "/healthz", token=None) == (200, {"status": "ok"})
    for method, path in [("GET", "/v1/jobs"), ("GET", "/metrics"), ("POST", "/v1/messages")]:
        status, reply = svc.request(method, path, token=None)
        assert status == 401 and "Authorization" in error(reply, 12)
        status, reply = svc.request(method, path, token="wrong")
        assert status == 401


def test_bodies_are_bounded(svc: Service) -> None:
    status, reply = svc.request("POST", "/v1/jobs", {"task": "ok", "payload": "x" * 5000})
    assert status == 413 and "4096" in error(reply, 12)


def test_unknown_routes_and_methods(svc: Service) -> None:
    status, reply = svc.request("GET", "/v2/nothing")
    assert status == 404 and error(reply, 10)
    status, reply = svc.request("PUT", "/v1/jobs")
    assert status == 405 and error(reply, 10)
    status, reply = svc.request("POST", "/v1/jobs/x/frob")
    assert status == 404 and error(reply, 10)


# -- resource routes ------------------------------------------------------------------


def test_schedule_get_and_idempotency(svc: Service) -> None:
    spec = {"task": "ok", "delay_ms": 3_600_000, "job_id": "later", "payload": {"n": 1}}
    status, reply = svc.request("POST", "/v1/jobs", spec)
    assert status == 201 and reply["type"] == "job_scheduled" and reply["job_id"] == "later"
    assert svc.request("POST", "/v1/jobs", spec) == (201, reply)
    status, reply = svc.request("POST", "/v1/jobs", {**spec, "payload": {"n": 2}})
    assert status == 409 and error(reply, 21)
    status, reply = svc.request("GET", "/v1/jobs/later")
    assert status == 200 and reply["job"]["payload"] == {"n": 1}
    assert reply["job"]["state"] == "scheduled" and reply["job"]["recent_runs"] == []


def test_errors_map_to_statuses(svc: Service) -> None:
    status, reply = svc.request("POST", "/v1/jobs", {"task": "no-such-task"})
    assert status == 400 and error(reply, 12).startswith("task:")
    status, reply = svc.request("POST", "/v1/jobs", {"task": "ok", "delay_ms": -1})
    assert status == 400 and error(reply, 12).startswith("delay_ms:")
    status, reply = svc.request("POST", "/v1/jobs", b"{not json")
    assert status == 400 and error(reply, 12)
    status, reply = svc.request("POST", "/v1/jobs", [1, 2])
    assert status == 400 and error(reply, 12)
    status, reply = svc.request("GET", "/v1/jobs/missing")
    assert status == 404 and error(reply, 20)
    status, reply = svc.request("GET", "/v1/jobs/bad%20id")
    assert status == 400 and error(reply, 12)


def test_list_jobs_filters_and_pages(svc: Service) -> None:
    for i in range(3):
        body = {"task": "ok", "delay_ms": 3_600_000, "job_id": f"page-{i}"}
        assert svc.request("POST", "/v1/jobs", body)[0] == 201
    status, first = svc.request("GET", "/v1/jobs?state=scheduled&task=ok&limit=2")
    assert status == 200 and first["type"] == "jobs_listed" and len(first["jobs"]) == 2
    status, rest = svc.request("GET", f"/v1/jobs?state=scheduled&task=ok&after={first['next']}")
    assert status == 200
    ids = [j["job_id"] for j in first["jobs"] + rest["jobs"]]
    assert {"page-0", "page-1", "page-2"} <= set(ids) and len(ids) == len(set(ids))
    assert svc.request("GET", "/v1/jobs?limit=abc")[0] == 400
    assert svc.request("GET", "/v1/jobs?state=bogus")[0] == 400
    assert svc.request("GET", "/v1/jobs?after=nobody")[0] == 404


@pytest.mark.parametrize("field", ["queue", "task", "state", "after", "limit"])
def test_an_empty_list_filter_is_400_naming_it(svc: Service, field: str) -> None:
    """As list_jobs refuses {"queue": ""}: "queue=" listed every job (parse_qs
    drops blank values), and so did "task=" and "state="."""
    for query in (f"{field}=", field, f"limit=5&{field}="):
        status, reply = svc.request("GET", f"/v1/jobs?{query}")
        assert status == 400 and error(reply, 12).startswith(f"{field}:"), (query, reply)


def test_list_filters_are_decoded_strictly(svc: Service) -> None:
    # Bad UTF-8 was replaced by U+FFFD and a stray "%" kept: a filter matching nothing.
    for query, field in [
        ("queue=%ff", "queue"),
        ("task=%zz", "task"),
        ("state=sched%uled", "state"),
        ("queue=%ed%a0%80", "queue"),  # a surrogate, in UTF-8
        ("limit=%C2%B2", "limit"),  # "²": str.isdigit, yet no int (it was a 500)
    ]:
        status, reply = svc.request("GET", f"/v1/jobs?{query}")
        assert status == 400 and error(reply, 12).startswith(f"{field}:"), (query, reply)
    # A query's "+" is a space, as parse_qs read it; other fields are ignored.
    spec = {"task": "ok", "delay_ms": 3_600_000, "job_id": "plus", "queue": "a b"}
    assert svc.request("POST", "/v1/jobs", spec)[0] == 201
    status, reply = svc.request("GET", "/v1/jobs?queue=a+b&x=%ff&limit=%35")
    assert status == 200 and [j["job_id"] for j in reply["jobs"]] == ["plus"], reply


def test_a_job_path_is_decoded_strictly(svc: Service) -> None:
    for segment in ("%ff", "%zz", "a%2", "%c3%28"):
        for method, path in [("GET", segment), ("DELETE", segment), ("POST", f"{segment}/pause")]:
            status, reply = svc.request(method, f"/v1/jobs/{path}")
            assert status == 400 and error(reply, 12).startswith("job_id:"), (path, reply)
    body = {"task": "ok", "delay_ms": 3_600_000, "job_id": "esc:1"}
    assert svc.request("POST", "/v1/jobs", body)[0] == 201
    assert svc.request("GET", "/v1/jobs/esc%3A1")[1]["job"]["job_id"] == "esc:1"


def test_the_rest_routes_echo_a_msg_id_as_the_protocol_does(svc: Service) -> None:
    """docs/service.md: no in_reply_to unless the request had a msg_id; the
    routes dropped it, /v1/messages alone echoed it."""
    spec = {"task": "ok", "delay_ms": 3_600_000, "job_id": "echo"}
    status, reply = svc.request("POST", "/v1/jobs", {**spec, "msg_id": 5})
    assert status == 201 and reply["in_reply_to"] == 5 and reply["job_id"] == "echo"
    status, reply = svc.request("POST", "/v1/jobs", spec)  # the same job: no msg_id, no echo
    assert status == 201 and "in_reply_to" not in reply
    batch = {"jobs": [{**spec, "job_id": "echo-2"}], "msg_id": "b-1"}
    status, reply = svc.request("POST", "/v1/jobs/batch", batch)
    assert status == 201 and reply["type"] == "jobs_scheduled" and reply["in_reply_to"] == "b-1"
    status, reply = svc.request("POST", "/v1/jobs/echo/pause", {"msg_id": [7]})
    assert status == 200 and reply == {"type": "job_paused", "job_id": "echo", "in_reply_to": [7]}
    status, reply = svc.request("POST", "/v1/jobs/echo/pause", {"msg_id": 8})  # errors too
    assert status == 409 and error(reply, 22) and reply["in_reply_to"] == 8
    status, reply = svc.request("POST", "/v1/jobs", {"task": "no-such-task", "msg_id": 9})
    assert status == 400 and error(reply, 12) and reply["in_reply_to"] == 9


def test_actions_and_cancel(svc: Service) -> None:
    body = {"task": "ok", "delay_ms": 3_600_000, "job_id": "act"}
    assert svc.request("POST", "/v1/jobs", body)[0] == 201
    assert svc.request("POST", "/v1/jobs/act/pause") == (
        200,
        {"type": "job_paused", "job_id": "act"},
    )
    status, reply = svc.request("POST", "/v1/jobs/act/pause")
    assert status == 409 and error(reply, 22)
    status, reply = svc.request("POST", "/v1/jobs/act/resume")
    assert status == 200 and reply["type"] == "job_resumed"
    status, reply = svc.request("POST", "/v1/jobs/act/retry")
    assert status == 409 and error(reply, 22)
    assert svc.request("POST", "/v1/jobs/act/run") == (
        200,
        {"type": "job_executed", "job_id": "act"},
    )
    assert wait_state(svc, "act", "completed")["runs"] == 1
    status, reply = svc.request("DELETE", "/v1/jobs/act")
    assert status == 409 and error(reply, 22)
    body = {"task": "ok", "delay_ms": 3_600_000, "job_id": "gone"}
    assert svc.request("POST", "/v1/jobs", body)[0] == 201
    assert svc.request("DELETE", "/v1/jobs/gone") == (
        200,
        {"type": "job_cancelled", "job_id": "gone"},
    )
    status, reply = svc.request("POST", "/v1/jobs/missing/run")
    assert status == 404 and error(reply, 20)


def test_a_dead_job_is_retried_through_the_route(svc: Service) -> None:
    body = {"task": "boom", "job_id": "dies", "max_attempts": 1}
    assert svc.request("POST", "/v1/jobs", body)[0] == 201
    job = wait_state(svc, "dies", "dead")
    assert job["last_error"] == "RuntimeError: boom"
    assert job["recent_runs"][0]["outcome"] == "failed"
    status, reply = svc.request("POST", "/v1/jobs/dies/retry")
    assert status == 200 and reply["type"] == "job_requeued"


# -- the protocol over HTTP -----------------------------------------------------------


def test_messages_route_speaks_the_protocol(svc: Service) -> None:
    status, reply = svc.request("POST", "/v1/messages", {"type": "stats", "msg_id": 7})
    assert status == 200 and reply["type"] == "stats" and reply["in_reply_to"] == 7
    envelope = {
        "src": "c1",
        "dest": "sched",
        "body": {"type": "get_job", "msg_id": 8, "job_id": "nope"},
    }
    status, reply = svc.request("POST", "/v1/messages", envelope)
    assert status == 404 and reply["src"] == "sched" and reply["dest"] == "c1"
    assert reply["body"]["code"] == 20 and reply["body"]["in_reply_to"] == 8
    status, reply = svc.request("POST", "/v1/messages", {"type": "frobnicate"})
    assert status == 400 and error(reply, 10)
    body = {"type": "schedule_job", "task": "ok", "delay_ms": 3_600_000, "job_id": "m1"}
    assert svc.request("POST", "/v1/messages", body)[0] == 200
    run = {"type": "execute_job", "job_id": "m1", "force_fail": True}
    status, reply = svc.request("POST", "/v1/messages", run)
    assert (status, reply["type"], reply["retry_scheduled"]) == (200, "job_failed", True)


# -- real-time running and metrics ----------------------------------------------------


def _metrics(svc: Service) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    status, text = svc.request("GET", "/metrics")
    assert status == 200
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return out


def test_due_jobs_run_by_themselves_and_metrics_count_them(svc: Service) -> None:
    assert svc.request("POST", "/v1/jobs", {"task": "ok", "job_id": "now"})[0] == 201
    assert (
        svc.request("POST", "/v1/jobs", {"task": "ok", "job_id": "soon", "delay_ms": 50})[0] == 201
    )
    assert svc.request("POST", "/v1/jobs", {"task": "boom", "job_id": "b", "base_ms": 0})[0] == 201
    wait_state(svc, "now", "completed")
    wait_state(svc, "soon", "completed")
    m = _metrics(svc)
    q = ("queue", "default")  # every run family has a sample per queue (docs/queues.md)
    assert m["jobsched_runs_total"][(("outcome", "succeeded"), q)] >= 2
    assert m["jobsched_run_failures_total"][(q,)] >= 1
    assert m["jobsched_retries_total"][(q,)] >= 1
    assert m["jobsched_jobs"][(("state", "completed"),)] >= 2
    assert set(dict(k)["state"] for k in m["jobsched_jobs"]) >= {"scheduled", "running", "dead"}
    assert (q,) in m["jobsched_skipped_occurrences_total"]
    assert (q,) in m["jobsched_running"]
    count = m["jobsched_dispatch_lateness_seconds_count"][(q,)]
    assert (
        count >= 3 and m["jobsched_dispatch_lateness_seconds_bucket"][(("le", "+Inf"), q)] == count
    )


def wait_for_file(path: Path) -> None:
    """Until a handler wrote ``path`` (its first step), within BOUND_S."""
    deadline = time.monotonic() + BOUND_S
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(0.02)


def test_sigterm_mid_run_then_restart_runs_the_job_again(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    first = Service(tmp_path, "--grace", "0.2")
    try:
        body = {"task": "slow", "job_id": "long", "payload": {"marker": str(marker)}}
        assert first.request("POST", "/v1/jobs", body)[0] == 201
        wait_state(first, "long", "running")
        wait_for_file(marker)
    finally:
        assert first.stop() == 0
    assert marker.read_text() == "started\n"
    second = Service(tmp_path, "--grace", "0.2")
    try:
        job = wait_state(second, "long", "running")  # claimed again after the restart
        assert job["recent_runs"][0]["outcome"] == "lost"
        deadline = time.monotonic() + BOUND_S
        while marker.read_text().count("started") < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert marker.read_text() == "started\nstarted\n"
    finally:
        assert second.stop() == 0


def test_sigterm_mid_manual_run_puts_the_job_back_not_an_attempt(tmp_path: Path) -> None:
    """POST /v1/jobs/{id}/run (execute_job) cut off by a shutdown: the job is
    put back, as a dispatcher's run is, with a lost run record; it is not
    counted an attempt, so a max_attempts 1 job runs again."""
    from jobsched.stores.sqlite import SQLiteStore

    marker = tmp_path / "marker"
    service = Service(tmp_path, "--grace", "0.3")
    try:
        body = {"task": "slow", "job_id": "man", "delay_ms": 3_600_000, "max_attempts": 1,
                "payload": {"marker": str(marker)}}  # fmt: skip
        assert service.request("POST", "/v1/jobs", body)[0] == 201

        def run() -> None:
            with contextlib.suppress(OSError):  # the service stops before answering
                service.request("POST", "/v1/jobs/man/run")

        threading.Thread(target=run, daemon=True).start()
        wait_for_file(marker)
    finally:
        assert service.stop() == 0
    assert marker.read_text() == "started\n"
    store = SQLiteStore(service.db)
    try:
        job = store.get("man")
        assert job is not None and (job.state.value, job.attempts) == ("scheduled", 0)
        assert job.locked_by is None
        [run] = store.recent_runs("man")
        assert run.outcome == "lost" and "interrupted by shutdown" in (run.error or "")
    finally:
        store.close()


# -- start, and replies that cannot be encoded -------------------------------------------------


@pytest.mark.parametrize("flag", [["--token", ""], ["--token", " \t"], []])
def test_a_blank_token_is_refused_at_start(tmp_path: Path, flag: list[str]) -> None:
    """A blank token would silently turn authentication off."""
    env = {**os.environ, "JOBSCHED_TOKEN": "" if not flag else TOKEN}
    args = [sys.executable, "-m", "jobsched", "serve", "--db", str(tmp_path / "j.db")]
    args += ["--listen", "127.0.0.1:0", *flag]
    proc = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=10)
    assert proc.returncode == 2, proc.stderr
    assert "token" in proc.stderr and "empty" in proc.stderr, proc.stderr


def test_numbers_json_cannot_echo_back_are_refused_and_change_nothing(svc: Service) -> None:
    """1e400 would decode to infinity, which no reply (in_reply_to) can carry:
    it was a 500, for a schedule_job whose job had been saved."""
    for text in [
        '{"type": "stats", "msg_id": 1e400}',
        '{"type": "schedule_job", "msg_id": 1e400, "task": "ok", "job_id": "inf", "delay_ms": 9}',
        '{"src": -1e400, "dest": "s", "body": {"type": "schedule_job", "task": "ok", '
        '"job_id": "inf", "delay_ms": 9}}',
    ]:
        status, reply = svc.request("POST", "/v1/messages", text.encode())
        assert status == 400 and error(reply, 12), (text, reply)
    status, reply = svc.request("GET", "/v1/jobs/inf")
    assert status == 404 and error(reply, 20)


@pytest.mark.parametrize(
    "raw",
    [
        b'{"task": "t", "payload": ' + b"[" * 900 + b"]" * 900 + b"}",
        b'{"task": "t", "payload": NaN}',
        b'{"task": "t", "delay_ms": 1e400}',
        b'{"task": "t", "payload": "\xff\xfe"}',
    ],
    ids=["nested-900", "nan", "1e400", "not-utf8"],
)
def test_a_body_the_protocol_cannot_hold_is_400_and_stores_nothing(
    svc: Service, raw: bytes
) -> None:
    _, before = svc.request("POST", "/v1/messages", {"type": "stats"})
    status, reply = svc.request("POST", "/v1/jobs", raw)
    assert status == 400 and reply["code"] == 12, (status, reply)
    _, after = svc.request("POST", "/v1/messages", {"type": "stats"})
    assert after["total"] == before["total"]


# -- a decoded body handed over as it is ----------------------------------------------

NEST = [b"[" * n + b"]" * n for n in (62, 63, 64, 65)]
ROUTED = [
    *[("POST", "/v1/jobs", b'{"task": "t", "payload": ' + deep + b"}") for deep in NEST],
    *[("POST", "/v1/jobs/batch", b'[{"task": "t", "payload": ' + deep + b"}]") for deep in NEST],
    ("POST", "/v1/jobs/batch", b'{"jobs": [{"task": "t", "payload": ' + NEST[1] + b"}]}"),
    ("POST", "/v1/jobs", b'{"task": "t", "job_id": "a", "delay_ms": 1000, "msg_id": 5}'),
    ("POST", "/v1/jobs", b'{"task": "t", "job_id": "a", "delay_ms": 2000}'),
    ("POST", "/v1/jobs", b'{"task": "t", "body": {"type": "get_job", "job_id": "a"}}'),
    ("POST", "/v1/jobs", b'{"task": "t", "type": "cancel_job", "payload": "[[{{\\ud800"}'),
    ("POST", "/v1/jobs", b'{"task": "t", "cron": "61 * * * *"}'),
    ("POST", "/v1/jobs/a/pause", b'{"x": ' + b"[" * 70 + b"]" * 70 + b"}"),
    ("POST", "/v1/jobs/a/resume", b""),
    ("GET", "/v1/jobs/a", b""),
    ("GET", "/v1/jobs?state=paused&limit=x", b""),
    ("PUT", "/v1/queues/q1", b'{"concurrency": 2}'),
    ("DELETE", "/v1/jobs/a", b""),
]


def _routed(fields_as_line: bool, monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, Any]]:
    from jobsched import server
    from jobsched.engine import Engine
    from jobsched.messages import Context
    from jobsched.registry import TaskRegistry
    from jobsched.stores.memory import MemoryStore

    if fields_as_line:  # every body takes the line: encoded and decoded again
        monkeypatch.setattr(server, "may_be_too_deep", lambda text, limit: True)
    clock = lambda: 1_705_309_200_000  # noqa: E731 (one instant: the answers compare whole)
    service = server.Service(Context(Engine(MemoryStore(), TaskRegistry()), clock))
    out = []
    for method, target, body in ROUTED:
        response = service.handle(method, target, None, body)
        assert response is not None
        reply = json.loads(response.body)
        for key in ("job_id", "scheduled_at", "jobs", "job"):  # generated, or timed
            if isinstance(reply, dict) and key in reply:
                reply[key] = type(reply[key]).__name__
        out.append((response.status, reply))
    return out


def test_a_decoded_body_answers_as_its_line_would(monkeypatch: pytest.MonkeyPatch) -> None:
    """Routes hand a body they decoded to the protocol as it is, unless it may
    be deep enough for the depth check or carries "body": the same answers."""
    direct = _routed(False, monkeypatch)
    assert direct == _routed(True, monkeypatch)
    assert [status for status, _ in direct[:4]] == [201, 201, 201, 400]  # 65 deep: refused
    assert [status for status, _ in direct[4:8]] == [201, 400, 400, 400]  # wrapped: one more


@pytest.mark.parametrize("flag", ["", "--noop-tasks", "--allow-any-task"])
def test_noop_tasks_lets_serve_without_handlers_run_any_task_as_a_no_op(
    tmp_path: Path, flag: str
) -> None:
    # A task module that registers nothing: only the flag decides.
    service = Service(tmp_path, *([flag] if flag else []), db="", tasks_text="")
    try:
        status, reply = service.request("POST", "/v1/jobs", {"task": "no-such-task"})
        if not flag:
            assert status == 400 and error(reply, 12).startswith("task: no handler"), reply
        else:
            assert status == 201 and reply["type"] == "job_scheduled", reply
    finally:
        service.stop()
