"""How a ``jobsched.Client`` reaches jobsched: a store directly, or a service.

Both transports take a protocol body and answer the protocol's reply body
(``{"type": ..., ...fields}``), or raise the error class of the reply's code,
so that the client above reads the same replies whatever the target:

- ``StoreTransport`` runs the protocol's own message handlers
  (``messages.HANDLERS``) on an engine over a SQLite or PostgreSQL store, each
  call in one store transaction, as the service runs them. With the
  application's connection (``connection=``), the call runs inside the
  application's transaction instead (``store.borrow``).
- ``HttpTransport`` posts the body to ``/v1/messages`` of a running ``jobsched
  serve`` (standard library only: ``http.client``), one kept-alive connection
  per thread.
"""

from __future__ import annotations

import http.client
import os
import sqlite3
import sys
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Any, Protocol
from urllib.parse import urlsplit

from jobsched.client_types import WrongConnection, error_from_reply
from jobsched.engine import Engine
from jobsched.errors import Unavailable
from jobsched.jsonfast import dumps, loads
from jobsched.messages import HANDLERS, READ_ONLY, Context
from jobsched.stores.base import ClusterClock, Store
from jobsched.timefmt import now_ms

Body = dict[str, Any]
SQLITE_SUFFIXES = (".db", ".sqlite", ".sqlite3")


class Transport(Protocol):
    target: str

    def call(self, body: Body, connection: object | None = None) -> Body: ...

    def close(self) -> None: ...


def open_transport(target: str | os.PathLike[str], token: str | None, timeout: float) -> Transport:
    """The transport a target names (see docs/client.md); a clear error otherwise."""
    text = os.fspath(target)
    if text.startswith(("http://", "https://")):
        return HttpTransport(text, token, timeout)
    if token is not None:
        raise WrongConnection("token", "is for an http:// or https:// target (a jobsched service)")
    if text.startswith(("postgresql://", "postgres://")):
        from jobsched.stores.postgres import PostgresStore

        return StoreTransport(PostgresStore(text), text)
    if text in (":memory:", "sqlite:///:memory:", "memory"):
        raise WrongConnection(
            "target",
            "an in-memory store lives and dies with this client, and no node would ever "
            "run its jobs: give a SQLite file, a postgresql:// URL or a service's URL",
        )
    path = text.removeprefix("sqlite:///") if text.startswith("sqlite:///") else None
    if path is None and (text.endswith(SQLITE_SUFFIXES) or os.path.isfile(text)):
        path = text
    if not path:
        raise WrongConnection(
            "target",
            f"{text!r} is neither a SQLite file (*.db, or sqlite:///path), a postgresql:// "
            "URL, nor an http(s):// URL of a jobsched service",
        )
    from jobsched.stores.sqlite import SQLiteStore

    return StoreTransport(SQLiteStore(path), text)


class StoreTransport:
    def __init__(self, store: Store, target: str) -> None:
        self.store, self.target = store, target
        self.engine = Engine(store)
        # A shared store's own clock (PostgreSQL's db_now) is the cluster's "now",
        # as for the service (cli._clock).
        clock: Callable[[], int] = store.db_now if isinstance(store, ClusterClock) else now_ms
        self.ctx = Context(self.engine, clock)

    def call(self, body: Body, connection: object | None = None) -> Body:
        kind = str(body["type"])
        if connection is not None:
            # "now" is read before the store runs on the application's connection.
            body = {**body, "current_time": self.ctx.clock()}
        with self._borrow(connection):
            block = nullcontext() if kind in READ_ONLY else self.store.transaction()
            with block:
                reply_type, fields = HANDLERS[kind](self.ctx, body)
        return {"type": reply_type, **fields}

    def _borrow(self, connection: object | None) -> AbstractContextManager[None]:
        if connection is None:
            return nullcontext()
        borrow = getattr(self.store, "borrow", None)
        if borrow is None:  # pragma: no cover - every store a client opens can borrow
            raise WrongConnection("connection", "this store cannot write in your transaction")
        # Only AsyncClient can await it (client_async_pg), on PostgreSQL.
        if is_async_psycopg(connection) and not _is_sqlite(self.store):
            raise WrongConnection(
                "connection",
                "is a psycopg.AsyncConnection, which this synchronous Client cannot use: "
                "pass it to jobsched.AsyncClient, or give a psycopg.Connection",
            )
        if isinstance(connection, sqlite3.Connection) != _is_sqlite(self.store):
            # An AsyncClient's stand-in says what the application gave (stands_for).
            have = getattr(connection, "stands_for", None) or (
                f"{type(connection).__module__}.{type(connection).__qualname__}"
            )
            want = "sqlite3.Connection" if _is_sqlite(self.store) else "psycopg.Connection"
            if _is_sqlite(self.store) and "Async" in have:
                have += (
                    " (AsyncClient takes a psycopg.AsyncConnection for a postgresql:// "
                    "target only; aiosqlite connections are not supported)"
                )
            raise WrongConnection(
                "connection", f"this client writes to {self.target}: it takes a {want}, not {have}"
            )
        context: AbstractContextManager[None] = borrow(connection)
        return context

    def close(self) -> None:
        self.store.close()


def is_async_psycopg(connection: object) -> bool:
    """Whether ``connection`` is a ``psycopg.AsyncConnection`` (never importing
    psycopg, an optional dependency: if it is not imported, it is not one)."""
    psycopg = sys.modules.get("psycopg")
    return psycopg is not None and isinstance(connection, psycopg.AsyncConnection)


def _is_sqlite(store: Store) -> bool:
    from jobsched.stores.sqlite import SQLiteStore

    return isinstance(store, SQLiteStore)


class HttpTransport:
    def __init__(self, url: str, token: str | None, timeout: float) -> None:
        parts = urlsplit(url)
        if not parts.hostname:
            raise WrongConnection("target", f"{url!r} names no host")
        if token is not None and not token.strip():
            raise WrongConnection("token", "is empty: give the service's token, or none")
        self.target = url
        self._https = parts.scheme == "https"
        self._host, self._port = parts.hostname, parts.port
        self._path = parts.path.rstrip("/") + "/v1/messages"
        self._headers = {"Content-Type": "application/json"}
        if token is not None:
            self._headers["Authorization"] = f"Bearer {token}"
        self._timeout = timeout
        self._local = threading.local()
        self._open: list[http.client.HTTPConnection] = []
        self._lock = threading.Lock()

    def call(self, body: Body, connection: object | None = None) -> Body:
        if connection is not None:
            # An AsyncConnection needs AsyncClient (whose stand-in for one has
            # stands_for) and a PostgreSQL target.
            use = "a SQLite or postgresql:// target"
            if hasattr(connection, "stands_for"):
                use = "a postgresql:// target"
            elif is_async_psycopg(connection):
                use = "jobsched.AsyncClient with a postgresql:// target"
            raise WrongConnection(
                "connection",
                f"this client talks to the service at {self.target} over HTTP, which cannot "
                f"write inside your transaction: use {use}",
            )
        data = dumps(body).encode()
        status, raw = self._post(data)
        try:
            reply = loads(raw.decode())
        except (UnicodeDecodeError, ValueError):
            reply = None
        if not isinstance(reply, dict) or not isinstance(reply.get("type"), str):
            text = raw[:200].decode(errors="replace")
            raise Unavailable(f"HTTP {status} from {self.target} is not a jobsched reply: {text}")
        if reply["type"] == "error":
            raise error_from_reply(int(reply.get("code", 13)), str(reply.get("text", "")))
        return reply

    def _post(self, data: bytes) -> tuple[int, bytes]:
        """POST on this thread's kept-alive connection. A reused connection the
        server closed meanwhile (its idle timeout) fails before any answer; the
        request is then sent once more, on a new connection."""
        for attempt in (1, 2):
            conn, reused = self._connection()
            try:
                conn.request("POST", self._path, data, self._headers)
                resp = conn.getresponse()
                raw = resp.read()
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError) as exc:
                self._drop(conn)
                if reused and attempt == 1:
                    continue
                why = f"the service at {self.target} closed the connection: {exc}"
                raise Unavailable(why) from exc
            except TimeoutError as exc:  # it may have been applied: a job_id makes a re-send safe
                self._drop(conn)
                why = f"no answer from the service at {self.target} within {self._timeout} s"
                raise Unavailable(why) from exc
            except (OSError, http.client.HTTPException) as exc:
                self._drop(conn)
                raise Unavailable(f"cannot reach the service at {self.target}: {exc}") from exc
            if resp.will_close:
                self._drop(conn)
            return resp.status, raw
        raise AssertionError("unreachable")  # pragma: no cover

    def _connection(self) -> tuple[http.client.HTTPConnection, bool]:
        conn: http.client.HTTPConnection | None = getattr(self._local, "conn", None)
        if conn is not None:
            return conn, True
        kind = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
        conn = kind(self._host, self._port, timeout=self._timeout)
        self._local.conn = conn
        with self._lock:
            self._open.append(conn)
        return conn, False

    def _drop(self, conn: http.client.HTTPConnection) -> None:
        conn.close()
        self._local.conn = None
        with self._lock:
            if conn in self._open:
                self._open.remove(conn)

    def close(self) -> None:
        with self._lock:
            conns, self._open = self._open, []
        for conn in conns:
            conn.close()
        self._local = threading.local()
