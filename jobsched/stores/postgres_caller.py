"""Writing inside the application's own transaction on its psycopg connection.

``borrowed(pool, conn)`` makes this thread's store calls run on ``conn``
instead of the pool's connection, so that a job is scheduled in the same
transaction as the application's own writes: it exists if, and only if, the
application commits. The store's own SQL and row mapping are used unchanged:

- the calls run in a savepoint, so that one that fails undoes only its own
  writes and leaves the application's transaction usable;
- ``search_path`` is set to the store's for the savepoint's duration (with
  ``set_config(..., true)``, put back before the savepoint is released), so
  that the store's unqualified table names reach its schema;
- the wake-up that a commit of the store sends (``NOTIFY_SQL``) is issued on
  ``conn`` too: PostgreSQL delivers it when the application commits, and
  drops it if it rolls back.

The connection must have a transaction open, or be one that opens its own at
the first statement (psycopg's default, ``autocommit=False``); an autocommit
connection outside ``conn.transaction()`` is refused: the job would commit
alone, which is what a call without ``connection=`` does anyway.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg import conninfo as pg_conninfo
from psycopg.pq import TransactionStatus
from psycopg.rows import tuple_row

from jobsched.errors import Malformed, Unavailable
from jobsched.stores.postgres_conn import Pool, _Conn, describe
from jobsched.stores.postgres_sql import notify

_SAVEPOINT = "jobsched_caller_tx"


class StandIn:
    """Base of an object that stands in for a ``psycopg.Connection`` here, with
    the methods this module and the store use: ``client_async_pg.LoopConnection``
    runs them on the application's ``AsyncConnection``."""


@contextmanager
def borrowed(pool: Pool, pg: Any) -> Iterator[None]:
    """This thread's calls on the pool's store run on ``pg`` (see the module docstring)."""
    _check(pool, pg)
    search_path = pool.search_path()
    factory = pg.row_factory
    previous = getattr(pool._tls, "conn", None)
    conn = _Conn(pg=pg, depth=1, lent=True)  # depth 1: the application's transaction
    try:
        pg.row_factory = tuple_row  # the store reads plain tuples
        old_path = _run(pg, "SELECT current_setting('search_path')")
        _run(pg, f"SAVEPOINT {_SAVEPOINT}")
        try:
            _run(pg, "SELECT set_config('search_path', %s, true)", search_path)
            if _run(pg, "SELECT to_regclass('jobs')") is None:
                raise Malformed(
                    "connection",
                    f"reaches no jobsched tables (search_path {search_path}): "
                    f"it must be a connection to the store's database, {pool.where}",
                )
            pool._tls.conn = conn
            yield
            pool._tls.conn = previous
            if conn.doomed is not None:
                raise Unavailable(f"PostgreSQL unavailable, nothing changed: {conn.doomed}")
            told = notify(pool.channel, conn.due, conn.due_queue, conn.freed)
            if told is not None:  # delivered at the application's commit
                _run(pg, told[0], *told[1])
            _run(pg, "SELECT set_config('search_path', %s, true)", old_path)
        except BaseException:
            pool._tls.conn = previous
            _undo(pg)
            raise
        _run(pg, f"RELEASE SAVEPOINT {_SAVEPOINT}")
    finally:
        pool._tls.conn = previous
        if not pg.closed:
            pg.row_factory = factory


def _run(pg: Any, sql: str, *args: Any) -> Any:
    """One statement of ours on the application's connection: its first value."""
    try:
        cur = pg.execute(sql, args) if args else pg.execute(sql)
        row = cur.fetchone() if cur.description is not None else None
    except psycopg.Error as exc:
        raise Unavailable(f"PostgreSQL unavailable, nothing changed: {describe(exc)}") from exc
    return None if row is None else row[0]


def _is_connection(pg: object) -> bool:
    return isinstance(pg, psycopg.Connection | StandIn)


def _check(pool: Pool, pg: Any) -> None:
    if not _is_connection(pg):
        kind = f"{type(pg).__module__}.{type(pg).__qualname__}"
        hint = " (an AsyncConnection: use jobsched.AsyncClient)" if "Async" in kind else ""
        raise Malformed("connection", f"must be a psycopg.Connection, not {kind}{hint}")
    status = TransactionStatus.UNKNOWN if pg.closed else pg.info.transaction_status
    if status == TransactionStatus.UNKNOWN:
        raise Malformed("connection", "is closed")
    if status == TransactionStatus.INERROR:
        raise Malformed("connection", "its transaction has failed: roll it back first")
    if status == TransactionStatus.ACTIVE:
        raise Malformed("connection", "is busy running another statement")
    if status == TransactionStatus.IDLE and pg.autocommit:
        raise Malformed(
            "connection",
            "has no transaction open (autocommit): open one with `with conn.transaction():` "
            "so that the job commits or rolls back with your own writes",
        )
    want = pg_conninfo.conninfo_to_dict(pool.conninfo).get("dbname")
    if want and pg.info.dbname != want:
        raise Malformed(
            "connection", f"is to database {pg.info.dbname!r}, not to the store's {want!r}"
        )


def _undo(pg: Any) -> None:
    """Roll back to the savepoint, if the connection still can."""
    if pg.closed or pg.info.transaction_status == TransactionStatus.UNKNOWN:
        return
    try:
        pg.execute(f"ROLLBACK TO SAVEPOINT {_SAVEPOINT}")
        pg.execute(f"RELEASE SAVEPOINT {_SAVEPOINT}")
    except psycopg.Error:  # the connection broke: its transaction is gone anyway
        pass
