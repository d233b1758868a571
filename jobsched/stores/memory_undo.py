"""Transactions of the in-memory store: blocks, savepoints and the undo log.

Promise 1 of ``stores.base``: a block holds the store's lock, and while one is
open every write appends how to undo itself to an undo log: a function of the
store and the three values it needs (the job value it replaced, the run record
it pushed out, the job it pruned, the queue settings it changed, ...). A block
that raises undoes the log back to the mark it took on entry, newest first; a
block that exits normally leaves its entries to the enclosing block, which may
still raise; the outermost exit empties the log. Outside any block nothing is
logged: each call is a transaction of its own.

Heap entries are never undone: they are lazy (a stale entry is dropped when it
is met), and every undone change pushes an entry for the value it restores.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

#: How to undo one write: ``undo(store, a, b, c)``.
Undo = Callable[[Any, Any, Any, Any], None]


class UndoLog:
    """Mixed into MemoryStore: the log, the marks of the open blocks, and the
    one object that serves every ``transaction()`` block."""

    def _init_undo(self) -> None:
        # Real-time mode touches the store from the dispatcher thread too.
        self._lock = threading.RLock()
        # Open blocks and their undo log: touched only by the thread holding
        # _lock, which a block holds from its entry to its exit.
        self._marks: list[int] = []  # where each open block's undo entries start
        self._undo: list[tuple[Undo, Any, Any, Any]] = []
        self._blocks = Blocks(self)

    def _undo_to(self, mark: int) -> None:
        """Undo the log's entries after ``mark``, newest first, and drop them."""
        log = self._undo
        while len(log) > mark:
            undo, a, b, c = log.pop()
            undo(self, a, b, c)


class Blocks:
    """The transaction() blocks of one store. One object serves them all (their
    marks are a stack): the stdio node opens a block per request. A block holds
    the store's lock, and undoes its writes if it raises."""

    __slots__ = ("lock", "marks", "store", "undo")

    def __init__(self, store: UndoLog) -> None:
        self.store, self.lock = store, store._lock
        self.marks, self.undo = store._marks, store._undo

    def __enter__(self) -> None:
        self.lock.acquire()
        self.marks.append(len(self.undo))

    def __exit__(self, kind: type[BaseException] | None, exc: object, tb: object) -> None:
        mark = self.marks.pop()
        try:
            if kind is not None:
                self.store._undo_to(mark)
        finally:
            if not self.marks:
                self.undo.clear()
            self.lock.release()
