"""Queues through ``jobsched.Client`` (SQLite, PostgreSQL, a real service) and
the service's own routes ``GET /v1/queues`` and ``PUT /v1/queues/{name}``,
checked against the OpenAPI document the service serves.

The service is shared by the module's tests and runs due jobs in real time, so
every job here is due far in the future and every queue is named per test."""

from __future__ import annotations

import asyncio
import json
import socket
import uuid
from collections.abc import Iterator
from dataclasses import FrozenInstanceError
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from jobsched.client import Client
from jobsched.client_async import AsyncClient
from jobsched.client_types import JobState, QueueConfig, QueueInfo, RateLimit
from jobsched.errors import Malformed
from jobsched.openapi import document
from tests.backend_postgres import base_dsn, fresh_schema, with_schema
from tests.test_server_http import TOKEN, Service

LATER = datetime(2031, 3, 1, 12, 30, tzinfo=UTC)


@pytest.fixture(scope="module")
def svc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    s = Service(tmp_path_factory.mktemp("queues"), "--grace", "1")
    yield s
    assert s.stop() == 0, "".join(s.log)


@pytest.fixture(params=("sqlite", "postgres", "http"))
def client(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Client]:
    if request.param == "sqlite":
        c = Client(tmp_path / "jobs.db")
    elif request.param == "postgres":
        with fresh_schema() as schema:
            c = Client(with_schema(base_dsn(), schema))
            yield c
            c.close()
            return
    else:
        c = Client(request.getfixturevalue("svc").url, token=TOKEN)
    yield c
    c.close()


@pytest.fixture
def q() -> str:
    return f"q{uuid.uuid4().hex[:10]}"


def _queue(client: Client, name: str) -> QueueInfo:
    (info,) = [info for info in client.list_queues() if info.name == name]
    return info


def test_configure_queue_sets_keeps_and_removes_limits(client: Client, q: str) -> None:
    both = client.configure_queue(q, concurrency=2, rate_limit=(5, 1000))
    assert both == QueueConfig(q, 2, RateLimit(5, 1000), paused=False)
    # Left out: kept. None: removed.
    assert client.configure_queue(q, paused=True) == QueueConfig(q, 2, RateLimit(5, 1000), True)
    assert client.configure_queue(q, rate_limit=RateLimit(7, 60_000)).rate_limit == RateLimit(
        7, 60_000
    )
    cleared = client.configure_queue(q, concurrency=None, rate_limit=None, paused=False)
    assert cleared == QueueConfig(q, None, None, False)
    with pytest.raises(FrozenInstanceError):
        cleared.concurrency = 3  # type: ignore[misc]
    with pytest.raises(Malformed) as bad:
        client.configure_queue(q, concurrency=0)
    assert bad.value.field == "concurrency" and bad.value.code == 12
    assert _queue(client, q).config == cleared  # the refused change changed nothing


def test_list_queues_counts_jobs_and_unique_keys_answer_the_holder(client: Client, q: str) -> None:
    client.configure_queue(q, concurrency=3)
    first = client.schedule("ok", run_at=LATER, queue=q, priority=4, unique_key=f"{q}-k")
    again = client.schedule("ok", run_at=LATER, queue=q, unique_key=f"{q}-k")
    assert not first.duplicate and again.duplicate and again.job_id == first.job_id
    client.schedule("ok", run_at=LATER, queue=q)
    job = client.get(first.job_id)
    assert (job.queue, job.priority, job.unique_key) == (q, 4, f"{q}-k")
    info = _queue(client, q)
    assert info.config == QueueConfig(q, 3, None, False)
    assert info.counts[JobState.SCHEDULED] == 2 and info.running == 0
    assert set(info.counts) == set(JobState)
    # A queue with jobs and no settings is listed too, unlimited.
    client.schedule("ok", run_at=LATER, queue=f"{q}-plain")
    assert _queue(client, f"{q}-plain").config == QueueConfig(f"{q}-plain", None, None, False)


def test_get_jobs_filters_by_queue(svc: Service, q: str) -> None:
    with Client(svc.url, token=TOKEN) as client:
        mine = [client.schedule("ok", run_at=LATER, queue=q).job_id for _ in range(3)]
        client.schedule("ok", run_at=LATER, queue=f"{q}-other")
    status, reply = svc.request("GET", f"/v1/jobs?queue={q}&limit=2")
    assert status == 200 and [j["job_id"] for j in reply["jobs"]] == mine[:2]
    status, reply = svc.request("GET", f"/v1/jobs?queue={q}&after={mine[1]}")
    assert status == 200 and [j["job_id"] for j in reply["jobs"]] == mine[2:]


def test_async_client_has_the_queue_methods(svc: Service, q: str) -> None:
    async def run() -> tuple[QueueConfig, list[QueueInfo]]:
        async with AsyncClient(svc.url, token=TOKEN) as client:
            return await client.configure_queue(q, paused=True), await client.list_queues()

    config, listed = asyncio.run(run())
    assert config == QueueConfig(q, None, None, True)
    assert [info.config for info in listed if info.name == q] == [config]


def _check(path: str, method: str, status: int, body: Any) -> None:
    doc = document()
    responses = doc["paths"][path][method.lower()]["responses"]
    assert str(status) in responses, f"{method} {path}: status {status} is not documented"
    schema = responses[str(status)]["content"]["application/json"]["schema"]
    jsonschema.validate(body, {**schema, "components": doc["components"]})


def test_the_queue_routes_speak_the_protocol_and_match_the_document(svc: Service, q: str) -> None:
    put = {"concurrency": 4, "rate_limit": {"max": 10, "per_ms": 1000}}
    status, reply = svc.request("PUT", f"/v1/queues/{q}", put)
    assert status == 200 and reply == {
        "type": "queue_configured", "queue": {"queue": q, "concurrency": 4,
        "rate_limit": {"max": 10, "per_ms": 1000}, "paused": False},
    }  # fmt: skip
    _check("/v1/queues/{name}", "PUT", status, reply)
    status, reply = svc.request("PUT", f"/v1/queues/{q}", {"concurrency": None})
    assert status == 200 and reply["queue"]["concurrency"] is None
    assert reply["queue"]["rate_limit"]["max"] == 10
    status, listed = svc.request("GET", "/v1/queues")
    assert status == 200 and listed["type"] == "queues_listed"
    _check("/v1/queues", "GET", status, listed)
    (mine,) = [entry for entry in listed["queues"] if entry["queue"] == q]
    assert mine["concurrency"] is None and mine["running"] == 0
    for body, field in (({"concurrency": -1}, "concurrency"), (b"[1]", "body")):
        status, reply = svc.request("PUT", f"/v1/queues/{q}", body)
        assert status == 400 and reply["code"] == 12 and reply["text"].startswith(field)
        _check("/v1/queues/{name}", "PUT", status, reply)
    assert svc.request("POST", f"/v1/queues/{q}", put)[0] == 405
    assert svc.request("PUT", "/v1/queues", put)[0] == 405
    assert svc.request("GET", "/v1/queues", token="wrong")[0] == 401
    # The body cannot rename the queue: the path names it.
    status, reply = svc.request("PUT", f"/v1/queues/{q}", {"queue": "other", "paused": True})
    assert status == 200 and reply["queue"]["queue"] == q and reply["queue"]["paused"] is True


def _listed(svc: Service) -> set[str]:
    status, reply = svc.request("GET", "/v1/queues")
    assert status == 200
    return {entry["queue"] for entry in reply["queues"]}


@pytest.mark.parametrize("segment", ["%ff", "%zz", "a%2", "%c3%28", "%ed%a0%80", "x%FF%FEy"])
def test_a_queue_path_that_is_not_utf8_or_not_percent_encoded_is_400(
    svc: Service, segment: str
) -> None:
    """%ff configured a queue named U+FFFD, %zz one named "%zz": the path is
    decoded as strictly as a job's."""
    status, reply = svc.request("PUT", f"/v1/queues/{segment}", {"paused": True})
    assert status == 400 and reply["code"] == 12 and reply["text"].startswith("queue:"), reply
    _check("/v1/queues/{name}", "PUT", status, reply)
    assert not {"\ufffd", "%zz", "a%2"} & _listed(svc)
    assert not any("\ufffd" in name for name in _listed(svc))


def _raw_put(svc: Service, target: bytes, body: bytes) -> tuple[int, Any]:
    """A request line as the bytes given (urllib sends ASCII only)."""
    head = b"PUT " + target + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
    head += f"Authorization: Bearer {TOKEN}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
    with socket.create_connection(svc.address, timeout=10) as sock:
        sock.sendall(head + body)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    status_line, _, rest = data.partition(b"\r\n")
    return int(status_line.split()[1]), json.loads(rest.partition(b"\r\n\r\n")[2])


def test_a_queue_path_names_the_queue_its_utf8_bytes_spell(svc: Service, q: str) -> None:
    # Escaped or sent raw, the bytes of "é" name "é"; a raw byte that is no UTF-8 is 400.
    name = f"{q}-\u00e9t\u00e9"
    status, reply = svc.request("PUT", f"/v1/queues/{q}-%C3%A9t%c3%a9", {"concurrency": 3})
    assert status == 200 and reply["queue"]["queue"] == name, reply
    status, reply = _raw_put(svc, f"/v1/queues/{name}".encode(), b'{"paused": true}')
    assert status == 200 and reply["queue"] == {
        "queue": name, "concurrency": 3, "rate_limit": None, "paused": True,
    }  # fmt: skip
    status, reply = _raw_put(svc, b"/v1/queues/" + q.encode() + b"\xff", b"{}")
    assert status == 400 and reply["text"].startswith("queue:"), reply
    assert name in _listed(svc) and not any(n.startswith(q) and n != name for n in _listed(svc))


def test_configure_queue_echoes_a_msg_id(svc: Service, q: str) -> None:
    status, reply = svc.request("PUT", f"/v1/queues/{q}", {"paused": False, "msg_id": 41})
    assert status == 200 and reply["in_reply_to"] == 41 and reply["queue"]["queue"] == q
    _check("/v1/queues/{name}", "PUT", status, reply)  # the document allows it
    status, reply = svc.request("PUT", f"/v1/queues/{q}", {"concurrency": 0, "msg_id": "e"})
    assert status == 400 and reply["code"] == 12 and reply["in_reply_to"] == "e"
    status, reply = svc.request("PUT", f"/v1/queues/{q}", {"paused": False})
    assert status == 200 and "in_reply_to" not in reply
