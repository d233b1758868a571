"""Schema versioning of the SQLite store: migrations give exactly the current
schema, are applied once, and a database newer than the code is refused."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

import pytest

from jobsched.errors import JobschedError, StoreVersionError
from jobsched.stores import migrate
from jobsched.stores.sqlite import SQLiteStore
from jobsched.stores.sqlite_schema import ensure_schema, split_statements

Schema = list[tuple[str, ...]]


def schema_of(path: Path) -> Schema:
    """Every table's columns (in order, with types, constraints and defaults) and
    every index, trigger and view as SQLite holds them, comments and spacing aside."""
    db = sqlite3.connect(path)
    try:
        out: Schema = []
        rows = db.execute(
            "SELECT type, name, tbl_name, sql FROM sqlite_master "
            "WHERE name NOT LIKE 'sqlite_%' ORDER BY type, name"
        ).fetchall()
        for kind, name, table, sql in rows:
            if kind == "table":
                for col in db.execute(f'PRAGMA table_xinfo("{name}")'):
                    out.append(("column", name, *map(str, col)))
                out.append(("table", name, _normal(sql).split("(", 1)[0]))
            else:
                out.append((kind, name, table, _normal(sql or "")))
        return out
    finally:
        db.close()


def _normal(sql: str) -> str:
    sql = re.sub(r"--[^\n]*", "", sql)
    return re.sub(r"\s+", " ", sql).strip()


def fresh(path: Path) -> Path:
    SQLiteStore(str(path)).close()
    return path


def migrated(path: Path, upto: int | None = None) -> Path:
    """A database built by applying the migrations one by one, as upgrades do."""
    db = sqlite3.connect(path, isolation_level=None)
    db.execute(migrate.MIGRATIONS_TABLE)
    for m in migrate.migrations("sqlite")[:upto]:
        db.execute("BEGIN")
        for statement in split_statements(m.sql):
            db.execute(statement)
        db.execute("INSERT INTO schema_migrations VALUES (?, ?, 0)", (m.version, m.name))
        db.execute("COMMIT")
    db.close()
    return path


def versions(path: Path) -> list[tuple[int, str, int]]:
    db = sqlite3.connect(path)
    try:
        return db.execute("SELECT * FROM schema_migrations ORDER BY version").fetchall()
    finally:
        db.close()


def test_the_migrations_in_order_give_exactly_the_current_schema(tmp_path: Path) -> None:
    assert schema_of(migrated(tmp_path / "m.db")) == schema_of(fresh(tmp_path / "f.db"))


def test_migrations_are_numbered_from_one_without_gaps() -> None:
    known = migrate.migrations("sqlite")
    assert [m.version for m in known] == list(range(1, len(known) + 1))
    assert len(known) >= 2


def test_an_old_database_is_upgraded_to_the_current_schema(tmp_path: Path) -> None:
    old = migrated(tmp_path / "old.db", upto=1)
    SQLiteStore(str(old)).close()
    assert schema_of(old) == schema_of(fresh(tmp_path / "f.db"))
    assert [v for v, _, _ in versions(old)] == [m.version for m in migrate.migrations("sqlite")]


def test_reopening_applies_nothing(tmp_path: Path) -> None:
    path = fresh(tmp_path / "f.db")
    before = versions(path)
    db = sqlite3.connect(path, isolation_level=None)
    changes = db.total_changes
    ensure_schema(db, str(path))
    assert db.total_changes == changes
    db.close()
    SQLiteStore(str(path)).close()
    assert versions(path) == before


def test_a_database_from_a_newer_jobsched_is_refused(tmp_path: Path) -> None:
    path = fresh(tmp_path / "f.db")
    db = sqlite3.connect(path)
    db.execute("INSERT INTO schema_migrations VALUES (999, 'from_the_future', 0)")
    db.commit()
    db.close()
    with pytest.raises(StoreVersionError, match="newer than this jobsched knows"):
        SQLiteStore(str(path))
    assert max(v for v, _, _ in versions(path)) == 999  # left as it was


def test_a_sqlite_file_of_another_application_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY)")
    db.commit()
    db.close()
    with pytest.raises(JobschedError, match="no jobsched schema"):
        SQLiteStore(str(path))
