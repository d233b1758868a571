"""The PostgreSQL backend for the store fixtures: a fresh schema per test on the
real server (``JOBSCHED_TEST_PG``, default the local trust-auth ``test`` database).

Every handle the factory opens is another PostgresStore (its own connections,
as another node would have) on that schema. The schema is dropped afterwards.
An unreachable server fails the test: PostgreSQL tests never skip.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg

from jobsched.stores.base import Store
from jobsched.stores.postgres import PostgresStore

DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/test"


def base_dsn() -> str:
    return os.environ.get("JOBSCHED_TEST_PG") or DEFAULT_DSN


def with_schema(dsn: str, schema: str) -> str:
    return f"{dsn}{'&' if '?' in dsn else '?'}schema={schema}"


def admin() -> psycopg.Connection[tuple[Any, ...]]:
    """A plain autocommit connection to the test server; fails loudly if down."""
    try:
        return psycopg.connect(base_dsn(), autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        raise AssertionError(
            f"PostgreSQL is unreachable at {base_dsn()} (set JOBSCHED_TEST_PG, or start it: "
            "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start): "
            f"{exc}"
        ) from exc


def drop_schema(schema: str) -> None:
    with admin() as db:
        # End leftover sessions of this test (child processes killed mid-run)
        # so that the DROP does not wait for their locks.
        db.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE pid <> pg_backend_pid() AND query ILIKE %s",
            (f"%{schema}%",),
        )
        db.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@contextmanager
def fresh_schema() -> Iterator[str]:
    """A new, unused schema name (created by the first store), dropped afterwards."""
    schema = f"t_{uuid.uuid4().hex[:16]}"
    admin().close()  # fail here, clearly, when the server is down
    try:
        yield schema
    finally:
        drop_schema(schema)


@contextmanager
def database(tmp_path: Path) -> Iterator[Callable[[], Store]]:
    opened: list[PostgresStore] = []
    with fresh_schema() as schema:
        dsn = with_schema(base_dsn(), schema)

        def factory() -> Store:
            store = PostgresStore(dsn)
            opened.append(store)
            return store

        try:
            yield factory
        finally:
            for store in opened:
                store.close()
