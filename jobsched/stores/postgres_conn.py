"""PostgreSQL plumbing for the store: connections, transactions, faults, schema.

One connection per thread (the stdio loop and the real-time dispatcher each
get their own), in autocommit mode: a call outside ``transaction()`` is one
statement and commits alone; the outermost ``transaction()`` issues BEGIN and
COMMIT, inner ones SAVEPOINTs that roll back alone (the nesting, commit and
rollback are ``sql_tx``'s, shared with the SQLite store).

Faults (connection refused or reset, server restarting, admin shutdown,
deadlock, disk full, a read-only standby) become ``Unavailable`` (error 11):
the open transaction is doomed, every later call in it raises at once, and
its end rolls back and raises, so nothing of it is applied. The broken
connection is dropped; the next call outside a transaction reconnects, and
after a failed attempt further attempts wait a growing delay (50 ms doubling
to 2 s), so a down database costs the node one quick error per request and no
storm of connection attempts. Nothing here ever lets a psycopg fault escape
as a crash.

This module imports psycopg at the top; ``postgres.py`` imports it only after
checking that psycopg is installed, so the node can say what to install.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, suppress
from dataclasses import dataclass, field
from typing import Any, NoReturn

import psycopg
from psycopg import errors as pg_errors

from jobsched.errors import Unavailable
from jobsched.stores import migrate
from jobsched.stores.postgres_dsn import describe as describe
from jobsched.stores.postgres_dsn import parse_dsn as parse_dsn
from jobsched.stores.postgres_dsn import safe_target as safe_target
from jobsched.stores.postgres_sql import notify
from jobsched.stores.sql_tx import Block, Transactions, TxState, joined

log = logging.getLogger("jobsched.postgres")


_XID = b"SELECT pg_current_xact_id_if_assigned()::text"


class PgConn(psycopg.Connection[tuple[Any, ...]]):
    """A connection that sends a transaction's BEGIN with its first statement.

    ``begin_pending``: a BEGIN is owed (set by the pool when a transaction
    starts). The next statement goes in one psycopg pipeline after it, and
    with them the read of the transaction's id (``tx_id``: set once that
    statement wrote), which the commit needs: one round trip where there were
    three. A cursor asked for meanwhile (COPY, executemany) gets the BEGIN sent
    first, on its own; a transaction that ends before any statement never sends
    it (nor COMMIT or ROLLBACK).

    ``owed``: SAVEPOINT and RELEASE statements of nested blocks, not sent yet
    (``Pool._tx_control``): they go in the same pipeline, before the next
    statement, so a nested block costs no round trip of its own. A savepoint
    released before any statement ran under it is never sent; at COMMIT or
    ROLLBACK what is still owed is dropped (both end every savepoint).
    """

    begin_pending = False
    tx_id: str | None = None
    owed: tuple[bytes, ...] = ()

    def execute(
        self, query: Any, params: Any = None, *, prepare: bool | None = None, binary: bool = False
    ) -> psycopg.Cursor[tuple[Any, ...]]:
        if not self.begin_pending and not self.owed:
            return super().execute(query, params, prepare=prepare, binary=binary)
        with self.pipeline():
            cur = super().execute(query, params, prepare=prepare, binary=binary)
        return cur  # the pipeline has ended: its answers are read

    @contextmanager
    def pipeline(self) -> Iterator[Any]:
        began, xid = self.begin_pending, None
        with super().pipeline() as pipe:
            self._send_owed()
            yield pipe
            if began:
                xid = super().execute(_XID)
        row = None if xid is None else xid.fetchone()
        if row is not None:
            self.tx_id = row[0]

    def cursor(self, *args: Any, **kwargs: Any) -> Any:
        self._send_owed()
        return super().cursor(*args, **kwargs)

    def _send_owed(self) -> None:
        """The BEGIN, then the savepoints' statements, if owed. Taken before
        they are sent: psycopg's execute asks ``cursor()`` for its cursor."""
        began, owed = self.begin_pending, self.owed
        self.begin_pending, self.owed = False, ()
        for sql in (b"BEGIN", *owed) if began else owed:
            super().execute(sql)

    def owe(self, sql: str) -> None:
        """A nested block's SAVEPOINT or RELEASE, sent with the next statement;
        a RELEASE right after its own SAVEPOINT cancels both."""
        text = sql.encode()
        if text.startswith(b"RELEASE ") and self.owed and self.owed[-1] == text[8:]:
            self.owed = self.owed[:-1]
        else:
            self.owed = (*self.owed, text)


MIN_DELAY_S = 0.05
MAX_DELAY_S = 2.0
# Errors that say "the database cannot do this now", not "this request is wrong".
_FAULTS: tuple[type[Exception], ...] = (
    psycopg.OperationalError,  # connection errors, shutdowns, deadlocks, disk full, timeouts
    psycopg.InterfaceError,  # the connection is closed
    pg_errors.ReadOnlySqlTransaction,  # a standby after failover
)


@dataclass(slots=True)
class _Conn(TxState):
    """One thread's connection and where it is in a transaction."""

    pg: PgConn | None = field(default=None, kw_only=True)
    due: int | None = None  # earliest due time written in the open transaction
    due_queue: str = "default"  # the queue of that job
    freed: frozenset[str] = frozenset()  # capped queues whose slots it freed
    xid: str | None = None  # the committing transaction's id, if it wrote anything
    lent: bool = False  # the application's connection (postgres_caller): never closed here


class Pool(Transactions[_Conn]):
    """Per-thread connections, re-entrant transactions, and fault handling."""

    tx_errors = psycopg.Error
    tx_doomed = "PostgreSQL unavailable, nothing was saved"
    tx_commit_failed = "commit failed, nothing was saved"

    def __init__(self, dsn: str) -> None:
        self.conninfo, self.schema = parse_dsn(dsn)
        self.where = safe_target(self.conninfo) + (f" schema {self.schema}" if self.schema else "")
        self.channel = "jobsched_due" + (f"_{self.schema}" if self.schema else "")
        self._tls = threading.local()
        self._all: list[_Conn] = []
        self._lock = threading.Lock()
        self._retry_at = 0.0
        self._delay = 0.0
        self._last_error = ""
        self._search_path: str | None = None

    @property
    def last_error(self) -> str:
        """The driver's words for the last failed connection ("" if none)."""
        return self._last_error

    # -- connecting ---------------------------------------------------------

    def connect(self) -> PgConn:
        """A new autocommit connection, or Unavailable (with backoff after a failure)."""
        with self._lock:
            wait = self._retry_at - time.monotonic()
            if wait > 0:
                raise Unavailable(
                    f"PostgreSQL at {self.where} is unreachable ({self._last_error}); "
                    f"next attempt in {int(wait * 1000)} ms"
                )
        try:
            pg = PgConn.connect(self.conninfo, autocommit=True)
        except psycopg.Error as exc:
            with self._lock:
                self._delay = min(max(self._delay * 2, MIN_DELAY_S), MAX_DELAY_S)
                self._retry_at = time.monotonic() + self._delay
                self._last_error = describe(exc)
            raise Unavailable(
                f"cannot connect to PostgreSQL at {self.where}: {describe(exc)}"
            ) from exc
        with self._lock:
            self._delay = self._retry_at = 0.0
        return pg

    def _state(self) -> _Conn:
        """This thread's connection and its transaction state, perhaps not connected."""
        conn: _Conn | None = getattr(self._tls, "conn", None)
        if conn is None:
            conn = self._tls.conn = _Conn()
            with self._lock:
                self._all.append(conn)
        return conn

    def local(self) -> _Conn:
        """This thread's connection; (re)connected when no transaction is open."""
        conn = self._state()
        if conn.pg is None and conn.depth == 0:
            conn.pg = self.connect()
        return conn

    def discard(self, conn: _Conn) -> None:
        pg, conn.pg = conn.pg, None
        if pg is not None and not conn.lent:
            with suppress(psycopg.Error):  # already broken: closing is best effort
                pg.close()

    def close(self) -> None:
        with self._lock:
            conns, self._all = self._all, []
        for conn in conns:
            self.discard(conn)
        self._tls = threading.local()

    # -- transactions -------------------------------------------------------

    def transaction(self) -> AbstractContextManager[None]:
        return Block(self, self._state())

    def joined(self) -> AbstractContextManager[None]:
        """The caller's open transaction, or a new one (``sql_tx.joined``)."""
        return joined(self, self._state())

    # The hooks of sql_tx.Transactions.

    def _tx_begin(self, conn: _Conn) -> None:
        conn.due, conn.freed = None, frozenset()
        if conn.pg is None:
            try:
                conn.pg = self.connect()
            except Unavailable as exc:
                # Never raise on entry: the caller's requests must each get their
                # answer (error 11) from the calls inside, and the block its end.
                conn.doomed = exc.text
                return
        conn.pg.begin_pending = True  # sent with the first statement
        conn.pg.owed = ()
        conn.pg.tx_id = None

    def _tx_commit(self, conn: _Conn) -> None:
        conn.xid = None
        assert conn.pg is not None
        conn.pg.owed = ()  # COMMIT ends every savepoint
        if conn.pg.begin_pending:  # no statement ran: nothing to commit
            conn.pg.begin_pending = False
            return
        pg = conn.pg
        # The transaction's id (None if it wrote nothing), to learn the outcome
        # of a COMMIT whose answer is lost: read with the first statement if
        # that one wrote, else now, before the COMMIT is sent. The NOTIFY goes
        # in the same round trip as the read, or as the COMMIT.
        conn.xid = pg.tx_id
        with pg.pipeline():
            told = notify(self.channel, conn.due, conn.due_queue, conn.freed)
            if told is not None:
                pg.execute(*told)
            if conn.xid is not None:
                pg.execute(b"COMMIT")
                return
            xid = pg.execute(_XID)
        row = xid.fetchone()
        conn.xid = None if row is None else row[0]
        pg.execute(b"COMMIT")

    def _tx_committed_anyway(self, conn: _Conn, exc: Exception) -> bool:
        if conn.xid is None or not self._committed(conn, conn.xid):
            return False
        log.warning("COMMIT answered %r, but the transaction committed", self._tx_describe(exc))
        return True

    def _tx_control(self, conn: _Conn, sql: str) -> None:
        pg = conn.pg
        if conn.doomed is None and isinstance(pg, PgConn):
            if not sql.startswith("ROLLBACK"):
                pg.owe(sql)  # sent with the next statement (PgConn.owed)
                return
            name = sql.removeprefix("ROLLBACK TO ")
            if pg.owed and pg.owed[-1] == name.encode():
                return  # nothing ran since the savepoint: nothing to undo
        self._quiet(conn, sql)

    def _tx_rollback(self, conn: _Conn) -> None:
        self._rollback(conn)

    def _tx_describe(self, exc: Exception) -> str:
        return describe(exc)

    def _committed(self, conn: _Conn, xid: str) -> bool:
        """Whether a transaction whose COMMIT lost its answer did commit. The
        server ends a killed session's transaction as it exits, so "in
        progress" is asked again for a moment. If the server cannot be asked,
        the outcome stays unknown and the caller answers 11 (see docs/cluster.md)."""
        for _ in range(40):
            try:
                if conn.pg is None or conn.pg.closed:
                    conn.pg = self.connect()
                row = conn.pg.execute("SELECT pg_xact_status(%s::xid8)", (xid,)).fetchone()
            except (Unavailable, psycopg.Error) as exc:
                log.warning("commit outcome of %s unknown: %s", xid, exc)
                self.discard(conn)
                return False
            status = None if row is None else row[0]
            if status != "in progress":
                return status == "committed"
            time.sleep(0.05)
        return False

    def _quiet(self, conn: _Conn, sql: str) -> None:
        """Run transaction control; a fault only dooms the transaction (the calls
        inside and the block's end report it as error 11)."""
        if conn.doomed is not None:
            return
        if conn.pg is None:
            conn.doomed = self._last_error or "the connection was lost"
            return
        try:
            conn.pg.execute(sql.encode())
        except psycopg.Error as exc:
            conn.doomed = describe(exc)
            if conn.pg.broken or conn.pg.closed:
                self.discard(conn)

    def _rollback(self, conn: _Conn) -> None:
        conn.due, conn.freed = None, frozenset()
        if conn.pg is None:
            return
        if isinstance(conn.pg, PgConn):
            conn.pg.owed = ()  # ROLLBACK ends every savepoint
        if conn.pg.begin_pending:  # no statement ran: nothing to roll back
            conn.pg.begin_pending = False
            return
        try:
            conn.pg.execute("ROLLBACK")
        except psycopg.Error:  # the connection broke: the server rolls it back
            self.discard(conn)

    def search_path(self) -> str:
        """The search_path of the store's connections: its schema when it has one."""
        if self.schema is not None:
            return f'"{self.schema}"'
        if self._search_path is None:
            with self.use() as pg:
                row = pg.execute("SELECT current_setting('search_path')").fetchone()
            self._search_path = "" if row is None else str(row[0])
        return self._search_path

    # -- calls --------------------------------------------------------------

    @contextmanager
    def use(self) -> Iterator[PgConn]:
        """The connection for one call, inside the caller's transaction or not."""
        conn = self.local()
        if conn.doomed is not None and conn.depth:
            raise Unavailable(f"PostgreSQL unavailable, nothing changed: {conn.doomed}")
        if conn.pg is None:  # lost inside this transaction: it cannot commit
            conn.doomed = conn.doomed or self._last_error or "the connection was lost"
            raise Unavailable(f"PostgreSQL unavailable, nothing changed: {conn.doomed}")
        try:
            yield conn.pg
        except psycopg.Error as exc:
            self.fault(conn, exc)

    def fault(self, conn: _Conn, exc: psycopg.Error) -> NoReturn:
        """A psycopg error in a call: Unavailable for faults, re-raised for bugs."""
        broken = conn.pg is None or conn.pg.broken or conn.pg.closed
        is_fault = broken or isinstance(exc, _FAULTS)
        if conn.depth and (is_fault or conn.depth == 1):
            # The server aborted the transaction (or lost it): nothing of it may commit.
            conn.doomed = describe(exc)
        if broken:
            log.warning("PostgreSQL connection lost: %s", describe(exc))
            self.discard(conn)
        if is_fault:
            raise Unavailable(f"PostgreSQL unavailable, nothing changed: {describe(exc)}") from exc
        raise exc

    def note_due(self, due: int | None, queue: str) -> None:
        """A write made a job of ``queue`` runnable at ``due``: tell sleeping
        dispatchers, at commit, when they may not know of a job that early
        (the rule is ``postgres_sql.NOTIFY_SQL``'s)."""
        if due is None:
            return
        conn: _Conn = self._tls.conn
        if conn.depth:
            if conn.due is None or due < conn.due:
                conn.due, conn.due_queue = due, queue
        else:
            self._notify_now(conn, notify(self.channel, due, queue, frozenset()))

    def note_freed(self, queue: str) -> None:
        """A write ended a run of ``queue``, which has a concurrency limit: wake
        the nodes sleeping on it, at commit, if it then has a free slot and
        jobs to run (``postgres_sql.notify``)."""
        conn: _Conn = self._tls.conn
        if conn.depth:
            conn.freed |= {queue}
        else:
            self._notify_now(conn, notify(self.channel, None, queue, frozenset({queue})))

    def _notify_now(self, conn: _Conn, told: tuple[str, tuple[Any, ...]] | None) -> None:
        if conn.pg is None or told is None:
            return
        try:
            conn.pg.execute(*told)
        except psycopg.Error as exc:  # the write is committed; pollers will see it
            log.info("NOTIFY failed (polling will catch up): %s", describe(exc))

    # -- schema -------------------------------------------------------------

    def ensure_schema(self) -> None:
        """Create the schema if needed and apply pending migrations, once, even
        when several nodes start together (an advisory lock serialises them)."""
        known = migrate.migrations("postgres")
        with self.transaction(), self.use() as pg:
            key = f"jobsched.migrate.{self.schema or ''}"
            pg.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (key,))
            if self.schema is not None:
                pg.execute(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"')
            pg.execute(migrate.MIGRATIONS_TABLE)
            applied = [v for (v,) in pg.execute("SELECT version FROM schema_migrations")]
            for m in migrate.pending(known, applied, f"the PostgreSQL database {self.where}"):
                log.info("applying migration %03d_%s", m.version, m.name)
                pg.execute(m.sql.encode())
                pg.execute(
                    "INSERT INTO schema_migrations (version, name, applied_ms) "
                    "VALUES (%s, %s, (extract(epoch FROM clock_timestamp()) * 1000)::bigint)",
                    (m.version, m.name),
                )
