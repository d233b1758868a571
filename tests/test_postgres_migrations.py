"""PostgreSQL schema: the migrations give exactly the checked-in current schema,
are applied once however many nodes start together, and a database newer than
the code is refused."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from jobsched.errors import JobschedError, StoreVersionError
from jobsched.stores import migrate, postgres
from jobsched.stores.postgres import PostgresStore
from tests.backend_postgres import admin, base_dsn, fresh_schema, with_schema
from tests.harness import ROOT

Catalog = dict[str, list[tuple[Any, ...]]]


def catalog(schema: str) -> Catalog:
    """Everything that defines the schema's tables, read from the catalogs."""
    with admin() as db:
        return {
            "columns": db.execute(
                "SELECT table_name, column_name, ordinal_position, data_type, is_nullable, "
                "column_default, is_identity, identity_generation FROM information_schema.columns "
                "WHERE table_schema = %s ORDER BY table_name, ordinal_position",
                (schema,),
            ).fetchall(),
            "indexes": db.execute(
                "SELECT tablename, indexname, replace(indexdef, %s, '') FROM pg_indexes "
                "WHERE schemaname = %s ORDER BY indexname",
                (f"{schema}.", schema),
            ).fetchall(),
            "constraints": db.execute(
                "SELECT c.conrelid::regclass::text, c.conname, c.contype, "
                "pg_get_constraintdef(c.oid) FROM pg_constraint c "
                "JOIN pg_namespace n ON n.oid = c.connamespace WHERE n.nspname = %s "
                "ORDER BY 2",
                (schema,),
            ).fetchall(),
        }


def _strip(cat: Catalog, schema: str) -> Catalog:
    # conrelid::regclass prints schema-qualified names outside the search_path.
    return {
        k: [tuple(str(v).replace(f"{schema}.", "") for v in row) for row in rows]
        for k, rows in cat.items()
    }


@pytest.fixture
def schema() -> Iterator[str]:
    with fresh_schema() as name:
        yield name


def _open(schema: str) -> PostgresStore:
    return PostgresStore(with_schema(base_dsn(), schema))


def _applied(schema: str) -> list[tuple[Any, ...]]:
    with admin() as db:
        return db.execute(
            f'SELECT version, name, applied_ms FROM "{schema}".schema_migrations ORDER BY version'
        ).fetchall()


def test_migrations_give_exactly_the_current_schema(schema: str) -> None:
    _open(schema).close()
    with fresh_schema() as expected:
        with admin() as db:
            db.execute(f'CREATE SCHEMA "{expected}"')
            db.execute(f'SET search_path = "{expected}"')
            db.execute(migrate.MIGRATIONS_TABLE)
            db.execute(migrate.current_schema("postgres").encode())
        want = _strip(catalog(expected), expected)
    got = _strip(catalog(schema), schema)
    assert got == want
    tables = {row[0] for row in got["columns"]}
    assert tables == {
        "jobs",
        "runs",
        "nodes",
        "schema_migrations",
        "queues",
        "queue_starts",
        "unique_keys",
    }


def test_every_migration_is_recorded_once_and_a_restart_applies_nothing(schema: str) -> None:
    _open(schema).close()
    first = _applied(schema)
    known = migrate.migrations("postgres")
    assert [(v, n) for v, n, _ in first] == [(m.version, m.name) for m in known]
    _open(schema).close()
    assert _applied(schema) == first  # same rows, same applied_ms: nothing re-ran


def test_an_older_database_is_brought_up_to_date(schema: str) -> None:
    first = migrate.migrations("postgres")[0]
    with admin() as db:
        db.execute(f'CREATE SCHEMA "{schema}"')
        db.execute(f'SET search_path = "{schema}"')
        db.execute(migrate.MIGRATIONS_TABLE)
        db.execute(first.sql.encode())
        db.execute("INSERT INTO schema_migrations VALUES (%s, %s, 0)", (first.version, first.name))
    store = _open(schema)
    store.heartbeat("n1", 5)  # the nodes table of migration 2 exists now
    assert store.nodes_seen(0) == [("n1", 5, 0)]
    store.close()
    assert len(_applied(schema)) == len(migrate.migrations("postgres"))


def test_nodes_starting_together_all_succeed_and_migrate_once(schema: str) -> None:
    errors: list[BaseException] = []
    barrier = threading.Barrier(6)

    def start() -> None:
        try:
            barrier.wait()
            _open(schema).close()
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=start) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(_applied(schema)) == len(migrate.migrations("postgres"))


def test_a_database_newer_than_the_code_is_refused(schema: str) -> None:
    _open(schema).close()
    with admin() as db:
        db.execute(f"INSERT INTO \"{schema}\".schema_migrations VALUES (999, 'from_the_future', 0)")
    with pytest.raises(StoreVersionError, match="newer than this jobsched knows"):
        _open(schema)
    # Refused without touching it: the future row is still there, alone above ours.
    assert _applied(schema)[-1][:2] == (999, "from_the_future")


def test_a_bad_schema_name_is_refused() -> None:
    with pytest.raises(JobschedError, match="schema"):
        PostgresStore(with_schema(base_dsn(), "bad;name"))


def test_the_node_says_what_to_install_when_psycopg_is_missing(schema: str) -> None:
    # A child whose import of psycopg fails, as on a machine without the extra.
    code = (
        "import sys; sys.modules['psycopg'] = None; "
        "from jobsched.cli import main; sys.exit(main(['node', '--db', sys.argv[1]]))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, with_schema(base_dsn(), schema)],
        input="",
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "pip install 'jobsched[postgres]'" in proc.stderr


def test_an_unreachable_server_is_a_clear_error_at_start(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(postgres, "START_PATIENCE_S", 0.5)
    # Port 1 on loopback: nothing listens there.
    with pytest.raises(JobschedError, match="PostgreSQL"):
        PostgresStore("postgresql://postgres@127.0.0.1:1/test?connect_timeout=2")
