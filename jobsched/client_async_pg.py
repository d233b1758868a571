"""``AsyncClient``'s ``connection=`` for a ``psycopg.AsyncConnection``.

The ``Client`` call runs in a worker thread as every ``AsyncClient`` call does,
with the store's own code and SQL (``postgres_caller.borrowed``: savepoint,
search_path, the NOTIFY delivered at the application's commit). What it is
given as its connection is a ``LoopConnection``: a synchronous stand-in for a
``psycopg.Connection`` whose every statement is a coroutine on the
application's ``AsyncConnection``, submitted to the application's event loop
(``asyncio.run_coroutine_threadsafe``) while the worker thread waits for its
answer. So the statements run in the application's transaction, on its
loop, and the loop is never blocked: it only runs the statements' I/O.

What the store uses of a psycopg connection, and nothing more, is here:
``execute`` (its cursor's ``fetchone``, ``fetchall``, ``description``,
``rowcount``, iteration), ``cursor()`` with ``execute``, ``executemany`` and
``copy`` (``write_row``: the rows are sent in one coroutine when the copy
block ends), ``pipeline()`` (statements then go one at a time: the same
results, one round trip each), ``row_factory``, ``info``, ``closed``,
``broken`` and ``autocommit``. Errors are psycopg's own, raised in the worker
thread, so the store's fault handling reads them as it would from its own
connection.

Only ``AsyncClient`` makes one, for one call, on the loop's thread; its
statements must never be awaited from that thread (the loop would wait for
itself): ``_wait`` refuses.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Iterable, Iterator, Sequence
from contextlib import contextmanager
from types import TracebackType
from typing import Any, TypeVar

import psycopg
from psycopg.rows import tuple_row

from jobsched.stores.postgres_caller import StandIn

__all__ = ["LoopConnection"]

T = TypeVar("T")
Row = tuple[Any, ...]


class Answer:
    """A statement's answer, read in full on the loop: what a psycopg cursor
    gives after ``execute``."""

    def __init__(self, rows: list[Row], description: Any, rowcount: int) -> None:
        self.rows, self.description, self.rowcount = rows, description, rowcount
        self._next = 0

    def fetchone(self) -> Row | None:
        if self._next >= len(self.rows):
            return None
        self._next += 1
        return self.rows[self._next - 1]

    def fetchall(self) -> list[Row]:
        rest, self._next = self.rows[self._next :], len(self.rows)
        return rest

    def __iter__(self) -> Iterator[Row]:
        return iter(self.fetchall())


class LoopConnection(StandIn):
    """A ``psycopg.Connection`` for the store, over ``aconn`` on ``loop`` (see
    the module docstring). Made on the loop's thread; used from another."""

    #: What client_transports calls it in its errors: what the application gave.
    stands_for = "psycopg.AsyncConnection"

    def __init__(
        self, aconn: psycopg.AsyncConnection[Any], loop: asyncio.AbstractEventLoop
    ) -> None:
        self.aconn, self.loop = aconn, loop
        self._loop_thread = threading.get_ident()
        self.row_factory: Any = tuple_row  # set by the store (borrowed); the app's is untouched

    # -- what the store reads -------------------------------------------------

    @property
    def info(self) -> Any:
        return self.aconn.info

    @property
    def closed(self) -> bool:
        return bool(self.aconn.closed)

    @property
    def broken(self) -> bool:
        return bool(self.aconn.broken)

    @property
    def autocommit(self) -> bool:
        return bool(self.aconn.autocommit)

    # -- statements -----------------------------------------------------------

    def execute(
        self, query: Any, params: Any = None, *, prepare: bool | None = None, binary: bool = False
    ) -> Answer:
        return self._wait(self._execute(query, params, prepare, binary))

    def cursor(self) -> Cursor:
        return Cursor(self)

    @contextmanager
    def pipeline(self) -> Iterator[None]:
        # The statements go one at a time, each answered before the next:
        # the answers a pipeline would give, with a round trip each.
        yield None

    async def _execute(
        self, query: Any, params: Any, prepare: bool | None = None, binary: bool = False
    ) -> Answer:
        async with self.aconn.cursor(row_factory=self.row_factory, binary=binary) as cur:
            await cur.execute(query, params, prepare=prepare)
            rows = await cur.fetchall() if cur.description is not None else []
            return Answer(rows, cur.description, cur.rowcount)

    async def _executemany(self, query: Any, params: Sequence[Any]) -> Answer:
        async with self.aconn.cursor(row_factory=self.row_factory) as cur:
            await cur.executemany(query, params)
            return Answer([], None, cur.rowcount)

    async def _copy(self, statement: Any, rows: Sequence[Sequence[Any]]) -> None:
        async with self.aconn.cursor() as cur, cur.copy(statement) as copy:
            for row in rows:
                await copy.write_row(row)

    def _wait(self, work: Coroutine[Any, Any, T]) -> T:
        """Run ``work`` on the application's loop; this (worker) thread waits."""
        if threading.get_ident() == self._loop_thread:
            work.close()
            raise RuntimeError("a LoopConnection statement awaited on its own loop's thread")
        return asyncio.run_coroutine_threadsafe(work, self.loop).result()


class Cursor:
    """``LoopConnection.cursor()``: its statements, and COPY ... FROM STDIN."""

    def __init__(self, conn: LoopConnection) -> None:
        self._conn = conn
        self._answer = Answer([], None, -1)

    def execute(self, query: Any, params: Any = None, *, prepare: bool | None = None) -> Cursor:
        self._answer = self._conn.execute(query, params, prepare=prepare)
        return self

    def executemany(self, query: Any, params_seq: Iterable[Any]) -> None:
        self._answer = self._conn._wait(self._conn._executemany(query, list(params_seq)))

    def copy(self, statement: Any) -> Copy:
        return Copy(self._conn, statement)

    def fetchone(self) -> Row | None:
        return self._answer.fetchone()

    def fetchall(self) -> list[Row]:
        return self._answer.fetchall()

    @property
    def description(self) -> Any:
        return self._answer.description

    @property
    def rowcount(self) -> int:
        return self._answer.rowcount

    def close(self) -> None:
        pass

    def __enter__(self) -> Cursor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Copy:
    """``COPY ... FROM STDIN``: the rows are kept, then sent in one coroutine
    when the block ends without an error (which ends the COPY on the server
    too: an error in the block sends nothing)."""

    def __init__(self, conn: LoopConnection, statement: Any) -> None:
        self._conn, self._statement = conn, statement
        self._rows: list[Sequence[Any]] = []

    def write_row(self, row: Sequence[Any]) -> None:
        self._rows.append(row)

    def __enter__(self) -> Copy:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if kind is None:
            self._conn._wait(self._conn._copy(self._statement, self._rows))
