"""The memory backend for the store fixtures: every handle shares one store."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from jobsched.stores.base import Store
from jobsched.stores.memory import MemoryStore


@contextmanager
def database(tmp_path: Path) -> Iterator[object]:
    shared = MemoryStore()

    def factory() -> Store:
        return shared

    yield factory
