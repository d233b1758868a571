"""Shared fixtures. ``store`` runs a test once per backend (memory, SQLite, PostgreSQL).

Each backend's factory lives in ``tests/backend_<name>.py``. A backend that
cannot be set up fails its tests; none is skipped silently.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from jobsched.stores.base import Store

BACKENDS = ("memory", "sqlite", "postgres")

StoreFactory = Callable[[], Store]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def make_store(backend: str, tmp_path: Path) -> Iterator[StoreFactory]:
    """A factory of stores on one fresh database: every call opens another
    handle to the same data (another "process"), for restart and race tests."""
    module = importlib.import_module(f"tests.backend_{backend}")
    with module.database(tmp_path) as factory:
        yield factory


@pytest.fixture
def store(make_store: StoreFactory) -> Iterator[Store]:
    s = make_store()
    yield s
    s.close()
