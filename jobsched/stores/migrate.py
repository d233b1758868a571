"""Schema migrations, for any SQL store: numbered ``.sql`` files and the plan of
which to apply. The store runs them (inside its own transaction) and records
each in its ``schema_migrations`` table.

Files live in ``jobsched/stores/sql/<dialect>/``: ``NNN_name.sql`` migrations,
applied in number order, and ``schema.sql``, the current schema in one piece,
used to create a new database in one step. A test per dialect checks that the
migrations applied in order give exactly what ``schema.sql`` gives.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import resources

from jobsched.errors import JobschedError, StoreVersionError

_NAME = re.compile(r"^(\d{3})_([a-z0-9_]+)\.sql$")

# Creates the table that records applied migrations; every dialect understands it.
MIGRATIONS_TABLE = (
    "CREATE TABLE IF NOT EXISTS schema_migrations ("
    "version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_ms BIGINT NOT NULL)"
)


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str


def _dir(dialect: str) -> resources.abc.Traversable:
    return resources.files("jobsched.stores").joinpath("sql", dialect)


def migrations(dialect: str) -> list[Migration]:
    """Every migration of ``dialect``, in version order; numbers must run 1, 2, 3..."""
    found = []
    for entry in _dir(dialect).iterdir():
        match = _NAME.match(entry.name)
        if match:
            version = int(match.group(1))
            found.append(Migration(version, match.group(2), entry.read_text("utf-8")))
    found.sort(key=lambda m: m.version)
    if [m.version for m in found] != list(range(1, len(found) + 1)):
        raise JobschedError(f"the {dialect} migrations are not numbered 001, 002, ...")
    return found


def current_schema(dialect: str) -> str:
    """The text of ``schema.sql``: what a new database is created from."""
    return _dir(dialect).joinpath("schema.sql").read_text("utf-8")


def pending(known: list[Migration], applied: Iterable[int], where: str) -> list[Migration]:
    """The migrations still to apply, given the versions already applied.

    A database that has a version this code does not know was written by a
    newer jobsched: running on it could corrupt data the newer code relies on,
    so it is refused.
    """
    done = set(applied)
    newest = max((m.version for m in known), default=0)
    unknown = sorted(v for v in done if v > newest)
    if unknown:
        raise StoreVersionError(
            f"{where} has schema version {unknown[-1]}, newer than this jobsched knows "
            f"({newest}): upgrade jobsched, or use a backup taken before the upgrade"
        )
    return [m for m in known if m.version not in done]
