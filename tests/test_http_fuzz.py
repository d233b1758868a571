"""Fuzz every HTTP route of ``jobsched serve``: arbitrary methods, targets
(percent-escapes, bad UTF-8, odd segments), query strings, headers and bodies
(any JSON, deep nesting, huge and non-finite numbers as raw text, invalid
UTF-8, bytes that are no JSON at all).

Properties (docs/service.md, "HTTP API"): every request gets one response;
its status is one the docs list for it, never a 500 (code 13 is "an
unexpected fault", a bug); a JSON route's body is valid JSON (no NaN), an
error is ``{"type": "error", "code": C, "text": "..."}`` with C matching the
status; an ``in_reply_to`` echoes the request's ``msg_id``; a request without
the token gets 401 unless its route is public; nothing a refused request (or
a GET) sent is stored; and the service keeps answering.

Most examples drive ``Service.handle`` in-process (a fresh memory-store
service per example, so examples do not depend on each other); fewer go over
a socket to one real ``python -m jobsched serve`` on SQLite, for the real
wiring (framing, auth header, group commit). The inputs the fuzz found to
break a property are pinned as tests of their own at the end (each failed
until its fix).
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlsplit

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jobsched.engine import Engine
from jobsched.http_conn import JSON, Response
from jobsched.messages import HANDLERS, Context
from jobsched.registry import TaskRegistry
from jobsched.server import Service
from jobsched.stores.memory import MemoryStore
from jobsched.web.dashboard import Dashboard
from jobsched.wire import handle as wire_handle
from tests.harness import T0, Clock
from tests.test_node_fuzz import json_values
from tests.test_server_http import TOKEN as SERVE_TOKEN
from tests.test_server_http import Service as ServeProcess

TOKEN = "fuzz-token"
HOST = "svc.example"

# Error codes each status may carry (docs/service.md's error table;
# dashboard.md for 429 on sign-in). 503 (code 11) is a store fault: none here.
CODES = {400: {10, 12}, 401: {12}, 403: {12}, 404: {10, 20}, 405: {10}, 409: {21, 22}, 429: {12}}
# Refused by the HTTP framing before a route sees the request (socket only).
FRAMING = {411: {12}, 413: {12}, 431: {12}, 505: {12}}
SUCCESS = {200, 201}

# -- what to send ---------------------------------------------------------------------

# The jobs every service starts with (SEED), and two it does not have.
IDS = ["j-sched", "j-paused", "j-cron", "j-dead", "j-done", "missing", "new-1"]
ODD_SEGMENTS = [
    "",
    "%ff",
    "%zz",
    "a%2",
    "%",
    "%c3%28",
    "%ed%a0%80",  # a surrogate, in UTF-8
    "%00",
    "%2F",
    "a%2Fb",
    "..",
    ".",
    "batch",
    "%62atch",
    "x" * 201,
    "\xe9",  # a raw non-ASCII byte of the request line (read as latin-1)
    "\xff",
    "j-sched%20",
    "+",
    "%25",
    "a;b",
    "a?b",
    "a#b",
    "%E2%82%AC",
    "j%2Dsched",
    "%F0%9F%92%A9",
]
# A request target's characters as they can arrive (parse_head reads the line
# as latin-1 and splits it at ASCII whitespace).
TARGET_CHARS = st.characters(max_codepoint=0xFF, blacklist_characters=" \t\n\r\x0b\x0c")
segments = st.one_of(
    st.sampled_from(IDS),
    st.sampled_from(IDS),
    st.sampled_from(IDS),
    st.sampled_from(ODD_SEGMENTS),
    st.text(TARGET_CHARS, max_size=12),
    st.text(max_size=8).map(lambda s: quote(s, safe="")),
    st.binary(max_size=6).map(lambda b: "".join(f"%{x:02X}" for x in b)),
)
ACTIONS = ["run", "pause", "resume", "retry"]
LIST_KEYS = ["state", "task", "queue", "after", "limit"]
DASH_KEYS = ["hours", "limit", "n", "expr", "tz", "last_event_id"]
NUMBERS = ["0", "1", "5", "24", "168", "169", "500", "1000", "1001", "-1", "1.5", "1_000",
           "nan", "inf", "-inf", "1e400", "0x10", "%C2%B2", "9" * 30, "9" * 4000]  # fmt: skip
# Each query field's values: the ones it takes, and the ones it should refuse.
QUERY_VALUES = {
    "state": ["scheduled", "paused", "dead", "completed", "cancelled", "retrying", "bogus"],
    "task": ["ok", "boom", "no-such-task"],
    "queue": ["default", "q1", "a+b", "x" * 300],
    "after": IDS,
    "limit": NUMBERS,
    "hours": NUMBERS,
    "n": NUMBERS,
    "last_event_id": NUMBERS,
    "expr": [
        "*+*+*+*+*",
        "0+0+1+1+*",
        "0+0+31+2+*",
        "0+0+29+2+*",
        "*/0+*+*+*+*",
        "@daily",
        "0+0+*+*+*+*",
        "L+L+L+L+L",
        "61+*+*+*+*",
        "*+*+*+*",
    ],
    "tz": [
        "UTC",
        "Europe/Berlin",
        "America/New_York",
        "Mars/Olympus",
        "..%2F..%2Fetc%2Fpasswd",
        "Etc%2FGMT%2B14",
        "%2Fetc%2Flocaltime",
        "localtime",
    ],
}
ANY_VALUE = st.one_of(
    st.sampled_from(["", "%ff", "%zz", "%00", "%ed%a0%80", "+", "%2B"]),
    st.text(TARGET_CHARS, max_size=10).map(lambda s: s.replace("&", "").replace("#", "")),
    st.text(max_size=10).map(lambda s: quote(s, safe="")),
)


def _query(keys: list[str]) -> st.SearchStrategy[str]:
    """key=value pairs joined by "&": mostly the route's own fields, with a
    value each takes or refuses, sometimes anything; a bare key now and then."""

    def value(key: str) -> st.SearchStrategy[str | None]:
        own = st.sampled_from(QUERY_VALUES.get(key, [""]))
        return st.one_of(own, own, ANY_VALUE, st.none())

    key = st.sampled_from([*keys, *keys, "x", "", "%ff", "lim%69t", "st%61te"])
    pair = key.flatmap(lambda k: value(k).map(lambda v: k if v is None else f"{k}={v}"))
    return st.lists(pair, min_size=1, max_size=4).map("&".join)


class Raw:
    """JSON text spliced into a body as it is: what json.dumps cannot write."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return f"Raw({self.text[:40]!r}{'...' if len(self.text) > 40 else ''})"


def _nest(depth: int, closed: bool = True) -> str:
    return "[" * depth + "1" + ("]" * depth if closed else "")


RAW = [
    "NaN",
    "Infinity",
    "-Infinity",
    "1e400",
    "-1e400",
    "1E999",
    "9" * 5000,  # past Python's 4300 digits for int()
    "-" + "9" * 400,
    "1e308",
    "-0.0",
    "5e-324",
    "1.0",
    '"\\ud800"',
    '"\\udfff\\ud800"',
    '"\\u0000"',
    '"' + "x" * 70_000 + '"',
    _nest(62),
    _nest(63),
    _nest(64),
    _nest(65),
    _nest(900),
    _nest(100_000),
    _nest(70, closed=False),
    '{"a": ' * 70 + "1" + "}" * 70,
]
anything = json_values | st.sampled_from(RAW).map(Raw)
GOOD: dict[str, list[Any]] = {
    "task": ["ok", "boom", "", "no-such-task", "x" * 256],
    "job_id": IDS,
    "payload": [{}, {"n": 1}, None, [1, 2], "text"],
    "delay_ms": [0, 1, 3_600_000, -1, 315_537_897_599_999, 315_537_897_600_000, 2.5],
    "run_at": [
        "2024-01-15T09:00:00Z",
        "9999-12-31T23:59:59.999Z",
        "0001-01-01T00:00:00Z",
        "2024-02-30T00:00:00Z",
        "x",
        1_705_309_200_000,
    ],
    "cron": ["* * * * *", "0 0 1 1 *", "61 * * * *", "0 0 31 2 *", "*/0 * * * *", "@daily"],
    "interval_ms": [1000, 0, -5, 10**15],
    "timezone": ["UTC", "Europe/Berlin", "Mars/Olympus", "", "../../etc/passwd"],
    "max_attempts": [1, 0, 3, 10**9],
    "base_ms": [0, 10, -1],
    "max_backoff_ms": [0, 1000, 10**20],
    "jitter": [True, False, 0.5],
    "retry": [{}, {"base_ms": 5}, {"nope": 1}, []],
    "queue": ["default", "q1", "", "x" * 300],
    "priority": [0, 5, -1, 10**6],
    "unique_key": ["k", ""],
    "unique_for_ms": [1, 0],
    "timeout_ms": [1, 0, 10**12],
    "overlap": ["skip", "allow", "x"],
    "misfire": ["coalesce", "skip", "all", "x"],
    "catchup_window_ms": [0, 1000, -1],
    "current_time": ["2024-01-15T09:00:00Z", "9999-12-31T23:59:59Z", T0, -(10**15), "x"],
    "force_fail": [True, False, 1],
    "concurrency": [1, 2, 0, 1_000_001, None],
    "rate_limit": [{"max": 1, "per_ms": 1000}, {"max": 0}, None, {"x": 1}],
    "paused": [True, False, None, "yes"],
    "msg_id": [1, "m", [7], None, -0.0, 10**30],
    "type": ["schedule_job", "cancel_job", "get_job", "stats", "bogus"],
}
TYPES = [*HANDLERS, "bogus"]  # every message of the protocol, and one it does not have


def _value(name: str) -> st.SearchStrategy[Any]:
    """Mostly a value the field may take (or just fails to), now and then anything."""
    good = st.sampled_from(GOOD[name])
    return st.one_of(good, good, good, anything)


# Every field at once (nearly always refused), or a plausible request with a
# field or two changed (often accepted: the routes' success paths get fuzzed too).
wild = st.fixed_dictionaries({}, optional={name: _value(name) for name in GOOD})
SPECS: list[dict[str, Any]] = [
    {"task": "ok", "job_id": "new-1", "delay_ms": 3_600_000},
    {"task": "ok"},
    {"task": "boom", "job_id": "j-sched", "delay_ms": 3_600_000},
    {"task": "ok", "cron": "0 0 1 1 *", "queue": "q1", "msg_id": 3},
    {"task": "ok", "run_at": "2024-01-16T00:00:00Z", "unique_key": "u", "priority": 2},
    {},
]
RUNS = [{}, {"force_fail": True}, {"current_time": "2024-01-15T09:00:00Z"}, {"msg_id": 4}]
QUEUES = [{"concurrency": 3}, {"paused": True}, {"rate_limit": {"max": 5, "per_ms": 1000}}, {}]


def _near(bases: list[dict[str, Any]]) -> st.SearchStrategy[dict[str, Any]]:
    """One of ``bases``, with up to two fields set to what the fuzz picks."""
    extra = st.lists(st.sampled_from(list(GOOD)), max_size=2).flatmap(
        lambda names: st.fixed_dictionaries({n: _value(n) for n in names})
    )
    return st.builds(lambda base, more: {**base, **more}, st.sampled_from(bases), extra)


near = _near(SPECS + RUNS + QUEUES)
fields = st.one_of(near, near, near, wild)
messages = st.builds(lambda kind, f: {**f, "type": kind}, st.sampled_from(TYPES), fields)
envelopes = st.fixed_dictionaries(
    {"body": messages | anything}, optional={"src": anything, "dest": anything}
)


def _encode(value: Any) -> str:
    """JSON text of ``value``, with each Raw spliced in as it is."""
    if isinstance(value, Raw):
        return value.text
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(k)}: {_encode(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(_encode(v) for v in value) + "]"
    return json.dumps(value)


GARBAGE = [
    b"",
    b" ",
    b"null",
    b"{",
    b"}",
    b"{not json",
    b'{"task": "ok"} trailing',
    b'\xef\xbb\xbf{"task": "ok"}',  # a BOM
    b'{"task": "ok", "payload": "\xff\xfe"}',  # invalid UTF-8 inside a string
    b'{"task": "\xc3\x28"}',
    b'{"task": "ok", "task": "boom"}',
    b'{"task": "ok"}\x00',
    b"[" * 100_000,
    b'{"a":' * 100_000,
    b'"' + b"\\" * 3,
]
bodies = st.one_of(
    fields.map(_encode).map(str.encode),
    fields.map(_encode).map(str.encode),
    st.lists(fields, max_size=3).map(_encode).map(str.encode),  # a batch
    fields.map(lambda f: {"jobs": [f]}).map(_encode).map(str.encode),
    messages.map(_encode).map(str.encode),
    envelopes.map(_encode).map(str.encode),
    anything.map(_encode).map(str.encode),
    st.sampled_from(GARBAGE),
    st.binary(max_size=64),
    st.text(max_size=40).map(lambda s: s.encode("utf-8", "surrogatepass")),
)


def _json(values: st.SearchStrategy[Any]) -> st.SearchStrategy[bytes]:
    return values.map(_encode).map(str.encode)


batch_fields = st.fixed_dictionaries(
    {}, optional={"msg_id": _value("msg_id"), "current_time": _value("current_time")}
)
# A body each route takes, or nearly: drawn as often as any other.
OWN_BODIES = {
    "/v1/jobs": _json(_near(SPECS)),
    "/v1/jobs/batch": _json(st.lists(_near(SPECS), max_size=3))
    | _json(st.builds(lambda jobs, f: {**f, "jobs": jobs}, st.lists(_near(SPECS)), batch_fields)),
    "/v1/jobs/{id}/{action}": st.just(b"") | _json(_near(RUNS)),
    "/v1/queues/{id}": _json(_near(QUEUES)),
    "/v1/messages": _json(messages) | _json(envelopes),
}


# (method, route template, query keys): every route of serve and the dashboard.
ROUTES: list[tuple[str, str, list[str] | None]] = [
    ("POST", "/v1/jobs", None),
    ("POST", "/v1/jobs/batch", None),
    ("GET", "/v1/jobs", LIST_KEYS),
    ("GET", "/v1/jobs/{id}", None),
    ("DELETE", "/v1/jobs/{id}", None),
    ("POST", "/v1/jobs/{id}/{action}", None),
    ("PUT", "/v1/queues/{id}", None),
    ("GET", "/v1/queues", None),
    ("POST", "/v1/messages", None),
    ("GET", "/healthz", None),
    ("GET", "/metrics", None),
    ("GET", "/v1/openapi.json", None),
    ("GET", "/v1/dashboard/overview", None),
    ("GET", "/v1/dashboard/upcoming", DASH_KEYS),
    ("GET", "/v1/dashboard/failures", DASH_KEYS),
    ("GET", "/v1/dashboard/queues", None),
    ("GET", "/v1/cron/explain", DASH_KEYS),
    ("GET", "/v1/events", DASH_KEYS),
    ("GET", "/", None),
    ("GET", "/ui/{id}", None),
    ("POST", "/v1/session", None),
    ("GET", "/v1/dashboard/{id}", DASH_KEYS),
    ("GET", "/v1/{id}", None),
]
# What a route answers when it succeeds, for a request sent as its template says.
EXPECT = {
    ("POST", "/v1/jobs"): {"job_scheduled"},
    ("POST", "/v1/jobs/batch"): {"jobs_scheduled"},
    ("GET", "/v1/jobs"): {"jobs_listed"},
    ("GET", "/v1/jobs/{id}"): {"job_info"},
    ("DELETE", "/v1/jobs/{id}"): {"job_cancelled"},
    ("POST", "/v1/jobs/{id}/run"): {"job_executed", "job_failed"},
    ("POST", "/v1/jobs/{id}/pause"): {"job_paused"},
    ("POST", "/v1/jobs/{id}/resume"): {"job_resumed"},
    ("POST", "/v1/jobs/{id}/retry"): {"job_requeued"},
    ("PUT", "/v1/queues/{id}"): {"queue_configured"},
    ("GET", "/v1/queues"): {"queues_listed"},
}
# Around a path: slashes, a dot, the absolute form, a "//" authority.
DECORATIONS = [("", "/"), ("", "//"), ("", "/."), ("http://h", ""), ("//h", ""), ("/", "")]
METHODS = ["GET", "POST", "PUT", "DELETE", "HEAD", "PATCH", "OPTIONS", "get", "BREW", "POST\x00"]
ORIGINS = ["http://" + HOST, "https://" + HOST, "http://evil.example", "null", ""]


@dataclass
class Request:
    method: str
    target: str
    body: bytes
    auth: str  # bearer | none | wrong | cookie
    headers: dict[str, str] = field(default_factory=dict)
    expect: set[str] | None = None  # the success reply types, for a well-formed request

    def __repr__(self) -> str:
        body = self.body if len(self.body) < 200 else self.body[:200] + b"..."
        return f"Request({self.method!r}, {self.target[:300]!r}, {body!r}, {self.auth})"


@st.composite
def requests(draw: st.DrawFn, wild: bool = True) -> Request:
    """A request to one of ROUTES; ``wild``: with its target, method, body
    and credentials bent now and then, else as the route wants it (so that
    its success paths get fuzzed too)."""
    api = st.sampled_from(ROUTES[:9])  # the API's own routes, drawn more often
    method, template, keys = draw(st.one_of(api, api, st.sampled_from(ROUTES)))
    actions = st.sampled_from(ACTIONS)
    odd = st.sampled_from(["frob", "", "RUN", "run/x"])
    action = draw(st.one_of(actions, actions, odd) if wild else actions)
    segment = draw(segments if wild else st.sampled_from(IDS))
    target = template.replace("{action}", action).replace("{id}", segment)
    well_formed = segment in IDS and action in ACTIONS
    decoration = draw(st.integers(0, 29)) if wild else 99
    if decoration < len(DECORATIONS):
        prefix, suffix = DECORATIONS[decoration]
        target, well_formed = prefix + target + suffix, False
    if keys is not None and draw(st.booleans()):
        target += "?" + draw(_query(keys))
    elif wild and draw(st.integers(0, 9)) == 0:
        target += "?" + draw(_query(LIST_KEYS))  # a query where none is read
    if wild and draw(st.integers(0, 19)) == 0:
        target += "#" + draw(st.text(TARGET_CHARS, max_size=6))
    if wild and draw(st.integers(0, 9)) == 0:
        method, well_formed = draw(st.sampled_from(METHODS)), False
    expect = EXPECT.get((method, template.replace("{action}", action))) if well_formed else None
    own = OWN_BODIES.get(template, bodies)
    body = b""
    if method not in ("GET", "HEAD") or (wild and draw(st.integers(0, 9)) == 0):
        body = draw(st.one_of(own, own, bodies) if wild else own)
    headers = {"host": HOST}
    if wild:
        auth = draw(st.sampled_from(["bearer"] * 6 + ["none", "wrong", "cookie", "cookie"]))
        if draw(st.booleans()):
            headers["origin"] = draw(st.sampled_from(ORIGINS) | st.text(TARGET_CHARS, max_size=12))
        if draw(st.integers(0, 4)) == 0:
            headers["last-event-id"] = draw(st.text(TARGET_CHARS, max_size=8))
    else:
        auth = draw(st.sampled_from(["bearer", "bearer", "cookie"]))
        headers["origin"] = "http://" + HOST  # the dashboard's own page, for a cookie
    if template == "/v1/session" and draw(st.booleans()):
        body = json.dumps({"token": draw(st.sampled_from([TOKEN, "nope", ""]))}).encode()
    return Request(method, target, body, auth, headers, expect)


# -- checking one answer --------------------------------------------------------------


def _no_constant(text: str) -> Any:
    raise ValueError(f"{text} in a reply")


def strict_json(raw: bytes) -> Any:
    """JSON as RFC 8259 has it: UTF-8, no NaN or Infinity."""
    return json.loads(raw.decode("utf-8"), parse_constant=_no_constant)


def _sent_msg_ids(body: bytes) -> list[Any]:
    try:
        sent = strict_json(body)
    except (ValueError, RecursionError):
        return []
    out = []
    for obj in (sent, sent.get("body") if isinstance(sent, dict) else None):
        if isinstance(obj, dict) and "msg_id" in obj:
            out.append(obj["msg_id"])
    return out


def _public(method: str, target: str) -> bool:
    path = urlsplit(target).path.rstrip("/") or "/"
    if path == "/healthz" and method == "GET":
        return True
    return path in ("/", "/ui", "/v1/session") or path.startswith("/ui/")


def check(
    req: Request,
    status: int,
    ctype: str,
    headers: dict[str, str],
    raw: bytes,
    framing: bool = False,
) -> Any:
    """The properties of one answer; its decoded JSON body (None for others)."""
    codes = {**CODES, **FRAMING} if framing else CODES
    assert status in SUCCESS or status in codes, (req, status, raw[:300])
    if status == 429:
        assert "/v1/session" in req.target, (req, status)
    if status == 401:
        assert req.auth != "bearer" or _public(req.method, req.target), (req, raw[:300])
    if req.auth in ("none", "wrong") and not _public(req.method, req.target) and status < 411:
        assert status == 401, (req, status, raw[:300])
        assert "Bearer" in headers.get("www-authenticate", ""), headers
    if status == 405:
        assert headers.get("allow"), (req, headers)
    if req.method == "HEAD" and not raw:
        return None  # served: the head of the answer alone
    if not ctype.startswith(JSON):
        assert status in SUCCESS, (req, status, ctype)
        return None
    reply = strict_json(raw)
    assert isinstance(reply, dict), (req, reply)
    inner = reply["body"] if "body" in reply and "type" not in reply else reply
    if status >= 400:
        assert inner["type"] == "error", (req, status, reply)
        assert inner["code"] in codes[status], (req, status, reply)
        assert isinstance(inner["text"], str) and inner["text"], (req, reply)
        assert set(inner) <= {"type", "code", "text", "in_reply_to"}, (req, reply)
    else:
        assert inner.get("type") != "error", (req, status, reply)
        if req.expect is not None:
            assert inner.get("type") in req.expect, (req, status, reply)
        assert status == 200 or inner.get("type") in ("job_scheduled", "jobs_scheduled"), reply
    sent = _sent_msg_ids(req.body)
    if "in_reply_to" in inner:
        assert any(inner["in_reply_to"] == m for m in sent), (req, reply)
    elif status in SUCCESS and req.expect is not None and req.method in ("POST", "PUT"):
        # docs/service.md: a msg_id in the body of any route that takes one comes back.
        top = strict_json(req.body) if req.body.strip() else None
        assert not (isinstance(top, dict) and "msg_id" in top), (req, reply)
    return reply


# -- the service in-process -------------------------------------------------------------


def _boom(payload: Any) -> None:
    raise RuntimeError("boom")


SEED = [
    ("POST", "/v1/jobs", {"task": "ok", "job_id": "j-sched", "delay_ms": 3_600_000}, 201),
    ("POST", "/v1/jobs", {"task": "ok", "job_id": "j-paused", "delay_ms": 3_600_000}, 201),
    ("POST", "/v1/jobs/j-paused/pause", None, 200),
    ("POST", "/v1/jobs", {"task": "ok", "job_id": "j-cron", "cron": "0 0 1 1 *"}, 201),
    (
        "POST",
        "/v1/jobs",
        {"task": "boom", "job_id": "j-dead", "max_attempts": 1, "delay_ms": 3_600_000},
        201,
    ),
    ("POST", "/v1/jobs/j-dead/run", None, 200),
    ("POST", "/v1/jobs", {"task": "ok", "job_id": "j-done", "delay_ms": 3_600_000}, 201),
    ("POST", "/v1/jobs/j-done/run", None, 200),
    ("PUT", "/v1/queues/q1", {"concurrency": 2}, 200),
]


class InProcess:
    """A fresh service on a memory store, as ``serve`` builds it: strict task
    registry (ok, boom), the dashboard, a token, one fixed instant."""

    def __init__(self) -> None:
        registry = TaskRegistry()
        registry.register("ok", lambda payload: None)
        registry.register("boom", _boom)
        registry.strict = True
        engine = Engine(MemoryStore(), registry)
        self.ctx = Context(engine, Clock(T0))
        self.service = Service(
            self.ctx, TOKEN, web=Dashboard(engine, None, TOKEN, self.ctx.clock).web
        )
        for method, target, body, status in SEED:
            data = b"" if body is None else json.dumps(body).encode()
            assert self.send(method, target, data).status == status, (method, target)
        signed = self.send(
            "POST",
            "/v1/session",
            b'{"token": "%s"}' % TOKEN.encode(),
            {"host": HOST, "origin": "http://" + HOST},
            None,
        )
        self.cookie = dict(signed.headers)["Set-Cookie"].split(";")[0]

    def send(
        self,
        method: str,
        target: str,
        body: bytes = b"",
        headers: dict[str, str] | None = None,
        auth: str | None = "Bearer " + TOKEN,
    ) -> Response:
        response = self.service.handle(method, target, auth, body, headers)
        assert response is not None
        if response.stream is not None:
            response.stream.close()  # /v1/events: the subscription would stay
        return response

    def fuzz(self, req: Request) -> Response:
        headers = dict(req.headers)
        auth: str | None = {
            "bearer": "Bearer " + TOKEN,
            "none": None,
            "wrong": "Bearer nope",
            "cookie": None,
        }[req.auth]
        if req.auth == "cookie":
            headers["cookie"] = self.cookie
        return self.send(req.method, req.target, req.body, headers, auth)

    def snapshot(self) -> list[str]:
        """Everything stored: stats, every job with its runs, the queues."""
        out, after = [self._ask({"type": "stats"})], None
        while True:
            page = json.loads(self._ask({"type": "list_jobs", "limit": 1000, "after": after}))
            out += [self._ask({"type": "get_job", "job_id": j["job_id"]}) for j in page["jobs"]]
            if (after := page["next"]) is None:
                return [*out, self._ask({"type": "list_queues"})]

    def _ask(self, body: dict[str, Any]) -> str:
        reply = wire_handle(self.ctx, json.dumps(body))
        assert reply is not None
        return reply.encode()


def stable(max_examples: int) -> Any:
    """Hypothesis settings for CI: the same examples every run (derandomize,
    no example database), no deadline (a service is built per example)."""
    return settings(
        max_examples=max_examples,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


def _changes_nothing(req: Request, status: int) -> bool:
    """A refused request, or a read: must leave the store as it was."""
    return status >= 400 or req.method in ("GET", "HEAD")


@stable(500)
@given(reqs=st.lists(requests(), min_size=1, max_size=4))
def test_every_request_in_process_gets_a_documented_answer(reqs: list[Request]) -> None:
    _one_service(reqs)


@stable(200)
@given(reqs=st.lists(requests(wild=False), min_size=1, max_size=6))
def test_well_formed_requests_in_process_get_a_documented_answer(reqs: list[Request]) -> None:
    _one_service(reqs)


def _one_service(reqs: list[Request]) -> None:
    """The requests, in order, to a fresh service: each answer checked."""
    svc = InProcess()
    for req in reqs:
        before = svc.snapshot()
        response = svc.fuzz(req)
        headers = {k.lower(): v for k, v in response.headers}
        check(req, response.status, response.content_type, headers, response.body)
        if _changes_nothing(req, response.status):
            assert svc.snapshot() == before, (req, response.status, response.body[:300])
        # Still answering, and the seeded jobs still readable.
        assert svc.send("GET", "/healthz").status == 200
        assert svc.send("GET", "/v1/jobs/j-sched").status == 200


# -- one real serve, over a socket -------------------------------------------------------


class Conn:
    """A keep-alive HTTP/1.1 client that sends any bytes: methods and targets
    http.client would refuse, a body with a Content-Length that lies."""

    def __init__(self, address: tuple[str, int]) -> None:
        self.address = address
        self.sock: socket.socket | None = None
        self.buf = b""

    def send(self, data: bytes, no_body: bool = False) -> tuple[int, dict[str, str], bytes]:
        """One request's bytes; its answer (``no_body``: to a HEAD, no body follows)."""
        if self.sock is None:
            self.sock = socket.create_connection(self.address, timeout=10)
            self.buf = b""
        self.sock.sendall(data)
        head = self._until(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")  # the status line and headers
        status = int(lines[0].split()[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        body = b"" if no_body else self._take(int(headers.get("content-length", "0")))
        if headers.get("connection", "").lower() == "close":
            self.close()
        return status, headers, body

    def _until(self, end: bytes) -> bytes:
        while end not in self.buf:
            self._more()
        head, _, self.buf = self.buf.partition(end)
        return head

    def _take(self, n: int) -> bytes:
        while len(self.buf) < n:
            self._more()
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def _more(self) -> None:
        assert self.sock is not None
        chunk = self.sock.recv(65536)
        assert chunk, f"the service closed the connection; got {self.buf[:200]!r}"
        self.buf += chunk

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None


MAX_BODY = 65_536


@dataclass
class Live:
    proc: ServeProcess
    conn: Conn
    cookie: str
    host: str


def _wire_bytes(req: Request, live: Live, framing: int) -> bytes:
    """The request on the wire; ``framing`` sometimes breaks the framing."""
    headers = {**req.headers, "host": live.host}
    if "origin" in headers and headers["origin"].endswith(HOST):
        headers["origin"] = headers["origin"].replace(HOST, live.host)
    auth = {"bearer": "Bearer " + SERVE_TOKEN, "wrong": "Bearer nope"}.get(req.auth)
    if auth:
        headers["authorization"] = auth
    if req.auth == "cookie":
        headers["cookie"] = live.cookie
    body, version = req.body, "HTTP/1.1"
    if framing == 1:
        body = b'{"task": "ok", "payload": "' + b"x" * MAX_BODY + b'"}'  # 413
    elif framing == 2:
        headers["transfer-encoding"] = "chunked"  # 411
    elif framing == 3:
        version = "HTTP/2.0"  # 505
    elif framing == 4:
        version = "HTTP/1.0"
    headers["content-length"] = str(len(body))
    head = f"{req.method} {req.target} {version}\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    return head.encode("latin-1") + b"\r\n" + (body if framing != 2 else b"")


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    proc = ServeProcess(
        tmp_path_factory.mktemp("fuzz"), "--max-body-bytes", str(MAX_BODY), "--grace", "1"
    )
    try:
        for method, target, body, status in SEED:
            got = proc.request(method, target, body)
            assert got[0] == status, (method, target, got)
        for k in range(3):  # never named by the fuzz: must stay as they are
            spec = {"task": "ok", "job_id": f"keep-{k}", "delay_ms": 3_600_000}
            assert proc.request("POST", "/v1/jobs", spec)[0] == 201
        host, port = proc.address
        conn = Conn((host, port))
        sign_in = b'{"token": "%s"}' % SERVE_TOKEN.encode()
        origin = f"http://{host}:{port}"
        _, headers, _ = conn.send(
            b"POST /v1/session HTTP/1.1\r\nHost: %s\r\nOrigin: %s\r\nContent-Length: %d\r\n\r\n%s"
            % (f"{host}:{port}".encode(), origin.encode(), len(sign_in), sign_in)
        )
        cookie = headers["set-cookie"].split(";")[0]
        yield Live(proc, conn, cookie, f"{host}:{port}")
        conn.close()
    finally:
        assert proc.stop() == 0, "".join(proc.log)


def _stats_total(live: Live) -> int:
    status, reply = live.proc.request("POST", "/v1/messages", {"type": "stats"})
    assert status == 200, reply
    return int(reply["total"])


def _keep(live: Live) -> list[Any]:
    return [live.proc.request("GET", f"/v1/jobs/keep-{k}")[1]["job"] for k in range(3)]


def test_every_request_over_a_socket_gets_a_documented_answer(live: Live) -> None:
    keep, logged = _keep(live), len(live.proc.log)

    @stable(300)
    @given(
        req=st.one_of(requests(), requests(wild=False)),
        framing=st.sampled_from([0] * 20 + [1, 2, 3, 4]),
    )
    def one(req: Request, framing: int) -> None:
        if req.target.startswith("/v1/events"):
            return  # a stream never ends: its connection is the stream's
        if "keep-" in req.target:
            return
        total = _stats_total(live)
        data = _wire_bytes(req, live, framing)
        status, headers, raw = live.conn.send(
            data, req.method == "HEAD" and framing not in (1, 2, 3)
        )
        check(req, status, headers.get("content-type", ""), headers, raw, framing=True)
        if status >= 400:
            assert _stats_total(live) == total, (req, status, raw[:300])
        if framing in (1, 2, 3):  # the framing errors: 413, 411, 505
            assert status in (413, 411, 505), (req, framing, status)
            live.conn.close()  # whatever was left unread of it
        status, _, raw = live.conn.send(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert status == 200 and strict_json(raw) == {"status": "ok"}

    one()
    assert _keep(live) == keep
    assert live.proc.proc.poll() is None, "".join(live.proc.log)
    log = "".join(live.proc.log[logged:])  # the tests below may have run first
    assert "Traceback" not in log, log[-3000:]


# -- what the fuzz found ------------------------------------------------------------------
#
# Each test is one failure the fuzz found, against the real serve: the exact
# request, and the answer the docs promise. The first four were 500s (code
# 13, "internal error serving ...") where the docs say 400 (or 403): an
# exception raised outside the route's try (Service._serve called urlsplit,
# Web.public and Web.refuse before it), or inside it where int() met more
# than 4300 digits. The last ran a route's JSON object with a "body" field as
# a protocol envelope: POST /v1/jobs {"body": {"type": "cancel_job", ...}}
# cancelled a job.


def _raw_send(live: Live, data: bytes) -> tuple[int, Any]:
    live.conn.close()  # a fresh connection for the exact bytes
    status, headers, raw = live.conn.send(data)
    live.conn.close()
    return status, strict_json(raw) if headers.get("content-type", "").startswith(JSON) else raw


def _auth(live: Live) -> str:
    return f"Host: {live.host}\r\nAuthorization: Bearer {SERVE_TOKEN}\r\n"


def _post(live: Live, target: str, head: str, body: bytes) -> bytes:
    start = f"POST {target} HTTP/1.1\r\nHost: {live.host}\r\n{head}"
    return start.encode() + b"Content-Length: %d\r\n\r\n" % len(body) + body


@pytest.mark.parametrize("target", ["//[/v1/jobs", "http://[::1/healthz"])
def test_a_target_urlsplit_cannot_read_is_400(live: Live, target: str) -> None:
    status, reply = _raw_send(live, f"GET {target} HTTP/1.1\r\n{_auth(live)}\r\n".encode())
    assert status == 400 and reply["code"] == 12, (status, reply)


def test_a_limit_of_thousands_of_digits_is_400(live: Live) -> None:
    target = "/v1/jobs?limit=" + "9" * 4301
    status, reply = _raw_send(live, f"GET {target} HTTP/1.1\r\n{_auth(live)}\r\n".encode())
    assert status == 400 and reply["code"] == 12 and "limit" in reply["text"], (status, reply)


def test_a_sign_in_body_nested_too_deeply_is_400(live: Live) -> None:
    data = _post(live, "/v1/session", f"Origin: http://{live.host}\r\n", b"[" * 10_000)
    status, reply = _raw_send(live, data)
    assert status == 400 and reply["code"] == 12, (status, reply)


@pytest.mark.parametrize("route", ["session", "cookie"])
def test_an_origin_urlsplit_cannot_read_is_403(live: Live, route: str) -> None:
    """A sign-in, and a change made with the session cookie, from that Origin."""
    if route == "session":
        body, target, cookie = b'{"token": "%s"}' % SERVE_TOKEN.encode(), "/v1/session", ""
    else:
        body, target, cookie = b'{"task": "ok"}', "/v1/jobs", f"Cookie: {live.cookie}\r\n"
    total = _stats_total(live)
    status, reply = _raw_send(live, _post(live, target, f"Origin: http://[\r\n{cookie}", body))
    assert _stats_total(live) == total
    assert status == 403 and reply["code"] == 12, (status, reply)


ENVELOPE_ROUTES = [
    ("POST", "/v1/jobs"),
    ("POST", "/v1/jobs/batch"),
    ("POST", "/v1/jobs/j-cron/pause"),
    ("PUT", "/v1/queues/q1"),
]


@pytest.mark.parametrize(("method", "target"), ENVELOPE_ROUTES)
def test_a_body_field_does_not_turn_a_route_into_another_message(
    live: Live, method: str, target: str
) -> None:
    """docs/service.md: POST /v1/jobs is schedule_job ("the body is its
    fields"), 201 job_scheduled; the other routes are theirs. None runs a
    message of the body's choosing on a job its path does not name."""
    victim = f"victim-{ENVELOPE_ROUTES.index((method, target))}"
    spec = {"task": "ok", "job_id": victim, "delay_ms": 3_600_000}
    assert live.proc.request("POST", "/v1/jobs", spec)[0] == 201
    body = {"body": {"type": "cancel_job", "job_id": victim}}
    status, reply = live.proc.request(method, target, body)
    _, after = live.proc.request("GET", f"/v1/jobs/{victim}")
    assert after["job"]["state"] == "scheduled", (status, reply)
    assert "body" not in reply, (status, reply)
