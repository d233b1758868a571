"""The HTTP service: the protocol over HTTP, plus resource routes and metrics.

Standard library only, see docs/service.md for why. ``Service.handle`` maps
one request to one response and knows nothing of sockets; the socket side
(connections, limits, timeouts) is ``jobsched.http_server``, the HTTP framing
``jobsched.http_conn``.

Every route goes through the protocol's own code (``jobsched.wire.handle``),
so validation, replies and error codes are the stdio node's, byte for byte.
A request that may change something runs inside one store transaction; its
reply is encoded before the commit (a reply that cannot be encoded rolls the
request back) and sent after it; an error rolls its own writes back. Messages
that run users' handlers (``messages.RUNS_USER_CODE``) are the exception: user
code never runs inside a transaction of ours, which would hold the store's
write lock for as long as the handler takes; the engine commits the claim and
the outcome itself.
"""

from __future__ import annotations

import dataclasses
import hmac
import logging
import re
import resource
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, unquote, urlsplit

from jobsched.errors import JobschedError
from jobsched.http_conn import JSON, Limits, Response, error
from jobsched.http_server import HttpServer
from jobsched.jsonfast import dumps, loads
from jobsched.messages import READ_ONLY, RUNS_USER_CODE, Context
from jobsched.runner import LATENESS_BUCKETS, Metrics
from jobsched.wire import Pending, handle, unavailable

if TYPE_CHECKING:
    from jobsched.web.routes import Web

__all__ = ["JSON", "Limits", "Response", "Service", "error", "make_server", "render_metrics"]
log = logging.getLogger("jobsched.server")

DEFAULT_MAX_BODY = 1 << 20
PROM = "text/plain; version=0.0.4; charset=utf-8"
STATUS = {10: 400, 11: 503, 12: 400, 13: 500, 20: 404, 21: 409, 22: 409}
ACTIONS = {"run": "execute_job", "pause": "pause_job", "resume": "resume_job", "retry": "retry_job"}
_JOB = re.compile(r"/v1/jobs/([^/]+)")
_ACTION = re.compile(r"/v1/jobs/([^/]+)/([a-z]+)")
_QUEUE = re.compile(r"/v1/queues/([^/]+)")
FD_RESERVE = 64  # descriptors kept for the store, logs and handlers
FDS_PER_THREAD = 4  # each serving thread's SQLite connection: database, WAL, shared memory


class _Undo(Exception):
    def __init__(self, reply: Pending) -> None:
        self.reply = reply


class _Unencodable(Exception):
    """Raised inside the transaction when the reply cannot be written as JSON,
    so the request's writes roll back instead of being answered by a 500."""

    def __init__(self, response: Response) -> None:
        self.response = response


class Service:
    """Routes requests to the protocol; owns auth, bounds and metrics."""

    def __init__(
        self,
        ctx: Context,
        token: str | None = None,
        max_body: int = DEFAULT_MAX_BODY,
        metrics: Metrics | None = None,
        on_change: Callable[[], None] | None = None,
        web: Web | None = None,
    ) -> None:
        if token is not None and not token.strip():
            # A blank token once meant "no authentication": never guess that.
            raise JobschedError("the token is empty: give a real one, or none at all")
        self.ctx = ctx
        self.token = token
        self.max_body = max_body
        self.metrics = metrics or Metrics()
        self.on_change = on_change
        self.web = web  # the dashboard and the event stream (jobsched.web), if served

    # -- entry ----------------------------------------------------------------

    def authorized(self, header: str | None) -> bool:
        if self.token is None:
            return True
        given = (header or "").encode()
        return hmac.compare_digest(given, f"Bearer {self.token}".encode())

    def handle(
        self,
        method: str,
        target: str,
        auth: str | None,
        body: bytes,
        headers: Mapping[str, str] | None = None,
    ) -> Response:
        url = urlsplit(target)
        path = url.path.rstrip("/") or "/"
        if path == "/healthz" and method == "GET":
            return self.healthz()
        web, headers = self.web, headers or {}
        if web is not None and (page := web.public(method, path, body, headers)) is not None:
            return page
        # A dashboard session (cookie) stands in for the token; a browser's
        # change made with it must pass web.refuse (Origin, read-only mode).
        by_cookie = web is not None and not self.authorized(auth) and web.signed_in(headers)
        if not by_cookie and not self.authorized(auth):
            return error(
                401,
                12,
                "Authorization: a valid 'Bearer <token>' header is required",
                ("WWW-Authenticate", 'Bearer realm="jobsched"'),
            )
        if web is not None and (refused := web.refuse(method, headers, by_cookie)) is not None:
            return refused
        try:
            if web is not None and (answer := web.route(method, path, url.query, headers)):
                return answer
            return self._route(method, path, parse_qs(url.query), body)
        except Exception:  # never let a bug take the connection down without an answer
            log.exception("crash serving %s %s", method, path)
            return error(500, 13, f"internal error serving {method} {path}")

    def _route(self, method: str, path: str, query: dict[str, list[str]], body: bytes) -> Response:
        if path == "/metrics":
            return self._only(method, "GET") or self.render_metrics()
        if path == "/v1/messages":
            return self._only(method, "POST") or self.message(body)
        if path == "/v1/jobs/batch":  # before _ACTION/_JOB, which would read it as a job id
            return self._only(method, "POST") or self.schedule_batch(body)
        if path == "/v1/openapi.json":
            return self._only(method, "GET") or _openapi()
        if path == "/v1/jobs":
            if method == "GET":
                return self.call(_listing(query))
            return self._only(method, "GET, POST") or self.schedule(body)
        if m := _ACTION.fullmatch(path):
            kind = ACTIONS.get(m.group(2))
            if kind is None:
                return error(404, 10, f"no such action {m.group(2)!r}")
            return self._only(method, "POST") or self.action(kind, unquote(m.group(1)), body)
        if m := _JOB.fullmatch(path):
            job = {"job_id": unquote(m.group(1))}
            if method == "GET":
                return self.call({"type": "get_job", **job})
            return self._only(method, "GET, DELETE") or self.call({"type": "cancel_job", **job})
        if path == "/healthz":
            return self._only(method, "GET") or self.healthz()
        return self._queues(method, path, body)

    def _queues(self, method: str, path: str, body: bytes) -> Response:
        """The queue routes (docs/queues.md): list_queues, configure_queue; the
        last of the routes, so a path none of them takes is a 404 here."""
        if path == "/v1/queues":
            return self._only(method, "GET") or self.call({"type": "list_queues"})
        if m := _QUEUE.fullmatch(path):
            fields = self._only(method, "PUT") or _json_object(body)
            if isinstance(fields, Response):
                return fields
            return self.call({**fields, "type": "configure_queue", "queue": unquote(m.group(1))})
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
        return self._answer(text, _peek(text))

    def schedule(self, body: bytes) -> Response:
        fields = _json_object(body)
        if isinstance(fields, Response):
            return fields
        return self.call({**fields, "type": "schedule_job"}, created=True)

    def schedule_batch(self, body: bytes) -> Response:
        """A JSON array of schedule_job specs, or {"jobs": [...]}: all or nothing."""
        try:
            value = loads(body.decode("utf-8") if body else "null")
        except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
            return error(400, 12, f"body: not valid JSON: {exc}"[:300])
        fields = {"jobs": value} if isinstance(value, list) else value
        if not isinstance(fields, dict):
            return error(400, 12, 'body: must be a JSON array of jobs, or {"jobs": [...]}')
        return self.call({**fields, "type": "schedule_jobs"}, created=True)

    def action(self, kind: str, job_id: str, body: bytes) -> Response:
        fields = _json_object(body) if body.strip() else {}
        if isinstance(fields, Response):
            return fields
        return self.call({**fields, "type": kind, "job_id": job_id})

    def call(self, fields: dict[str, Any], created: bool = False) -> Response:
        fields.pop("msg_id", None)
        try:
            line = dumps(fields)
        except (ValueError, RecursionError) as exc:  # too deep to re-encode
            return error(400, 12, f"body: cannot be read: {exc}"[:300])
        return self._answer(line, str(fields["type"]), created)

    def healthz(self) -> Response:
        try:
            self.ctx.engine.store.next_due()
        except JobschedError as exc:
            return error(503, 11, f"storage unavailable: {exc.text}")
        return Response(200, b'{"status": "ok"}')

    def render_metrics(self) -> Response:
        counts = self.ctx.engine.stats()
        text = render_metrics(counts, self.metrics)
        nodes = self.ctx.engine.nodes(self.ctx.clock())
        if nodes is not None:
            text += render_nodes(nodes)
        return Response(200, text.encode(), PROM)

    # -- plumbing -----------------------------------------------------------------

    def _answer(self, text: str, kind: str | None, created: bool = False) -> Response:
        if kind not in READ_ONLY and kind not in RUNS_USER_CODE:
            return self._in_transaction(text, created)
        # Reads need no transaction, and user code must not run inside one.
        reply = handle(self.ctx, text)
        if reply is not None and reply.changes and self.on_change is not None:
            self.on_change()
        try:
            return _encode(reply, created)
        except _Unencodable as exc:
            return exc.response

    def _in_transaction(self, text: str, created: bool) -> Response:
        store = self.ctx.engine.store
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
                response = _encode(reply, created)  # before the commit: failing rolls back
        except _Unencodable as exc:
            return exc.response
        except JobschedError as exc:
            # Begin or commit failed: nothing is durable, so nothing may be acknowledged.
            why = f"storage unavailable, nothing changed: {exc.text}"
            if reply is None:
                reply = unavailable(self.ctx, text, why)
            else:
                reply.fail_unavailable(why)
            return _encode(reply, created)
        if reply is not None and reply.changes and self.on_change is not None:
            self.on_change()
        return response


def _encode(reply: Pending | None, created: bool) -> Response:
    if reply is None:
        return error(400, 12, "body: is empty")
    status = 201 if created else 200
    if reply.reply_type == "error":
        status = STATUS.get(int(reply.fields.get("code", 13)), 500)
    try:
        return Response(status, reply.encode().encode())
    except (ValueError, TypeError) as exc:
        log.error("a %s reply could not be encoded: %s", reply.reply_type, exc)
        raise _Unencodable(
            error(500, 13, "internal error: the reply could not be encoded")
        ) from exc


def _peek(text: str) -> str | None:
    """The message's type, to choose its transaction; None if it has none
    (``handle`` then answers why, and the request runs in a transaction)."""
    try:
        obj = loads(text)
    except (ValueError, RecursionError):
        return None
    body = obj.get("body") if isinstance(obj, dict) and "body" in obj else obj
    kind = body.get("type") if isinstance(body, dict) else None
    return kind if isinstance(kind, str) else None


def _json_object(body: bytes) -> dict[str, Any] | Response:
    try:
        value = loads(body.decode("utf-8") if body else "{}")
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        return error(400, 12, f"body: not valid JSON: {exc}"[:300])
    if not isinstance(value, dict):
        return error(400, 12, "body: must be a JSON object")
    return value


def _openapi() -> Response:
    from jobsched.openapi import document_bytes  # built once, on first request

    return Response(200, document_bytes())


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


def make_server(service: Service, host: str, port: int, limits: Limits | None = None) -> HttpServer:
    """The service on a listening socket; ``serve_forever`` runs it."""
    limits = dataclasses.replace(limits or Limits(), max_body=service.max_body)
    streams = limits.max_streams if service.web is not None else 0
    room = fd_budget(limits.max_connections + streams, limits.threads)
    if room < limits.max_connections + streams:
        streams = min(streams, room // 4)  # event streams never take the requests' room
        log.warning(
            "--max-connections %d: the open-file limit leaves room for %d; using that",
            limits.max_connections,
            max(room - streams, 1),
        )
    limits = dataclasses.replace(
        limits,
        max_connections=min(limits.max_connections, max(room - streams, 1)),
        max_streams=streams,
    )
    if host not in ("127.0.0.1", "localhost", "::1") and service.token is None:
        log.warning("listening on %s without --token: anyone who can reach it may run jobs", host)
    return HttpServer(service.handle, host, port, limits)


def fd_budget(wanted: int, threads: int) -> int:
    """How many connections the open-file limit leaves room for; first raises
    the soft limit toward the hard one when that makes room for ``wanted``."""
    reserve = FD_RESERVE + FDS_PER_THREAD * threads
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < wanted + reserve:
        new = wanted + reserve if hard == resource.RLIM_INFINITY else min(wanted + reserve, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
            soft = new
        except (ValueError, OSError):
            pass
    if soft == resource.RLIM_INFINITY:
        return wanted
    return max(1, min(wanted, soft - reserve))


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
