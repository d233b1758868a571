"""The dashboard's routes, as the service (``jobsched.server``) calls them.

Public (no token, no session): the page shell ``/``, its files under
``/ui/``, and ``/v1/session`` (status, sign-in, sign-out). With the same
authentication as the API (bearer token, or the session cookie):
``/v1/events`` (Server-Sent Events), ``/v1/dashboard/overview``,
``/v1/dashboard/upcoming``, ``/v1/dashboard/failures``,
``/v1/dashboard/queues`` and ``/v1/cron/explain``. Everything else is the
API's, unchanged; requests made with the cookie are checked first
(``refuse``: Origin, read-only mode).

Pages carry a Content-Security-Policy with no inline script, so markup that
slipped into a page could not run; the pages themselves build every piece of
user data with ``textContent``.
"""

from __future__ import annotations

import json
import mimetypes
from collections.abc import Callable, Mapping
from importlib import resources
from importlib.resources.abc import Traversable
from typing import Any

from jobsched.http_conn import JSON, Response, error, query_fields
from jobsched.web.cronwords import explain
from jobsched.web.events import EventHub
from jobsched.web.queries import Queries
from jobsched.web.session import (
    SAFE_METHODS,
    Sessions,
    TooManyAttempts,
    from_browser,
    same_origin,
)

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
PAGE_HEADERS = (
    ("Content-Security-Policy", CSP),
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    ("Referrer-Policy", "no-referrer"),
    ("Cache-Control", "no-cache"),
)
NO_STORE = (("Cache-Control", "no-store"), ("X-Content-Type-Options", "nosniff"))
SSE_HEADERS = (
    ("Cache-Control", "no-cache"),
    ("X-Accel-Buffering", "no"),  # nginx would otherwise hold events back in its buffer
    ("X-Content-Type-Options", "nosniff"),
)
TYPES = {
    ".js": "text/javascript",
    ".css": "text/css",
    ".html": "text/html",
    ".svg": "image/svg+xml",
}


def _static_files() -> dict[str, tuple[bytes, str]]:
    """Every file under static/, by its path there: read once, served from memory."""
    found: dict[str, tuple[bytes, str]] = {}

    def walk(node: Traversable, prefix: str) -> None:
        for child in node.iterdir():
            if child.is_dir():
                walk(child, f"{prefix}{child.name}/")
            elif not child.name.startswith("."):
                ext = "." + child.name.rpartition(".")[2]
                kind = TYPES.get(ext) or mimetypes.guess_type(child.name)[0] or "text/plain"
                charset = "; charset=utf-8" if kind.startswith("text/") else ""
                found[prefix + child.name] = (child.read_bytes(), kind + charset)

    walk(resources.files("jobsched.web") / "static", "")
    return found


class Web:
    def __init__(
        self,
        hub: EventHub,
        queries: Queries,
        sessions: Sessions,
        clock: Callable[[], int],
        read_only: bool = False,
    ) -> None:
        self.hub = hub
        self.queries = queries
        self.sessions = sessions
        self.clock = clock
        self.read_only = read_only
        self.files = _static_files()

    # -- before authentication -----------------------------------------------------

    def public(
        self, method: str, path: str, body: bytes, headers: Mapping[str, str]
    ) -> Response | None:
        """The routes that need no token: the pages, and signing in."""
        if path in ("/", "/ui") or path.startswith("/ui/"):
            if method not in ("GET", "HEAD"):
                return error(405, 10, f"method {method} is not allowed here", ("Allow", "GET"))
            found = self.files.get("index.html" if path == "/" else path.removeprefix("/ui/"))
            if found is None:
                return error(404, 10, f"no route for {path}")
            return Response(200, found[0], found[1], PAGE_HEADERS)
        if path == "/v1/session":
            return self.session(method, body, headers)
        return None

    def session(self, method: str, body: bytes, headers: Mapping[str, str]) -> Response:
        required = self.sessions.token is not None
        if method == "GET":
            signed_in = not required or self.sessions.valid(headers)
            return _json(200, {"signed_in": signed_in, "token_required": required,
                               "read_only": self.read_only})  # fmt: skip
        if method not in ("POST", "DELETE"):
            return error(
                405, 10, f"method {method} is not allowed here", ("Allow", "GET, POST, DELETE")
            )
        if not same_origin(headers):
            return error(403, 12, "Origin: must be this service's own (sign in from its page)")
        if method == "DELETE":
            self.sessions.sign_out(headers)
            return _json(200, {"signed_in": not required}, ("Set-Cookie", Sessions.clear_cookie()))
        if not required:
            return error(
                400, 12, "token: this service has no token; there is nothing to sign in to"
            )
        try:
            given = json.loads(body or b"{}").get("token")
        except (ValueError, AttributeError, RecursionError):
            given = None
        if not isinstance(given, str):
            return error(400, 12, 'token: send {"token": "..."}')
        try:
            sid = self.sessions.sign_in(given)
        except TooManyAttempts:
            return error(429, 12, "token: too many wrong tokens; wait a few seconds")
        if sid is None:
            return error(401, 12, "token: wrong token")
        cookie = self.sessions.set_cookie(sid, headers)
        return _json(200, {"signed_in": True}, ("Set-Cookie", cookie))

    # -- after authentication ------------------------------------------------------

    def signed_in(self, headers: Mapping[str, str]) -> bool:
        return self.sessions.token is not None and self.sessions.valid(headers)

    def refuse(self, method: str, headers: Mapping[str, str], by_cookie: bool) -> Response | None:
        """Browser requests that may change something: from this origin only,
        and none at all in read-only mode. Bearer-token requests pass."""
        if method in SAFE_METHODS or not (by_cookie or self.sessions.token is None):
            return None
        browser = by_cookie or from_browser(headers)
        if browser and not same_origin(headers):
            return error(403, 12, "Origin: a browser's change must come from this service's page")
        if browser and self.read_only:
            return error(403, 12, "the dashboard is read-only (--read-only-ui)")
        return None

    def route(
        self, method: str, path: str, query: str, headers: Mapping[str, str]
    ) -> Response | None:
        """The dashboard's authenticated routes; None for the API's."""
        if not (path == "/v1/events" or path.startswith(("/v1/dashboard/", "/v1/cron/"))):
            return None
        if method != "GET":
            return error(405, 10, f"method {method} is not allowed here", ("Allow", "GET"))
        try:
            fields = query_fields(query, _QUERY_FIELDS)
            if isinstance(fields, Response):
                return fields
            return self._get(path, fields, headers)
        except _BadQuery as bad:
            return bad.response

    def _get(self, path: str, q: dict[str, str], headers: Mapping[str, str]) -> Response:
        if path == "/v1/events":
            sub = self.hub.subscribe(headers.get("last-event-id") or q.get("last_event_id"))
            return Response(200, sub.first, "text/event-stream; charset=utf-8", SSE_HEADERS, sub)
        if path == "/v1/dashboard/overview":
            return _json(200, {**self.queries.overview(), "read_only": self.read_only})
        if path == "/v1/dashboard/upcoming":
            hours, limit = _number(q, "hours", 24, 0, 24 * 7), _number(q, "limit", 500, 1, 1000)
            return _json(200, self.queries.upcoming(self.clock(), hours, int(limit)))
        if path == "/v1/dashboard/failures":
            limit = _number(q, "limit", 100, 1, 500)
            return _json(200, {"jobs": self.queries.failures(int(limit))})
        if path == "/v1/dashboard/queues":
            return _json(200, self.queries.queues())
        if path == "/v1/cron/explain":
            n = _number(q, "n", 10, 1, 50)
            answer = explain(q.get("expr", ""), q.get("tz") or "UTC", self.clock(), int(n))
            return _json(200, answer)
        return error(404, 10, f"no route for {path}")


# The dashboard routes' query fields (every other field is ignored).
_QUERY_FIELDS = ("last_event_id", "hours", "limit", "n", "expr", "tz")


class _BadQuery(Exception):
    def __init__(self, response: Response) -> None:
        self.response = response


def _number(q: dict[str, str], name: str, default: float, lo: float, hi: float) -> float:
    if name not in q:
        return default
    try:
        value = float(q[name])
    except ValueError:
        value = float("nan")
    if not lo <= value <= hi:  # NaN too
        raise _BadQuery(error(400, 12, f"{name}: must be a number from {lo:g} to {hi:g}"))
    return value


def _json(status: int, value: dict[str, Any], *headers: tuple[str, str]) -> Response:
    return Response(status, json.dumps(value).encode(), JSON, (*NO_STORE, *headers))
