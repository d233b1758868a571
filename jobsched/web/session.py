"""Dashboard sign-in: sessions behind a cookie, and the rules for requests a
browser makes with it.

Signing in with the service's token creates a session: a random id (256
bits) the browser keeps in an ``HttpOnly; SameSite=Strict`` cookie, and the
service keeps in memory, hashed, with its expiry. The token itself never
leaves the sign-in request. Sessions end with their lifetime, at sign-out,
and when the service restarts (sign in again).

Requests authenticated by the cookie are a browser's, and a browser can be
made to send a request by another site: such a request that may change
something (any method but GET/HEAD) must carry an ``Origin`` header naming
this service's own host, or it is refused (403). ``SameSite=Strict`` already
keeps the cookie off cross-site requests; the Origin check also covers a
sibling site on the same registrable domain. Bearer-token requests are not
browsers' and are not checked. Without a token, a browser request (it has an
``Origin`` header) from another origin is refused the same way.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from collections.abc import Mapping
from urllib.parse import urlsplit

COOKIE = "jobsched_session"
LIFETIME_S = 12 * 3600
MAX_SESSIONS = 1000
FAILURES_PER_WINDOW = 10  # wrong tokens accepted per window before 429
FAILURE_WINDOW_S = 10.0
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class Sessions:
    def __init__(self, token: str | None, lifetime_s: float = LIFETIME_S) -> None:
        self.token = token
        self.lifetime_s = lifetime_s
        self._lock = threading.Lock()
        self._live: dict[bytes, float] = {}  # sha256(id) -> expiry (monotonic)
        self._failures: list[float] = []

    def sign_in(self, given: str) -> str | None:
        """A new session id for the right token; None for a wrong one. Raises
        ``TooManyAttempts`` while wrong tokens come too fast."""
        now = time.monotonic()
        with self._lock:
            self._failures = [t for t in self._failures if t > now - FAILURE_WINDOW_S]
            if len(self._failures) >= FAILURES_PER_WINDOW:
                raise TooManyAttempts()
        if self.token is None or not hmac.compare_digest(given.encode(), self.token.encode()):
            with self._lock:
                self._failures.append(now)
            return None
        sid = secrets.token_urlsafe(32)
        with self._lock:
            self._live = {k: v for k, v in self._live.items() if v > now}
            if len(self._live) >= MAX_SESSIONS:  # the oldest goes: signs in again
                del self._live[min(self._live, key=self._live.__getitem__)]
            self._live[_digest(sid)] = now + self.lifetime_s
        return sid

    def valid(self, headers: Mapping[str, str]) -> bool:
        sid = cookie(headers)
        if sid is None:
            return False
        with self._lock:
            until = self._live.get(_digest(sid))
        return until is not None and until > time.monotonic()

    def sign_out(self, headers: Mapping[str, str]) -> None:
        sid = cookie(headers)
        if sid is not None:
            with self._lock:
                self._live.pop(_digest(sid), None)

    def set_cookie(self, sid: str, headers: Mapping[str, str]) -> str:
        # Secure when a TLS proxy says the browser came over HTTPS (a Secure
        # cookie is never sent over plain HTTP, which the service speaks itself).
        secure = "; Secure" if headers.get("x-forwarded-proto", "").lower() == "https" else ""
        life = int(self.lifetime_s)
        return f"{COOKIE}={sid}; Path=/; HttpOnly; SameSite=Strict; Max-Age={life}{secure}"

    @staticmethod
    def clear_cookie() -> str:
        return f"{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"


class TooManyAttempts(Exception):
    """Wrong tokens came faster than FAILURES_PER_WINDOW per FAILURE_WINDOW_S."""


def _digest(sid: str) -> bytes:
    return hashlib.sha256(sid.encode()).digest()


def cookie(headers: Mapping[str, str]) -> str | None:
    """The session id of the request's Cookie header, if it has one."""
    for part in headers.get("cookie", "").split(";"):
        name, _, value = part.strip().partition("=")
        if name == COOKIE and value:
            return value
    return None


def same_origin(headers: Mapping[str, str]) -> bool:
    """Whether the request's Origin names the host it was sent to."""
    origin, host = headers.get("origin"), headers.get("host")
    if not origin or not host or origin == "null":
        return False
    try:
        parts = urlsplit(origin)
    except ValueError:  # "http://[": no origin at all
        return False
    return parts.scheme in ("http", "https") and parts.netloc.lower() == host.lower()


def from_browser(headers: Mapping[str, str]) -> bool:
    """Browsers say where a request comes from; scripts (curl, urllib) do not."""
    return "origin" in headers or "sec-fetch-site" in headers
