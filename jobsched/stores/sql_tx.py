"""Re-entrant transactions for the SQL stores (SQLite and PostgreSQL), written once.

Each thread's connection carries a ``TxState``: how many blocks are open on
it (``depth``, 0 when none) and, once a fault has struck the open
transaction, why it can no longer commit (``doomed``). A ``Block`` is one
``transaction()`` block:

- the outermost begins the transaction and, at its exit, commits it, or rolls
  it back when the block raised (the exception goes on);
- an inner block is a savepoint named by its depth (``sp1``, ``sp2``, ...):
  rolled back to and released when the block raises, released when it does
  not, so that the outer block goes on either way;
- ``joined`` is for a store call of several statements that must be atomic:
  inside the caller's transaction it is part of it, with no savepoint (two
  statements fewer: on PostgreSQL two round trips fewer), since a failure
  there goes up through the caller's block, which undoes it; alone it is a
  transaction of its own;
- a doomed transaction runs no more savepoint statements, and its end rolls
  back and raises ``Unavailable``: nothing of it is applied;
- a driver error at commit rolls back and raises ``Unavailable``, unless the
  driver finds that the commit went through all the same (PostgreSQL looks the
  transaction up when the COMMIT's answer is lost).

What differs between the drivers are the hooks of ``Transactions``: how to
begin (SQLite takes the write lock up front and may fall back to a read-only
transaction; PostgreSQL may first have to connect), and what a failed
savepoint statement does (SQLite raises ``Unavailable``; PostgreSQL dooms the
transaction, and the calls inside report it). A fault at begin dooms the
transaction rather than raising, so that every request inside still gets its
own answer.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Generic, TypeVar

from jobsched.errors import Unavailable


@dataclass(slots=True)
class TxState:
    """Where one thread's connection is in a transaction."""

    depth: int = 0
    doomed: str | None = None  # why the open transaction can no longer commit


C = TypeVar("C", bound=TxState)


class Transactions(ABC, Generic[C]):
    """The driver side of ``Block``: a SQL store (or its pool) implements the hooks."""

    #: The driver's error class: what a failed COMMIT raises.
    tx_errors: type[Exception] = Exception
    #: The start of the Unavailable text when a doomed transaction ends.
    tx_doomed: str = "the transaction was rolled back"
    #: The start of the Unavailable text when COMMIT fails.
    tx_commit_failed: str = "the commit failed"

    @abstractmethod
    def _tx_begin(self, conn: C) -> None:
        """Begin the outermost transaction (``conn.doomed`` is None on entry).
        A fault dooms it (sets ``conn.doomed``) instead of raising."""

    @abstractmethod
    def _tx_commit(self, conn: C) -> None:
        """Commit; a failure raises ``tx_errors`` (the caller rolls back)."""

    @abstractmethod
    def _tx_rollback(self, conn: C) -> None:
        """Roll the transaction back; never raises (a broken connection is dropped)."""

    @abstractmethod
    def _tx_control(self, conn: C, sql: str) -> None:
        """Run a savepoint statement inside a transaction that is not doomed."""

    @abstractmethod
    def _tx_describe(self, exc: Exception) -> str:
        """The operator's reading of a driver error."""

    def _tx_committed_anyway(self, conn: C, exc: Exception) -> bool:
        """Whether a COMMIT that raised ``exc`` did commit (its answer was lost)."""
        return False

    def _tx_end(self, conn: C, failed: bool) -> None:
        """End the outermost transaction: roll back if the block raised or the
        transaction is doomed (then raise Unavailable), otherwise commit."""
        conn.depth = 0
        if failed:
            self._tx_rollback(conn)
            return
        if conn.doomed is not None:
            self._tx_rollback(conn)
            raise Unavailable(f"{self.tx_doomed}: {conn.doomed}")
        try:
            self._tx_commit(conn)
        except self.tx_errors as exc:
            self._tx_rollback(conn)
            if self._tx_committed_anyway(conn, exc):
                return
            raise Unavailable(f"{self.tx_commit_failed}: {self._tx_describe(exc)}") from exc


class Block(Generic[C]):
    """One transaction() block on one connection (see the module docstring). A
    class, not a generator context manager: the stdio node opens one per request."""

    __slots__ = ("conn", "driver", "savepoint")

    def __init__(self, driver: Transactions[C], conn: C) -> None:
        self.driver, self.conn = driver, conn
        self.savepoint: str | None = None

    def __enter__(self) -> None:
        conn = self.conn
        if conn.depth == 0:
            conn.doomed = None
            self.driver._tx_begin(conn)
            conn.depth = 1
            return
        self.savepoint = f"sp{conn.depth}"
        if conn.doomed is None:
            self.driver._tx_control(conn, f"SAVEPOINT {self.savepoint}")
        conn.depth += 1

    def __exit__(self, kind: type[BaseException] | None, exc: object, tb: object) -> None:
        conn, name = self.conn, self.savepoint
        if name is None:
            self.driver._tx_end(conn, failed=kind is not None)
            return
        conn.depth -= 1
        if conn.doomed is not None:
            return
        if kind is not None:
            self.driver._tx_control(conn, f"ROLLBACK TO SAVEPOINT {name}")
        if conn.doomed is None:
            self.driver._tx_control(conn, f"RELEASE SAVEPOINT {name}")


def joined(driver: Transactions[C], conn: C) -> AbstractContextManager[None]:
    """The caller's open transaction, or a new one (see the module docstring)."""
    return nullcontext() if conn.depth else Block(driver, conn)
