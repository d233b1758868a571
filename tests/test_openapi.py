"""GET /v1/openapi.json: a valid OpenAPI 3.1 document describing every route,
and real responses of a real ``jobsched serve`` that match its schemas."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from openapi_spec_validator import validate

from jobsched.openapi import document
from jobsched.server import ACTIONS
from tests.test_server_http import Service

ROOT = Path(__file__).resolve().parent.parent
SOURCES = [ROOT / "jobsched" / "server.py", ROOT / "jobsched" / "web" / "routes.py"]
# Route prefixes matched with startswith: the document's path for each.
PREFIXES = {"/ui/": "/ui/{file}", "/v1/dashboard/": None, "/v1/cron/": None}


@pytest.fixture(scope="module")
def svc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    s = Service(tmp_path_factory.mktemp("openapi"), "--grace", "1")
    yield s
    assert s.stop() == 0


def routes_in_source() -> set[str]:
    """Every path the router compares with: literals, and the job routes' regexes."""
    found: set[str] = set()
    for source in SOURCES:
        text = source.read_text()
        found |= set(re.findall(r'path == "(/[^"]*)"', text))
        for group in re.findall(r"path in \(([^)]*)\)", text):
            found |= set(re.findall(r'"(/[^"]*)"', group))
        for group in re.findall(r"startswith\(\(?([^)]*)\)", text):
            for prefix in re.findall(r'"(/[^"]*)"', group):
                if PREFIXES.get(prefix, prefix):
                    found.add(PREFIXES.get(prefix, prefix) or prefix)
    found.add("/v1/jobs/{job_id}")
    found |= {f"/v1/jobs/{{job_id}}/{action}" for action in ACTIONS}
    return found


def test_the_document_is_valid_openapi_and_describes_every_route() -> None:
    doc = document()
    validate(doc)
    assert doc["openapi"].startswith("3.1")
    missing = routes_in_source() - set(doc["paths"])
    assert not missing, f"routes the OpenAPI document does not describe: {sorted(missing)}"
    assert len(routes_in_source()) > 15  # the extraction itself still finds the routes


def _check(doc: dict[str, Any], path: str, method: str, status: int, body: Any) -> None:
    responses = doc["paths"][path][method.lower()]["responses"]
    assert str(status) in responses, f"{method} {path}: status {status} is not documented"
    content = responses[str(status)]["content"]
    schema = content.get("application/json", {}).get("schema")
    if schema is None:
        assert isinstance(body, str)
        return
    jsonschema.validate(body, {**schema, "components": doc["components"]})


def test_real_responses_match_the_document(svc: Service) -> None:
    status, doc = svc.request("GET", "/v1/openapi.json")
    assert status == 200 and doc == document()
    job = {"task": "ok", "delay_ms": 3_600_000, "payload": {"n": 1}}
    status, one = svc.request("POST", "/v1/jobs", job)
    job_id = one["job_id"]
    calls: list[tuple[str, str, str, Any]] = [
        ("GET", "/healthz", "/healthz", None),
        ("GET", "/metrics", "/metrics", None),
        ("GET", "/v1/openapi.json", "/v1/openapi.json", None),
        ("POST", "/v1/jobs", "/v1/jobs", job),
        ("POST", "/v1/jobs", "/v1/jobs", {"task": "ok", "delay_ms": "soon"}),
        ("GET", "/v1/jobs?limit=5", "/v1/jobs", None),
        ("POST", "/v1/jobs/batch", "/v1/jobs/batch", [job, job]),
        ("POST", "/v1/jobs/batch", "/v1/jobs/batch", {"jobs": [job]}),
        ("POST", "/v1/jobs/batch", "/v1/jobs/batch", [job, {"task": "ok", "delay_ms": -1}]),
        ("GET", f"/v1/jobs/{job_id}", "/v1/jobs/{job_id}", None),
        ("GET", "/v1/jobs/nope", "/v1/jobs/{job_id}", None),
        ("POST", f"/v1/jobs/{job_id}/pause", "/v1/jobs/{job_id}/pause", None),
        ("POST", f"/v1/jobs/{job_id}/resume", "/v1/jobs/{job_id}/resume", None),
        ("POST", f"/v1/jobs/{job_id}/retry", "/v1/jobs/{job_id}/retry", None),
        ("POST", f"/v1/jobs/{job_id}/run", "/v1/jobs/{job_id}/run", None),
        ("DELETE", f"/v1/jobs/{job_id}", "/v1/jobs/{job_id}", None),
        ("POST", "/v1/messages", "/v1/messages", {"type": "get_stats"}),
        ("GET", "/v1/dashboard/overview", "/v1/dashboard/overview", None),
        ("GET", "/v1/dashboard/upcoming", "/v1/dashboard/upcoming", None),
        ("GET", "/v1/dashboard/failures", "/v1/dashboard/failures", None),
        ("GET", "/v1/cron/explain?expr=*+*+*+*+*", "/v1/cron/explain", None),
        ("GET", "/v1/session", "/v1/session", None),
    ]
    for method, target, path, body in calls:
        status, answer = svc.request(method, target, body)
        _check(doc, path, method, status, answer)
    status, answer = svc.request("GET", "/v1/jobs", token="wrong")
    _check(doc, "/v1/jobs", "GET", status, answer)


def test_a_batch_is_all_or_nothing_and_names_the_index(svc: Service) -> None:
    good = {"task": "ok", "delay_ms": 3_600_000}
    status, reply = svc.request("POST", "/v1/jobs/batch", [good, good])
    assert status == 201 and len(reply["jobs"]) == 2
    before = svc.request("GET", "/v1/jobs?limit=1000")[1]["jobs"]
    status, reply = svc.request("POST", "/v1/jobs/batch", [good, {"task": "ok", "delay_ms": -5}])
    assert status == 400 and reply["code"] == 12 and "jobs[1]" in reply["text"]
    assert svc.request("GET", "/v1/jobs?limit=1000")[1]["jobs"] == before
    status, reply = svc.request("POST", "/v1/jobs/batch", b"42")
    assert status == 400 and reply["code"] == 12
    assert svc.request("GET", "/v1/jobs/batch")[0] == 405
