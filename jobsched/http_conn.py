"""HTTP/1.1 framing for the service: parse a request head, render a response.

Pure functions over bytes, no sockets (``jobsched.http_server`` owns those),
so the rules are in one place: what is refused before a body is read (411,
413, 431, 505), when a connection is kept alive (HTTP/1.1 unless ``Connection:
close``; HTTP/1.0 only with ``Connection: keep-alive``, which the answer then
announces, as ``ab -k`` expects), and that a response is one buffer: headers
and body leave in one write, so no client waits out Nagle's algorithm against
its own delayed ACK. A streamed response (``Response.stream``, for Server-Sent
Events) has no Content-Length and closes its connection when it ends.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from email.utils import formatdate
from http import HTTPStatus
from urllib.parse import unquote_to_bytes

from jobsched.errors import JobschedError
from jobsched.http_stream import Stream

JSON = "application/json"
MAX_HEAD = 64 << 10  # request line and headers together
MAX_HEADERS = 100


@dataclass(frozen=True, slots=True)
class Limits:
    max_connections: int = 512
    request_timeout: float = 10.0
    idle_timeout: float = 30.0
    threads: int = 16
    max_body: int = 1 << 20
    max_streams: int = 64

    def __post_init__(self) -> None:
        if min(self.max_connections, self.threads) < 1 or self.max_body < 0:
            raise JobschedError("--max-connections and --http-threads must be at least 1")
        if self.max_streams < 0:
            raise JobschedError("--max-event-streams must be 0 or more")
        if not self.request_timeout > 0 or not self.idle_timeout > 0:
            raise JobschedError("--request-timeout and --idle-timeout must be > 0 seconds")


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    body: bytes
    content_type: str = JSON
    headers: tuple[tuple[str, str], ...] = ()
    # A streamed answer (http_stream) has no Content-Length: it ends with its connection.
    stream: Stream | None = None


def error(status: int, code: int, text: str, *headers: tuple[str, str]) -> Response:
    """The protocol's error body under an HTTP status."""
    body = json.dumps({"type": "error", "code": code, "text": text}).encode()
    return Response(status, body, JSON, headers)


@dataclass(frozen=True, slots=True)
class Head:
    """A request's line and headers (names in lower case), as far as we use them."""

    method: str
    target: str
    http10: bool
    headers: dict[str, str]
    length: int  # of the body, from Content-Length
    keep_alive: bool
    expect_continue: bool


def find_head_end(buf: bytearray) -> tuple[int, int]:
    """(end of the head, start of the body), or (-1, -1) while incomplete."""
    end = buf.find(b"\r\n\r\n")
    if end >= 0:
        return end, end + 4
    end = buf.find(b"\n\n")  # bare LF lines, as http.server accepted them
    return (end, end + 2) if end >= 0 else (-1, -1)


def parse_head(data: bytes, max_body: int) -> Head | Response:
    """The head of a request, or the error that answers it (then the connection
    closes: after a framing error nothing later on it can be trusted)."""
    lines = data.split(b"\n")
    parts = lines[0].rstrip(b"\r").split()
    if len(parts) != 3:
        return error(400, 12, "request line: want METHOD TARGET HTTP/1.1")
    method, target, version = (p.decode("latin-1") for p in parts)
    if version not in ("HTTP/1.1", "HTTP/1.0"):
        if version.startswith("HTTP/"):
            return error(505, 12, f"request line: {version[:16]} is not supported")
        return error(400, 12, "request line: want METHOD TARGET HTTP/1.1")
    if len(lines) > MAX_HEADERS + 1:
        return error(431, 12, f"headers: at most {MAX_HEADERS}")
    headers = _headers(lines[1:])
    if isinstance(headers, Response):
        return headers
    if "transfer-encoding" in headers:
        return error(411, 12, "body: send it with a Content-Length")
    length_text = headers.get("content-length", "0")
    if not (length_text.isascii() and length_text.isdigit()):
        return error(400, 12, "Content-Length: is not a number")
    length = int(length_text)
    if length > max_body:
        return error(413, 12, f"body: at most {max_body} bytes, not {length}")
    tokens = {t.strip() for t in headers.get("connection", "").lower().split(",")}
    http10 = version == "HTTP/1.0"
    keep = "keep-alive" in tokens if http10 else "close" not in tokens
    expect = headers.get("expect", "").lower() == "100-continue" and not http10
    return Head(method, target, http10, headers, length, keep, expect)


def _headers(lines: list[bytes]) -> dict[str, str] | Response:
    headers: dict[str, str] = {}
    for raw in lines:
        name, sep, value = raw.rstrip(b"\r").partition(b":")
        # Whitespace in or before a name (obsolete folding included) is how
        # request smuggling starts: refused, as RFC 9112 allows.
        if not sep or not name or name != name.strip() or b" " in name:
            return error(400, 12, "headers: a line is not NAME: VALUE")
        key, text = name.decode("latin-1").lower(), value.strip().decode("latin-1")
        if key in headers:
            if key == "content-length" and headers[key] != text:
                return error(400, 12, "Content-Length: given twice, differently")
            text = headers[key] if key == "content-length" else f"{headers[key]}, {text}"
        headers[key] = text
    return headers


_date: tuple[int, str] = (0, "")


def _http_date() -> str:
    global _date
    now = int(time.time())
    if _date[0] != now:  # formatdate is slow enough to matter at thousands of requests/s
        _date = (now, formatdate(now, usegmt=True))
    return _date[1]


# The head of an answer with no extra header, split around its Content-Length
# value, by (status, content type, keep-alive, HTTP/1.0, idle timeout), with the
# Date it was made for: the same all second long, rebuilt at the next.
_heads: dict[tuple[int, str, bool, bool, float], tuple[str, bytes, bytes]] = {}


def render(response: Response, head: Head | None, keep_alive: bool, idle_timeout: float) -> bytes:
    """Status line, headers and body as one buffer (one write)."""
    date = _http_date()
    if response.stream is None and not response.headers:
        http10 = head is not None and head.http10
        key = (response.status, response.content_type, keep_alive, http10, idle_timeout)
        cached = _heads.get(key)
        if cached is None or cached[0] != date:
            pre, _, post = _head(response, head, keep_alive, idle_timeout, date, "\0").partition(
                "\0"
            )
            cached = _heads[key] = (date, pre.encode("latin-1"), post.encode("latin-1"))
        data = b"%s%d%s" % (cached[1], len(response.body), cached[2])
    else:
        data = _head(response, head, keep_alive, idle_timeout, date, "").encode("latin-1")
    if head is not None and head.method == "HEAD":
        return data
    return data + response.body


def _head(
    response: Response, head: Head | None, keep_alive: bool, idle_timeout: float, date: str, n: str
) -> str:
    """The status line and headers; ``n``: the Content-Length value (else the body's length)."""
    status = response.status
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = ""
    out = [
        f"HTTP/1.1 {status} {phrase}",
        "Server: jobsched",
        f"Date: {date}",
        f"Content-Type: {response.content_type}",
    ]
    if response.stream is None:
        out.append(f"Content-Length: {n or len(response.body)}")
    out.extend(f"{name}: {value}" for name, value in response.headers)
    if not keep_alive or response.stream is not None:
        out.append("Connection: close")
    else:
        if head is not None and head.http10:
            out.append("Connection: keep-alive")
        out.append(f"Keep-Alive: timeout={max(int(idle_timeout), 1)}")
    return "\r\n".join(out) + "\r\n\r\n"


# -- the request target --------------------------------------------------------------

_STRAY_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")  # a "%" starting no %XX escape


def decoded(raw: str, field: str) -> str | Response:
    """A percent-encoded part of the request target (a path segment, a query
    key or value), decoded strictly: the bytes it stands for, raw or as %XX
    escapes, must be UTF-8, and every "%" must start an escape. ``unquote``
    would turn bad UTF-8 into U+FFFD and keep a stray "%" as it is, so that
    ``PUT /v1/queues/%ff`` configured a queue named U+FFFD."""
    if _STRAY_PERCENT.search(raw):
        return error(400, 12, f"{field}: a '%' in the URL must start a %XX escape")
    try:
        # The target is the request line's bytes read as latin-1 (parse_head):
        # encoded back, those bytes; a raw non-ASCII byte counts as its escape.
        return unquote_to_bytes(raw.encode("latin-1")).decode("utf-8")
    except UnicodeError:
        return error(400, 12, f"{field}: is not UTF-8 once its %XX escapes are decoded")


def query_fields(query: str, names: Iterable[str]) -> dict[str, str] | Response:
    """The fields ``names`` of a query string, each decoded strictly
    (``decoded``); the last of a repeated field counts, a field given empty
    (``a=``, or a bare ``a``) is "", and other fields are ignored. Not
    ``parse_qs``: it drops empty fields and replaces bad UTF-8."""
    wanted = frozenset(names)
    fields: dict[str, str] = {}
    for pair in query.split("&") if query else ():
        raw_key, _, raw_value = pair.partition("=")
        key = decoded(raw_key.replace("+", " "), "query")  # "+" is a space in a query
        if isinstance(key, Response) or key not in wanted:
            continue
        value = decoded(raw_value.replace("+", " "), key)
        if isinstance(value, Response):
            return value
        fields[key] = value
    return fields
