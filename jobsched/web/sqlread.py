"""The dashboard's own read-only connection to a SQL store's database.

The dashboard's queries (counts, runs per minute, upcoming runs, failures)
and the run follower read the store's tables directly, on a connection of
their own: they are reads the Store interface has no method for, they must
never sit inside a transaction of the service's, and a reader here never
blocks a writer (SQLite in WAL mode; PostgreSQL's MVCC). Each statement is
its own snapshot. SQL is written with ``?`` marks; the PostgreSQL reader
turns them into ``%s``.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Sequence
from typing import Any
from urllib.parse import quote

from jobsched.errors import Unavailable

Row = tuple[Any, ...]


class Reader:
    """One connection, used by one thread at a time (a lock)."""

    kind = ""

    def __init__(self) -> None:
        self._lock = threading.Lock()

    def rows(self, sql: str, args: Sequence[Any] = (), plan: Sequence[str] = ()) -> list[Row]:
        """The statement's rows; ``plan``: PostgreSQL settings (``SET LOCAL``)
        for this statement alone, run with it in one transaction."""
        with self._lock:
            return self._rows(sql, args, plan)

    def _rows(self, sql: str, args: Sequence[Any], plan: Sequence[str] = ()) -> list[Row]:
        raise NotImplementedError

    def columns(self, table: str) -> set[str]:
        """The table's column names (schemas differ across versions)."""
        with self._lock:
            return self._columns(table)

    def _columns(self, table: str) -> set[str]:
        raise NotImplementedError

    def close(self) -> None:
        """Close the connection (a later call opens it again)."""


class SqliteReader(Reader):
    kind = "sqlite"

    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = path
        self._db: sqlite3.Connection | None = None

    def _rows(self, sql: str, args: Sequence[Any], plan: Sequence[str] = ()) -> list[Row]:
        try:
            if self._db is None:
                uri = f"file:{quote(self.path)}?mode=ro"
                self._db = sqlite3.connect(uri, uri=True, check_same_thread=False, timeout=5)
            return self._db.execute(sql, tuple(args)).fetchall()
        except sqlite3.Error as exc:
            self.close()
            raise Unavailable(f"cannot read {self.path}: {exc}") from exc

    def _columns(self, table: str) -> set[str]:
        self._rows("SELECT 1", ())  # connected
        assert self._db is not None
        return {row[1] for row in self._db.execute(f"PRAGMA table_info({table})")}

    def close(self) -> None:
        db, self._db = self._db, None
        if db is not None:
            db.close()


class PostgresReader(Reader):
    kind = "postgres"

    def __init__(self, dsn: str) -> None:
        super().__init__()
        from jobsched.stores.postgres_conn import parse_dsn, safe_target

        self.conninfo, _ = parse_dsn(dsn)  # the schema is in its search_path
        self.where = safe_target(self.conninfo)
        self._pg: Any = None

    def _rows(self, sql: str, args: Sequence[Any], plan: Sequence[str] = ()) -> list[Row]:
        import psycopg

        try:
            if self._pg is None or self._pg.closed:
                self._pg = psycopg.connect(self.conninfo, autocommit=True, connect_timeout=5)
            if not plan:
                return list(self._pg.execute(sql.replace("?", "%s"), tuple(args)).fetchall())
            with self._pg.transaction():
                for setting in plan:
                    self._pg.execute(setting)
                return list(self._pg.execute(sql.replace("?", "%s"), tuple(args)).fetchall())
        except psycopg.Error as exc:
            self.close()
            raise Unavailable(f"cannot read PostgreSQL at {self.where}: {exc}") from exc

    def _columns(self, table: str) -> set[str]:
        rows = self._rows(
            "SELECT column_name FROM information_schema.columns "
            "WHERE table_name = ? AND table_schema = current_schema()",
            (table,),
        )
        return {str(r[0]) for r in rows}

    def close(self) -> None:
        pg, self._pg = self._pg, None
        if pg is not None:
            pg.close()


def open_reader(db: str | None) -> Reader | None:
    """A reader for a ``--db`` value; None for the memory store (no tables)."""
    if not db:
        return None
    if db.startswith(("postgresql://", "postgres://")):
        return PostgresReader(db)
    return SqliteReader(db)
