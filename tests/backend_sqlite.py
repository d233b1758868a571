"""The SQLite backend for the store fixtures: every handle is another connection
(as another process would open) to one file in the test's tmp_path."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from jobsched.stores.base import Store
from jobsched.stores.sqlite import SQLiteStore


@contextmanager
def database(tmp_path: Path) -> Iterator[Callable[[], Store]]:
    path = str(tmp_path / "jobs.db")
    opened: list[SQLiteStore] = []

    def factory() -> Store:
        store = SQLiteStore(path)
        opened.append(store)
        return store

    try:
        yield factory
    finally:
        for store in opened:
            store.close()
