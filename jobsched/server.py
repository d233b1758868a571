"""The HTTP service: the protocol over HTTP, plus resource routes and metrics.

Standard library only (``http.server.ThreadingHTTPServer``), see docs/service.md
for why. ``Service.handle`` maps one request to one response and knows nothing
of sockets; ``_Handler`` is the thin http.server adapter around it.

Every route goes through the protocol's own code (``jobsched.wire.handle``),
so validation, replies and error codes are the stdio node's, byte for byte.
A request that may change something runs inside one store transaction and is
answered only after the commit; an error rolls its own writes back.
"""

from __future__ import annotations

import hmac
import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from jobsched.errors import JobschedError
from jobsched.messages import Context
from jobsched.runner import LATENESS_BUCKETS, Metrics
from jobsched.wire import Pending, handle

log = logging.getLogger("jobsched.server")

DEFAULT_MAX_BODY = 1 << 20
JSON = "application/json"
PROM = "text/plain; version=0.0.4; charset=utf-8"
STATUS = {10: 400, 11: 503, 12: 400, 13: 500, 20: 404, 21: 409, 22: 409}
ACTIONS = {"run": "execute_job", "pause": "pause_job", "resume": "resume_job", "retry": "retry_job"}
_JOB = re.compile(r"/v1/jobs/([^/]+)")
_ACTION = re.compile(r"/v1/jobs/([^/]+)/([a-z]+)")


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    body: bytes
    content_type: str = JSON
    headers: tuple[tuple[str, str], ...] = ()


def error(status: int, code: int, text: str, *headers: tuple[str, str]) -> Response:
    body = json.dumps({"type": "error", "code": code, "text": text}).encode()
    return Response(status, body, JSON, headers)


class _Undo(Exception):
    def __init__(self, reply: Pending) -> None:
        self.reply = reply


class Service:
    """Routes requests to the protocol; owns auth, bounds and metrics."""

    def __init__(
        self,
        ctx: Context,
        token: str | None = None,
        max_body: int = DEFAULT_MAX_BODY,
        metrics: Metrics | None = None,
        on_change: Callable[[], None] | None = None,
    ) -> None:
        self.ctx = ctx
        self.token = token
        self.max_body = max_body
        self.metrics = metrics or Metrics()
        self.on_change = on_change

    # -- entry ----------------------------------------------------------------

    def authorized(self, header: str | None) -> bool:
        if not self.token:
            return True
        given = (header or "").encode()
        return hmac.compare_digest(given, f"Bearer {self.token}".encode())

    def handle(self, method: str, target: str, auth: str | None, body: bytes) -> Response:
        url = urlsplit(target)
        path = url.path.rstrip("/") or "/"
        if path == "/healthz" and method == "GET":
            return self.healthz()
        if not self.authorized(auth):
            return error(
                401,
                12,
                "Authorization: a valid 'Bearer <token>' header is required",
                ("WWW-Authenticate", 'Bearer realm="jobsched"'),
            )
        try:
            return self._route(method, path, parse_qs(url.query), body)
        except Exception:  # never let a bug take the connection down without an answer
            log.exception("crash serving %s %s", method, path)
            return error(500, 13, f"internal error serving {method} {path}")

    def _route(self, method: str, path: str, query: dict[str, list[str]], body: bytes) -> Response:
        if path == "/metrics":
            return self._only(method, "GET") or self.render_metrics()
        if path == "/v1/messages":
            return self._only(method, "POST") or self.message(body)
        if path == "/v1/jobs":
            if method == "GET":
                return self.call(_listing(query), write=False)
            return self._only(method, "GET, POST") or self.schedule(body)
        if m := _ACTION.fullmatch(path):
            kind = ACTIONS.get(m.group(2))
            if kind is None:
                return error(404, 10, f"no such action {m.group(2)!r}")
            return self._only(method, "POST") or self.action(kind, unquote(m.group(1)), body)
        if m := _JOB.fullmatch(path):
            job = {"job_id": unquote(m.group(1))}
            if method == "GET":
                return self.call({"type": "get_job", **job}, write=False)
            return self._only(method, "GET, DELETE") or self.call({"type": "cancel_job", **job})
        if path == "/healthz":
            return self._only(method, "GET") or self.healthz()
        return error(404, 10, f"no route for {path}")

    @staticmethod
    def _only(method: str, allowed: str) -> Response | None:
        if method in allowed.split(", "):
            return None
        return error(405, 10, f"method {method} is not allowed here", ("Allow", allowed))

    # -- routes -----------------------------------------------------------------

    def message(self, body: bytes) -> Response:
        """Any protocol message (bare body or envelope) in; its reply out."""
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            return error(400, 12, "body: is not UTF-8")
        return self._respond(self._run(text, True))

    def schedule(self, body: bytes) -> Response:
        fields = _json_object(body)
        if isinstance(fields, Response):
            return fields
        return self.call({**fields, "type": "schedule_job"}, created=True)

    def action(self, kind: str, job_id: str, body: bytes) -> Response:
        fields = _json_object(body) if body.strip() else {}
        if isinstance(fields, Response):
            return fields
        return self.call({**fields, "type": kind, "job_id": job_id})

    def call(self, fields: dict[str, Any], write: bool = True, created: bool = False) -> Response:
        fields.pop("msg_id", None)
        return self._respond(self._run(json.dumps(fields), write), created)

    def healthz(self) -> Response:
        try:
            self.ctx.engine.store.next_due()
        except JobschedError as exc:
            return error(503, 11, f"storage unavailable: {exc.text}")
        return Response(200, b'{"status": "ok"}')

    # -- plumbing -----------------------------------------------------------------

    def _run(self, text: str, write: bool) -> Pending | None:
        store = self.ctx.engine.store
        if not write:
            return handle(self.ctx, text)
        reply: Pending | None = None
        try:
            with store.transaction():
                try:
                    with store.transaction():  # a savepoint: an error undoes only its writes
                        reply = handle(self.ctx, text)
                        if reply is not None and reply.reply_type == "error":
                            raise _Undo(reply)
                except _Undo as undo:
                    reply = undo.reply
        except JobschedError as exc:
            # The commit failed: nothing is durable, so nothing may be acknowledged.
            if reply is not None:
                reply.fail_unavailable(f"storage unavailable, nothing changed: {exc.text}")
            return reply
        if reply is not None and reply.changes and self.on_change is not None:
            self.on_change()
        return reply

    def _respond(self, reply: Pending | None, created: bool = False) -> Response:
        if reply is None:
            return error(400, 12, "body: is empty")
        status = 201 if created else 200
        if reply.reply_type == "error":
            status = STATUS.get(int(reply.fields.get("code", 13)), 500)
        return Response(status, reply.encode().encode())

    def render_metrics(self) -> Response:
        counts = self.ctx.engine.stats()
        text = render_metrics(counts, self.metrics)
        nodes = self.ctx.engine.nodes(self.ctx.clock())
        if nodes is not None:
            text += render_nodes(nodes)
        return Response(200, text.encode(), PROM)


def _json_object(body: bytes) -> dict[str, Any] | Response:
    try:
        value = json.loads(body or b"{}")
    except (ValueError, RecursionError) as exc:
        return error(400, 12, f"body: not valid JSON: {exc}"[:300])
    if not isinstance(value, dict):
        return error(400, 12, "body: must be a JSON object")
    return value


def _listing(query: dict[str, list[str]]) -> dict[str, Any]:
    fields: dict[str, Any] = {"type": "list_jobs"}
    for key in ("state", "task", "after", "limit"):
        if key in query:
            value: Any = query[key][-1]
            if key == "limit" and value.isdigit():
                value = int(value)
            fields[key] = value
    return fields


def render_metrics(counts: dict[str, int], m: Metrics) -> str:
    """The Prometheus text exposition format (version 0.0.4)."""
    out: list[str] = []

    def family(name: str, kind: str, help_text: str) -> None:
        out.append(f"# HELP {name} {help_text}")
        out.append(f"# TYPE {name} {kind}")

    family("jobsched_jobs", "gauge", "Jobs in the store, by state.")
    out.extend(f'jobsched_jobs{{state="{s}"}} {n}' for s, n in counts.items())
    with m.lock:
        runs, retries, skipped = dict(m.runs), m.retries, m.skipped
        buckets, total, count = list(m.buckets), m.lateness_sum, m.lateness_count
    family("jobsched_runs_total", "counter", "Real-time runs of this process, by outcome.")
    out.extend(f'jobsched_runs_total{{outcome="{k}"}} {v}' for k, v in sorted(runs.items()))
    family("jobsched_run_failures_total", "counter", "Real-time runs that failed (any cause).")
    out.append(f"jobsched_run_failures_total {sum(v for k, v in runs.items() if k != 'succeeded')}")
    family("jobsched_retries_total", "counter", "Failed runs that scheduled a retry.")
    out.append(f"jobsched_retries_total {retries}")
    family(
        "jobsched_skipped_occurrences_total", "counter", "Occurrences skipped by overlap/misfire."
    )
    out.append(f"jobsched_skipped_occurrences_total {skipped}")
    family(
        "jobsched_dispatch_lateness_seconds",
        "histogram",
        "Handler start minus due time, real-time runs.",
    )
    cumulative = 0
    for bound, n in zip(LATENESS_BUCKETS, buckets, strict=True):
        cumulative += n
        out.append(f'jobsched_dispatch_lateness_seconds_bucket{{le="{bound}"}} {cumulative}')
    out.append(f'jobsched_dispatch_lateness_seconds_bucket{{le="+Inf"}} {count}')
    out.append(f"jobsched_dispatch_lateness_seconds_sum {total}")
    out.append(f"jobsched_dispatch_lateness_seconds_count {count}")
    return "\n".join(out) + "\n"


# -- the http.server adapter -------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "jobsched"
    sys_version = ""
    timeout = 60  # a silent client does not hold a thread forever
    service: Service  # set on the subclass made by make_server

    def _serve(self, method: str) -> None:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            self._send(error(411, 12, "body: send it with a Content-Length"), close=True)
            return
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            self._send(error(400, 12, "Content-Length: is not a number"), close=True)
            return
        if length < 0 or length > self.service.max_body:
            limit = self.service.max_body
            self._send(error(413, 12, f"body: at most {limit} bytes, not {length}"), close=True)
            return
        body = self.rfile.read(length) if length else b""
        auth = self.headers.get("Authorization")
        self._send(self.service.handle(method, self.path, auth, body))

    def _send(self, response: Response, close: bool = False) -> None:
        self.send_response(response.status)
        self.send_header("Content-Type", response.content_type)
        self.send_header("Content-Length", str(len(response.body)))
        for name, value in response.headers:
            self.send_header(name, value)
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(response.body)

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def do_DELETE(self) -> None:
        self._serve("DELETE")

    def do_PUT(self) -> None:
        self._serve("PUT")

    def do_PATCH(self) -> None:
        self._serve("PATCH")

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)


def make_server(service: Service, host: str, port: int) -> ThreadingHTTPServer:
    handler = type("Handler", (_Handler,), {"service": service})
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    return server


def render_nodes(nodes: list[tuple[str, int, int]]) -> str:
    """Cluster nodes seen in the last minute, and the jobs each holds."""
    out = [
        "# HELP jobsched_nodes Nodes whose heartbeat was seen in the last minute.",
        "# TYPE jobsched_nodes gauge",
        f"jobsched_nodes {len(nodes)}",
        "# HELP jobsched_node_jobs_held Running jobs each node holds a lease on.",
        "# TYPE jobsched_node_jobs_held gauge",
    ]
    for node_id, _, held in nodes:
        node = node_id.replace("\\", "\\\\").replace('"', '\\"')
        out.append(f'jobsched_node_jobs_held{{node="{node}"}} {held}')
    return "\n".join(out) + "\n"
