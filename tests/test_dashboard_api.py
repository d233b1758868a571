"""The dashboard's HTTP side against a real ``jobsched serve``: the pages'
headers, sign-in sessions and the cookie rules (Origin for changes, read-only
mode, bearer calls unchanged), and the JSON routes the pages read
(overview, upcoming, failures, cron explain, queues, jobs by queue)."""

from __future__ import annotations

import http.client
import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from jobsched.cli import open_store
from jobsched.engine import Engine
from jobsched.jobs import FINAL_STATES, ONCE, Job, JobState
from jobsched.web.cache import Cheapest
from jobsched.web.events import EventHub
from jobsched.web.queries import Queries
from jobsched.web.sqlread import open_reader
from tests.backend_postgres import base_dsn, fresh_schema, with_schema
from tests.test_server_http import TOKEN, Service, wait_state

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'"
)


def call(
    svc: Service, method: str, path: str, body: Any = None, **headers: str
) -> tuple[int, dict[str, str], Any]:
    """One request with exactly these headers (``Origin``, ``Cookie``, ...)."""
    host, port = svc.address
    conn = http.client.HTTPConnection(host, port, timeout=10)
    data = None if body is None else json.dumps(body).encode()
    conn.request(
        method, path, body=data, headers={k.replace("_", "-"): v for k, v in headers.items()}
    )
    response = conn.getresponse()
    raw = response.read()
    conn.close()
    heads = {k.lower(): v for k, v in response.getheaders()}
    ctype = heads.get("content-type", "")
    return response.status, heads, json.loads(raw) if ctype.startswith("application/json") else raw


_popen = subprocess.Popen


def tokenless(tmp: Path, *extra: str) -> Service:
    """The test service with JOBSCHED_TOKEN unset: no token at all."""

    def popen(args: Any, **kw: Any) -> Any:
        kw["env"] = {k: v for k, v in kw["env"].items() if k != "JOBSCHED_TOKEN"}
        return _popen(args, **kw)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(subprocess, "Popen", popen)
        return Service(tmp, *extra, db="")


@pytest.fixture(scope="module")
def svc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    s = Service(tmp_path_factory.mktemp("dash"))
    yield s
    assert s.stop() == 0


def origin(svc: Service) -> str:
    return svc.url  # http://127.0.0.1:PORT, which is also what Host names


def signed_in(svc: Service) -> str:
    """A session cookie ("name=value"), from the sign-in route."""
    host = svc.url.removeprefix("http://")
    status, heads, body = call(
        svc, "POST", "/v1/session", {"token": TOKEN}, Origin=origin(svc), Host=host
    )
    assert status == 200 and body == {"signed_in": True}
    return heads["set-cookie"].split(";")[0]


def test_pages_carry_the_security_headers(svc: Service) -> None:
    status, heads, body = call(svc, "GET", "/")
    assert status == 200 and heads["content-type"] == "text/html; charset=utf-8"
    assert heads["content-security-policy"].startswith(CSP)
    assert heads["x-content-type-options"] == "nosniff"
    assert b"<script" in body and b'type="module" src="/ui/app.js"' in body
    assert b"<script>" not in body and b"style=" not in body  # nothing inline for the CSP to allow
    status, heads, _ = call(svc, "GET", "/ui/pages/job.js")
    assert status == 200 and heads["content-type"] == "text/javascript; charset=utf-8"
    for missing in ("/ui/nope.js", "/ui/../server.py", "/ui/", "/ui/pages"):
        assert call(svc, "GET", missing)[0] == 404, missing
    assert call(svc, "POST", "/")[0] == 405


def test_sign_in_gives_a_cookie_and_never_takes_the_token_from_elsewhere(svc: Service) -> None:
    assert call(svc, "GET", "/v1/session")[2] == {
        "signed_in": False, "token_required": True, "read_only": False
    }  # fmt: skip
    host = svc.url.removeprefix("http://")
    wrong = call(svc, "POST", "/v1/session", {"token": "nope"}, Origin=origin(svc), Host=host)
    assert wrong[0] == 401 and "set-cookie" not in wrong[1]
    # Sign-in is a change too: from this service's own page only.
    assert call(svc, "POST", "/v1/session", {"token": TOKEN}, Host=host)[0] == 403
    evil = call(
        svc, "POST", "/v1/session", {"token": TOKEN}, Origin="http://evil.example", Host=host
    )
    assert evil[0] == 403
    status, heads, _ = call(
        svc, "POST", "/v1/session", {"token": TOKEN}, Origin=origin(svc), Host=host
    )
    assert status == 200
    cookie = heads["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie
    assert TOKEN not in cookie
    session = cookie.split(";")[0]
    assert call(svc, "GET", "/v1/session", Cookie=session)[2]["signed_in"] is True
    assert call(svc, "GET", "/v1/jobs", Cookie=session)[0] == 200
    assert call(svc, "GET", "/v1/jobs", Cookie="jobsched_session=made-up")[0] == 401
    assert (
        call(svc, "DELETE", "/v1/session", Cookie=session, Origin=origin(svc), Host=host)[0] == 200
    )
    assert call(svc, "GET", "/v1/jobs", Cookie=session)[0] == 401  # gone server-side


def test_changes_made_with_the_cookie_must_come_from_this_origin(svc: Service) -> None:
    session, host = signed_in(svc), svc.url.removeprefix("http://")
    job = {"task": "ok", "delay_ms": 3_600_000}
    assert call(svc, "POST", "/v1/jobs", job, Cookie=session, Host=host)[0] == 403
    bad = call(
        svc, "POST", "/v1/jobs", job, Cookie=session, Host=host, Origin="http://evil.example"
    )
    assert bad[0] == 403 and "Origin" in bad[2]["text"]
    status, _, reply = call(
        svc, "POST", "/v1/jobs", job, Cookie=session, Host=host, Origin=origin(svc)
    )
    assert status == 201
    path = f"/v1/jobs/{reply['job_id']}/pause"
    assert call(svc, "POST", path, Cookie=session, Host=host, Origin="null")[0] == 403
    # A bearer-token call is not a browser's: no Origin needed, as before.
    assert call(svc, "POST", path, Authorization=f"Bearer {TOKEN}")[0] == 200


def test_wrong_tokens_are_slowed_down(tmp_path: Path) -> None:
    svc = Service(tmp_path, db="")
    try:
        host = svc.url.removeprefix("http://")
        statuses = [
            call(svc, "POST", "/v1/session", {"token": f"guess{i}"}, Origin=origin(svc), Host=host)[
                0
            ]
            for i in range(12)
        ]
        assert statuses[:10] == [401] * 10 and statuses[10:] == [429, 429]
    finally:
        assert svc.stop() == 0


def test_without_a_token_browsers_from_elsewhere_and_read_only_mode_are_refused(
    tmp_path: Path,
) -> None:
    svc = tokenless(tmp_path, "--read-only-ui")
    try:
        host = svc.url.removeprefix("http://")
        assert call(svc, "GET", "/v1/session")[2] == {
            "signed_in": True, "token_required": False, "read_only": True
        }  # fmt: skip
        job = {"task": "ok", "delay_ms": 1000}
        assert call(svc, "POST", "/v1/jobs", job, Host=host, Origin="http://evil.example")[0] == 403
        refused = call(svc, "POST", "/v1/jobs", job, Host=host, Origin=origin(svc))
        assert refused[0] == 403 and "read-only" in refused[2]["text"]
        assert call(svc, "POST", "/v1/jobs", job)[0] == 201  # a script (no Origin) still can
        assert call(svc, "GET", "/v1/dashboard/overview", Host=host, Origin=origin(svc))[0] == 200
        queue = "/v1/queues/mail"
        assert call(svc, "PUT", queue, {"paused": True}, Host=host, Origin=origin(svc))[0] == 403
        assert call(svc, "PUT", queue, {"concurrency": 1})[0] == 200  # a script still can
        # The memory store's queues and jobs by queue, read through the engine.
        queues = call(svc, "GET", "/v1/dashboard/queues", Host=host, Origin=origin(svc))[2]
        assert queues == {
            "queues": call(svc, "GET", "/v1/queues")[2]["queues"],
            "counted_s_ago": 0.0,
        }
        (mail,) = [q for q in queues["queues"] if q["queue"] == "mail"]
        assert mail["concurrency"] == 1 and mail["paused"] is False
        call(svc, "POST", "/v1/jobs", {**job, "queue": "mail"})
        listed = call(svc, "GET", "/v1/jobs?queue=mail")[2]["jobs"]
        assert [j["queue"] for j in listed] == ["mail"]
    finally:
        assert svc.stop() == 0


# -- what the pages read ---------------------------------------------------------------------


def test_cron_explain_in_words_with_offset_changes(svc: Service) -> None:
    status, _, reply = call(
        svc, "GET", "/v1/cron/explain?expr=0+9+*+*+MON-FRI&tz=Europe/London&n=3",
        Authorization=f"Bearer {TOKEN}",
    )  # fmt: skip
    assert status == 200 and reply["valid"]
    assert reply["text"] == "At 09:00, Monday through Friday, Europe/London"
    assert len(reply["occurrences"]) == 3
    assert all(
        o["local"].split()[0] in ("Mon", "Tue", "Wed", "Thu", "Fri") for o in reply["occurrences"]
    )
    bad = call(svc, "GET", "/v1/cron/explain?expr=61+*+*+*+*", Authorization=f"Bearer {TOKEN}")[2]
    assert bad == {
        "valid": False,
        "field": "cron.minute",
        "error": "cron.minute: '61' is out of range 0-59",
    }
    assert (
        call(svc, "GET", "/v1/cron/explain?expr=*+*+*+*+*&n=0", Authorization=f"Bearer {TOKEN}")[0]
        == 400
    )
    assert call(svc, "GET", "/v1/cron/explain?expr=*+*+*+*+*")[0] == 401


def test_upcoming_expands_recurring_jobs_in_time_order_and_says_when_capped(svc: Service) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    _, _, every = call(svc, "POST", "/v1/jobs", {"task": "ok", "interval_ms": 3_600_000}, **auth)
    _, _, later = call(svc, "POST", "/v1/jobs", {"task": "ok", "delay_ms": 5_400_000}, **auth)
    paused = call(svc, "POST", "/v1/jobs", {"task": "ok", "delay_ms": 60_000}, **auth)[2]["job_id"]
    call(svc, "POST", f"/v1/jobs/{paused}/pause", **auth)
    status, _, reply = call(svc, "GET", "/v1/dashboard/upcoming?hours=24&limit=1000", **auth)
    assert status == 200 and reply["capped"] is False
    mine = [r for r in reply["runs"] if r["job_id"] in (every["job_id"], later["job_id"])]
    assert [r["kind"] for r in mine[:3]] == ["interval", "once", "interval"]
    assert sum(r["job_id"] == every["job_id"] for r in reply["runs"]) == 24
    assert all(r["job_id"] != paused for r in reply["runs"])  # a paused job does not run
    times = [r["at"] for r in reply["runs"]]
    assert times == sorted(times)
    _, _, capped = call(svc, "GET", "/v1/dashboard/upcoming?hours=24&limit=5", **auth)
    assert capped["capped"] is True and capped["runs"] == reply["runs"][:5]
    assert call(svc, "GET", "/v1/dashboard/upcoming?hours=nan", **auth)[0] == 400
    # The query is read as the API's is (http_conn.query_fields): an empty
    # number is no number, and bad UTF-8 or a stray "%" is refused, not guessed.
    for query, field in (("hours=", "hours"), ("limit=%ff", "limit"), ("hours=1%", "hours")):
        status, _, reply = call(svc, "GET", f"/v1/dashboard/upcoming?{query}", **auth)
        assert status == 400 and reply["code"] == 12 and reply["text"].startswith(field), reply
    cron = "/v1/cron/explain?expr=%E2%80%A6&tz=Europe%2FLondon"  # "…", escaped
    assert call(svc, "GET", cron, **auth)[2]["error"].startswith("cron")


def test_failures_and_the_overview(svc: Service) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    _, _, dead = call(svc, "POST", "/v1/jobs", {"task": "boom", "max_attempts": 1}, **auth)
    wait_state(svc, dead["job_id"], "dead")
    _, _, failures = call(svc, "GET", "/v1/dashboard/failures", **auth)
    newest = failures["jobs"][0]
    assert newest["job_id"] == dead["job_id"] and newest["last_error"] == "RuntimeError: boom"
    assert newest["state"] == "dead" and newest["attempts"] == 1
    # The first overview of this service: its counts are computed now (then cached 2 s).
    status, _, overview = call(svc, "GET", "/v1/dashboard/overview", **auth)
    assert status == 200 and overview["jobs"]["dead"] >= 1
    assert overview["total"] == sum(overview["jobs"].values())
    assert len(overview["runs_per_minute"]) == 61 and overview["runs_from"] == "the store"
    assert sum(m["failures"] for m in overview["runs_per_minute"]) >= 1
    assert overview["lateness"]["count"] >= 1 and overview["nodes"] is None


# -- queues ----------------------------------------------------------------------------------

# A queue's name is user input: markup, quotes, a slash and a space are all allowed.
ODD_QUEUE = 'mail <b>"x"</b>/eu'


def test_jobs_by_queue_and_the_queues_settings_now_with_counts_cached(svc: Service) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    path = f"/v1/queues/{quote(ODD_QUEUE, safe='')}"
    limits = {"concurrency": 2, "rate_limit": {"max": 5, "per_ms": 1000}}
    assert call(svc, "PUT", path, limits, **auth)[0] == 200
    spec = {"task": "ok", "delay_ms": 3_600_000, "queue": ODD_QUEUE, "priority": 3}
    _, _, mine = call(svc, "POST", "/v1/jobs", {**spec, "unique_key": "report-1"}, **auth)
    call(svc, "POST", "/v1/jobs", {"task": "ok", "delay_ms": 3_600_000}, **auth)  # default queue
    q = quote(ODD_QUEUE)
    status, _, listed = call(svc, "GET", f"/v1/jobs?queue={q}&state=scheduled", **auth)
    assert status == 200 and listed["type"] == "jobs_listed" and listed["next"] is None
    assert [(j["job_id"], j["queue"], j["priority"], j["unique_key"]) for j in listed["jobs"]] == [
        (mine["job_id"], ODD_QUEUE, 3, "report-1")
    ]
    assert call(svc, "GET", f"/v1/jobs?queue={q}&state=dead", **auth)[2]["jobs"] == []
    for bad in ("queue=" + "q" * 256, "queue=%07", "state=sleeping", "limit=0", "limit=x"):
        assert call(svc, "GET", f"/v1/jobs?{bad}", **auth)[0] == 400, bad
    assert call(svc, "GET", f"/v1/jobs?queue={q}")[0] == 401
    assert call(svc, "GET", "/v1/jobs?after=no-such-job&limit=5", **auth)[0] == 404

    status, _, page = call(svc, "GET", "/v1/dashboard/queues", **auth)
    assert status == 200 and page["counted_s_ago"] >= 0
    listed_queues = call(svc, "GET", "/v1/queues", **auth)[2]["queues"]
    assert page["queues"] == listed_queues  # the same queues as list_queues, in the same shape
    (odd,) = [x for x in page["queues"] if x["queue"] == ODD_QUEUE]
    assert odd["concurrency"] == 2 and odd["rate_limit"] == {"max": 5, "per_ms": 1000}
    assert odd["jobs"]["scheduled"] == 1 and odd["running"] == 0 and odd["paused"] is False
    # A pause shows at once; the counts are those counted before (kept 5 s).
    session, host = signed_in(svc), svc.url.removeprefix("http://")
    paused = {"paused": True}
    assert call(svc, "PUT", path, paused, Cookie=session, Host=host)[0] == 403  # no Origin
    status, _, reply = call(svc, "PUT", path, paused, Cookie=session, Host=host, Origin=origin(svc))
    assert status == 200 and reply["queue"]["paused"] is True
    call(svc, "POST", "/v1/jobs", spec, **auth)
    _, _, again = call(svc, "GET", "/v1/dashboard/queues", Cookie=session)
    (odd,) = [x for x in again["queues"] if x["queue"] == ODD_QUEUE]
    assert odd["paused"] is True and odd["concurrency"] == 2
    assert odd["jobs"]["scheduled"] == 1


def test_counts_are_taken_the_way_measured_fastest_and_the_other_is_measured_again() -> None:
    delay = {"index": 0.0, "scan": 0.02}
    ways = {name: (lambda name=name: time.sleep(delay[name]) or name) for name in delay}
    cheapest = Cheapest(ways, remeasure=5)
    picked = [cheapest() for _ in range(10)]
    # Each tried once, then the faster; every 5th call the one measured longest ago.
    assert picked == [
        "index",
        "scan",
        "index",
        "index",
        "scan",
        "index",
        "index",
        "index",
        "index",
        "scan",
    ]
    # The index gets slow (a stale visibility map): once measured so, the scan takes over.
    delay["index"] = 0.04
    assert [cheapest() for _ in range(5)] == ["index", "scan", "scan", "scan", "index"]
    assert [cheapest() for _ in range(3)] == ["scan", "scan", "scan"]


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_each_way_of_counting_agrees_with_the_store(tmp_path: Path, kind: str) -> None:
    """Counts by state and by queue and state, each way, against the store's own."""
    with fresh_schema() as schema:
        db = str(tmp_path / "c.db") if kind == "sqlite" else with_schema(base_dsn(), schema)
        store = open_store(db)
        jobs = [
            Job(
                job_id=f"j{i}",
                task="t",
                payload_json="{}",
                schedule=ONCE,
                state=state,
                due_at=None if state in FINAL_STATES else 1000,
                created_at=0,
                updated_at=0,
                queue=f"q{i % 3}",
                paused_from=JobState.SCHEDULED if state is JobState.PAUSED else None,
                locked_by="n" if state is JobState.RUNNING else None,
                locked_until=5000 if state is JobState.RUNNING else None,
            )
            for i, state in enumerate([*JobState] * 5 + [JobState.COMPLETED] * 7)
        ]
        store.insert_many(jobs)
        engine = Engine(store)
        readers = [open_reader(db), open_reader(db)]
        queries = Queries(engine, readers[0], EventHub(), readers[1])
        try:
            by_state = {k: v for k, v in engine.stats().items() if v}
            assert queries._count_by_index() == queries._count_by_scan() == by_state
            by_queue = {r.settings.name: dict(r.counts) for r in engine.queues()}
            assert by_queue["q0"][JobState.COMPLETED] == 3  # i = 18, 36, 39
            assert queries._queues_by_index() == queries._queues_by_scan() == by_queue
        finally:
            for reader in readers:
                assert reader is not None
                reader.close()
            store.close()
