"""The HTTP service: the protocol over HTTP, plus resource routes and metrics.

Standard library only, see docs/service.md for why. ``Service.handle`` maps
one request to one response and knows nothing of sockets; the socket side
(connections, limits, timeouts) is ``jobsched.http_server``, the HTTP framing
``jobsched.http_conn``.

Every route goes through the protocol's own code (``jobsched.wire.handle``),
so validation, replies and error codes are the stdio node's, byte for byte.
A request that may change something is committed in a group with the writes
of other connections (``jobsched.server_commit``): each in a savepoint of one
store transaction, its reply encoded before the commit (a reply that cannot be
encoded rolls the request back) and sent after it; an error rolls its own
writes back. Messages that run users' handlers (``messages.RUNS_USER_CODE``)
are the exception: user code never runs inside a transaction of ours, which
would hold the store's write lock for as long as the handler takes; the
engine commits the claim and the outcome itself. The Prometheus text of
``/metrics`` is ``jobsched.server_metrics``.
"""

from __future__ import annotations

import dataclasses
import hmac
import logging
import re
import resource
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from jobsched.errors import JobschedError
from jobsched.http_conn import JSON, Limits, Response, decoded, error, query_fields
from jobsched.http_server import HttpServer
from jobsched.jsonfast import MAX_DEPTH, loads, may_be_too_deep
from jobsched.messages import READ_ONLY, RUNS_USER_CODE, Context
from jobsched.metrics import Metrics
from jobsched.server_commit import STATUS, Answer, Change, GroupCommit, Write, encoded, run
from jobsched.server_metrics import PROM, render_metrics, render_nodes, render_writes

if TYPE_CHECKING:
    from jobsched.web.routes import Web

__all__ = [
    "JSON",
    "STATUS",
    "Limits",
    "Response",
    "Service",
    "error",
    "make_server",
    "render_metrics",
    "render_nodes",
]
log = logging.getLogger("jobsched.server")

DEFAULT_MAX_BODY = 1 << 20
ACTIONS = {"run": "execute_job", "pause": "pause_job", "resume": "resume_job", "retry": "retry_job"}
_JOB = re.compile(r"/v1/jobs/([^/]+)")
_ACTION = re.compile(r"/v1/jobs/([^/]+)/([a-z]+)")
_QUEUE = re.compile(r"/v1/queues/([^/]+)")
_LIST_FIELDS = ("state", "task", "queue", "after", "limit")  # GET /v1/jobs's query
# A route's outcome: its response, or a change to commit before answering.
Reply = Response | Change
FD_RESERVE = 64  # descriptors kept for the store, logs and handlers
FDS_PER_THREAD = 4  # each serving thread's SQLite connection: database, WAL, shared memory


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
        self.writes = GroupCommit(ctx, on_change)

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
        later: Answer | None = None,
    ) -> Response | None:
        """The request's response; or, given ``later``, None for a write, which
        is committed in a group and answered through ``later`` after its commit
        (from the writer's thread; this thread is free meanwhile)."""
        out = self._serve(method, target, auth, body, headers or {})
        if isinstance(out, Response):
            return out
        if later is None:
            return self.writes.run(out)
        self.writes.submit(Write(out, later))
        return None

    def _serve(
        self, method: str, target: str, auth: str | None, body: bytes, headers: Mapping[str, str]
    ) -> Reply:
        try:
            url = urlsplit(target)
        except ValueError as exc:  # "//[/v1/jobs": an authority it cannot read
            return error(400, 12, f"the request target is not a URL: {exc}"[:300])
        path = url.path.rstrip("/") or "/"
        if path == "/healthz" and method == "GET":
            return self.healthz()
        web = self.web
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
            return self._route(method, path, url.query, body)
        except Exception:  # never let a bug take the connection down without an answer
            log.exception("crash serving %s %s", method, path)
            return error(500, 13, f"internal error serving {method} {path}")

    def _route(self, method: str, path: str, query: str, body: bytes) -> Reply:
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
                listing = _listing(query)  # parsed only here
                return listing if isinstance(listing, Response) else self.call(listing)
            return self._only(method, "GET, POST") or self.schedule(body)
        if path == "/healthz":
            return self._only(method, "GET") or self.healthz()
        return self._job(method, path, body) or self._queues(method, path, body)

    def _job(self, method: str, path: str, body: bytes) -> Reply | None:
        """The routes of one job, /v1/jobs/{id}[/action]; None for another path."""
        if m := _ACTION.fullmatch(path):
            kind = ACTIONS.get(m.group(2))
            if kind is None:
                return error(404, 10, f"no such action {m.group(2)!r}")
            job_id = self._only(method, "POST") or decoded(m.group(1), "job_id")
            return job_id if isinstance(job_id, Response) else self.action(kind, job_id, body)
        if not (m := _JOB.fullmatch(path)):
            return None
        job_id = decoded(m.group(1), "job_id")
        if isinstance(job_id, Response):
            return job_id
        if method == "GET":
            return self.call({"type": "get_job", "job_id": job_id})
        refused = self._only(method, "GET, DELETE")
        return refused or self.call({"type": "cancel_job", "job_id": job_id})

    def _queues(self, method: str, path: str, body: bytes) -> Reply:
        """The queue routes (docs/queues.md): list_queues, configure_queue; the
        last of the routes, so a path none of them takes is a 404 here."""
        if path == "/v1/queues":
            return self._only(method, "GET") or self.call({"type": "list_queues"})
        if m := _QUEUE.fullmatch(path):
            queue = self._only(method, "PUT") or decoded(m.group(1), "queue")
            fields = queue if isinstance(queue, Response) else _json_object(body)
            if isinstance(fields, Response):
                return fields
            change = {**fields, "type": "configure_queue", "queue": queue}
            return self.call(change, False, body)
        return error(404, 10, f"no route for {path}")

    @staticmethod
    def _only(method: str, allowed: str) -> Response | None:
        if method in allowed.split(", "):
            return None
        return error(405, 10, f"method {method} is not allowed here", ("Allow", allowed))

    # -- routes -----------------------------------------------------------------

    def message(self, body: bytes) -> Reply:
        """Any protocol message (bare body or envelope) in; its reply out."""
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            return error(400, 12, "body: is not UTF-8")
        return self._answer(Change(text), _peek(text))

    def schedule(self, body: bytes) -> Reply:
        fields = _json_object(body)
        if isinstance(fields, Response):
            return fields
        return self.call({**fields, "type": "schedule_job"}, True, body)

    def schedule_batch(self, body: bytes) -> Reply:
        """A JSON array of schedule_job specs, or {"jobs": [...]}: all or nothing."""
        try:
            value = loads(body.decode("utf-8") if body else "null")
        except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
            return error(400, 12, f"body: not valid JSON: {exc}"[:300])
        fields = {"jobs": value} if isinstance(value, list) else value
        if not isinstance(fields, dict):
            return error(400, 12, 'body: must be a JSON array of jobs, or {"jobs": [...]}')
        return self.call({**fields, "type": "schedule_jobs"}, True, body)

    def action(self, kind: str, job_id: str, body: bytes) -> Reply:
        fields = _json_object(body) if body.strip() else {}
        if isinstance(fields, Response):
            return fields
        return self.call({**fields, "type": kind, "job_id": job_id}, False, body)

    def call(self, fields: dict[str, Any], created: bool = False, raw: bytes = b"") -> Reply:
        """The protocol message ``fields``, decoded from the body ``raw``. A
        ``msg_id`` among them is kept: the reply echoes it as ``in_reply_to``,
        as every transport's does (docs/service.md)."""
        kind = str(fields["type"])
        # Handed over as a bare body, never encoded and read again as a line:
        # a "body" field in it is one more field (ignored), not an envelope
        # that would make the route another message. Its nesting is checked
        # as wire.decode checks a line's when its text could nest too deeply
        # (one level spared for the {"jobs": [...]} a route wraps around a body).
        deep = may_be_too_deep(raw.decode("latin-1"), MAX_DEPTH - 1)
        return self._answer(Change("", created, fields, deep), kind)

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
        text += render_writes(self.writes.groups, self.writes.writes)
        return Response(200, text.encode(), PROM)

    # -- plumbing -----------------------------------------------------------------

    def _answer(self, change: Change, kind: str | None) -> Reply:
        if kind not in READ_ONLY and kind not in RUNS_USER_CODE:
            return change  # committed in a group (server_commit)
        # Reads need no transaction, and user code must not run inside one.
        reply = run(self.ctx, change)
        if reply is not None and reply.changes and self.on_change is not None:
            self.on_change()
        return encoded(reply, change.created)


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


def _listing(query: str) -> dict[str, Any] | Response:
    """list_jobs from a query string. A filter given empty (``queue=``, or a
    bare ``queue``) is handed over as "", which list_jobs refuses naming it,
    as it refuses ``"queue": ""`` in a message: dropping it, as ``parse_qs``
    does, listed every job. The last of a repeated field counts; other
    fields are ignored."""
    pairs = query_fields(query, _LIST_FIELDS)
    if isinstance(pairs, Response):
        return pairs
    fields: dict[str, Any] = {"type": "list_jobs"}
    for key, value in pairs.items():
        # isdigit alone takes "²", which int() refuses: the limit is ASCII digits.
        if key == "limit" and value.isascii() and value.isdigit():
            digits = value.lstrip("0") or "0"
            if len(digits) > 18:  # int() refuses past 4,300 digits; list_jobs, past 1000
                return error(400, 12, f"limit: must be at most 1000, not {len(digits)} digits")
            fields[key] = int(digits)
        else:
            fields[key] = value
    return fields


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
