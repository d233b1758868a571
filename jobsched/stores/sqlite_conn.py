"""SQLite plumbing for the store: per-call connections, faults, wake-ups, and
writing inside a caller's own transaction.

- ``Use``: the connection for one store call, inside the open transaction or
  in one of its own; SQLite faults become ``Unavailable``.
- ``DataVersionWakeups``: the ``WakeupListener`` capability. SQLite has no
  NOTIFY, but ``PRAGMA data_version`` on a connection changes whenever another
  connection (of any process) commits to the file; a waiter polls it every
  ``WAKE_POLL_S`` on its own thread's store connection, so that its own
  commits (a dispatcher's claims and outcomes) do not wake it: each did, and
  a blocked dispatcher made a claim more per run it finished. Any other
  commit wakes it, also one that made nothing due sooner: a wake-up is a
  hint, and a spurious one costs the dispatcher one more look at ``next_due``.
- ``borrowed``: run this thread's store calls on the application's own
  ``sqlite3.Connection``, inside its open transaction (the application commits
  or rolls back), in a savepoint so that a failed call undoes only itself.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from jobsched.errors import JobschedError, Malformed, Unavailable
from jobsched.stores.base import WakeupListener
from jobsched.stores.sql_tx import Block, TxState

if TYPE_CHECKING:
    from jobsched.stores.sqlite import SQLiteStore

log = logging.getLogger("jobsched.sqlite")

# How often a sleeping waiter looks for other connections' commits: a wake-up
# is at most this late, and a PRAGMA costs a few microseconds.
WAKE_POLL_S = 0.025
_SAVEPOINT = "jobsched_caller_tx"

# What an operator should read for each SQLite primary result code.
_CAUSES = {
    "SQLITE_BUSY": "the database is locked by another connection",
    "SQLITE_LOCKED": "the database is locked by another connection",
    "SQLITE_READONLY": "the database file is read-only",
    "SQLITE_FULL": "the disk is full",
    "SQLITE_IOERR": "a disk I/O error occurred",
    "SQLITE_CANTOPEN": "the database file cannot be opened",
    "SQLITE_CORRUPT": "the database file is corrupt",
    "SQLITE_NOTADB": "the file is not a SQLite database",
    "SQLITE_NOMEM": "out of memory",
}


def describe(exc: sqlite3.Error) -> str:
    """The operator's reading of a SQLite error, with SQLite's own words after it."""
    name = getattr(exc, "sqlite_errorname", None) or ""
    primary = "_".join(name.split("_")[:2])  # SQLITE_IOERR_WRITE -> SQLITE_IOERR
    cause = _CAUSES.get(primary)
    return f"{cause} ({exc})" if cause else str(exc)


def is_fault(exc: BaseException) -> bool:
    """SQLite faults of the environment (not bugs in our SQL): answered with 11."""
    return isinstance(exc, sqlite3.OperationalError) or type(exc) is sqlite3.DatabaseError


def refusal(path: str, exc: sqlite3.Error | None) -> JobschedError:
    """Why the file cannot be used, in words that say what to do about it."""
    name = getattr(exc, "sqlite_errorname", None) or ""
    text = "unknown error" if exc is None else describe(exc)
    if name.startswith(("SQLITE_CORRUPT", "SQLITE_NOTADB")) or type(exc) is sqlite3.DatabaseError:
        return JobschedError(
            f"{path} is corrupt or not a SQLite database ({text}); refusing to use it: "
            "restore a backup (see docs/operations.md) or point --db at a new file"
        )
    return JobschedError(f"cannot open {path}: {text}")


def wal_mode(db: sqlite3.Connection, patience_s: float) -> None:
    """Put the file in WAL mode (it stays so). Turning a new file to WAL takes
    a lock that SQLite's busy handler does not wait for: when several
    processes open a new file together, some got "database is locked" at once
    (6 of 90 opens, 6 processes at a time); they wait here instead, up to the
    busy timeout."""
    give_up = time.monotonic() + patience_s
    while True:
        try:
            if db.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                db.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            busy = getattr(exc, "sqlite_errorname", "").startswith("SQLITE_BUSY")
            if not busy or time.monotonic() >= give_up:
                raise
            time.sleep(0.005)


def rollback(db: sqlite3.Connection) -> None:
    if db.in_transaction:
        try:
            db.execute("ROLLBACK")
        except sqlite3.Error:  # the connection is broken; SQLite undoes it on reopen
            log.warning("rollback failed", exc_info=True)


@dataclass(slots=True)
class Conn(TxState):
    """One thread's connection and where it is in a transaction."""

    db: sqlite3.Connection = field(kw_only=True)
    read_only: str | None = None  # why this transaction could only get a read lock


class Use:
    """The connection for one store call: inside the caller's transaction, or
    (for a write) in a transaction of its own; reads outside one autocommit.
    SQLite faults leave it as Unavailable."""

    __slots__ = ("block", "conn", "store", "write")

    def __init__(self, store: SQLiteStore, write: bool) -> None:
        self.store, self.write = store, write
        self.block: Block[Conn] | None = None

    def __enter__(self) -> sqlite3.Connection:
        store = self.store
        conn = self.conn = store._local()
        if conn.depth == 0 and self.write:
            self.block = Block(store, conn)
            self.block.__enter__()
        try:
            store._check(conn, self.write)
        except Unavailable as exc:
            if self.block is not None:
                self.block.__exit__(Unavailable, exc, None)
            raise
        return conn.db

    def __exit__(self, kind: type[BaseException] | None, exc: object, tb: object) -> None:
        error = exc if isinstance(exc, BaseException) else None
        if isinstance(exc, sqlite3.Error):
            try:
                self.store._fault(self.conn, exc)
            except BaseException as translated:
                error = translated
        if self.block is not None:
            self.block.__exit__(None if error is None else type(error), error, None)
        if error is not None and error is not exc:
            raise error from exc if isinstance(exc, BaseException) else None


class DataVersionWakeups(WakeupListener):
    """Wake-ups by polling ``PRAGMA data_version`` (see the module docstring).
    The store provides ``_wait_connection``: the calling thread's connection
    (data_version ignores the commits of the connection it is read on)."""

    def _init_wakeups(self) -> None:
        self._woken = threading.Event()
        self._wait_lock = threading.Lock()  # one waiter at a time
        self._wait_db: sqlite3.Connection | None = None
        self._wait_thread: int | None = None  # whose connection _wait_db is
        self._seen_version: int | None = None

    def _wait_connection(self) -> sqlite3.Connection:
        raise NotImplementedError

    def wait_for_wakeup(self, timeout_s: float) -> bool:
        deadline = time.monotonic() + max(0.0, timeout_s)
        with self._wait_lock:
            while True:
                if self._woken.is_set():
                    self._woken.clear()
                    return True
                if self._committed_elsewhere():
                    return True
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._woken.wait(min(WAKE_POLL_S, left))

    def wake(self) -> None:
        self._woken.set()

    def _committed_elsewhere(self) -> bool:
        """Whether a commit happened since the last look (never at the first)."""
        try:
            if self._wait_db is None or self._wait_thread != threading.get_ident():
                # A version is a count of one connection: a new one starts afresh.
                self._wait_db, self._seen_version = self._wait_connection(), None
                self._wait_thread = threading.get_ident()
            version = int(self._wait_db.execute("PRAGMA data_version").fetchone()[0])
        except (sqlite3.Error, JobschedError) as exc:  # never raises: polling goes on
            log.debug("cannot read data_version: %s", exc)
            self._wait_db = None
            return False
        seen, self._seen_version = self._seen_version, version
        return seen is not None and seen != version


@contextmanager
def borrowed(store: SQLiteStore, db: sqlite3.Connection) -> Iterator[None]:
    """This thread's calls on ``store`` run on ``db``, inside the transaction
    open on it (begun here, as sqlite3 would begin it, when the connection
    manages transactions itself), in a savepoint: a call that raises undoes
    its writes and leaves the application's transaction usable."""
    factories = db.row_factory, db.text_factory
    previous = getattr(store._tls, "conn", None)
    conn = Conn(db=db, depth=1)  # depth 1: the application's transaction is open
    try:
        # The store's SQL reads plain tuples of str, whatever the application set.
        db.row_factory, db.text_factory = None, str
        _begin(store.path, db)
        db.execute(f"SAVEPOINT {_SAVEPOINT}")
        store._tls.conn = conn
        try:
            yield
            if conn.doomed is not None:
                raise Unavailable(f"storage unavailable, nothing changed: {conn.doomed}")
        except BaseException:
            if db.in_transaction:  # SQLite may have rolled the whole of it back
                db.execute(f"ROLLBACK TO SAVEPOINT {_SAVEPOINT}")
                db.execute(f"RELEASE SAVEPOINT {_SAVEPOINT}")
            raise
        db.execute(f"RELEASE SAVEPOINT {_SAVEPOINT}")
    except sqlite3.Error as exc:
        if not is_fault(exc):
            raise
        raise Unavailable(f"storage unavailable, nothing changed: {describe(exc)}") from exc
    finally:
        store._tls.conn = previous
        db.row_factory, db.text_factory = factories


def _begin(path: str, db: sqlite3.Connection) -> None:
    """Check that ``db`` is this file's and has a transaction open (or opens
    one when sqlite3 manages its transactions)."""
    _same_file(path, db)
    if db.in_transaction:
        return
    if _autocommit(db):
        raise Malformed(
            "connection",
            "has no transaction open (it is in autocommit mode): begin one, so that "
            "the job commits or rolls back with your own writes",
        )
    # sqlite3 would begin a deferred transaction at our first write; taking
    # the write lock up front, as the store does, avoids a failed lock upgrade.
    mode = "EXCLUSIVE" if (db.isolation_level or "").upper() == "EXCLUSIVE" else "IMMEDIATE"
    db.execute(f"BEGIN {mode}")


def _autocommit(db: sqlite3.Connection) -> bool:
    # Python 3.12's Connection.autocommit (-1: the legacy isolation_level rules).
    mode = getattr(db, "autocommit", -1)
    return mode is True or (mode == -1 and db.isolation_level is None)


def _same_file(path: str, db: sqlite3.Connection) -> None:
    try:
        rows = db.execute("PRAGMA database_list").fetchall()
    except sqlite3.ProgrammingError as exc:  # closed, or made in another thread
        raise Malformed("connection", f"cannot be used here: {exc}") from exc
    main = next((row[2] for row in rows if row[1] == "main"), "") or ":memory:"
    try:
        same = os.path.samefile(main, path)
    except OSError:
        same = False
    if not same:
        raise Malformed(
            "connection", f"is a connection to {main!r}, not to this store's database {path!r}"
        )
