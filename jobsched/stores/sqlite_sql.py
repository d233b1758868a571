"""The SQL text of the SQLite store.

Built once, at import, from the column list (``sqlite_schema``). SQLite's
planner has no statistics here, so the hot statements name their index
(``INDEXED BY``): the test of the query plans (tests/test_sqlite_store.py)
fails if one stops using it.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from functools import lru_cache
from itertools import chain
from typing import Any

from jobsched.jobs import MAX_PRIORITY, Job
from jobsched.stores import sql_queues as sq
from jobsched.stores.sqlite_schema import (
    COLUMNS,
    FRESH_COLUMNS,
    FRESH_FIXED,
    FRESH_SHAPE,
    RUN_TIME,
    SELECT,
    fresh_row,
    fresh_shape,
    job_to_row,
)

ROW = f"({', '.join('?' * (len(COLUMNS) + 1))})"
INSERT = f"INSERT INTO jobs ({', '.join(COLUMNS)}, touched_ms) VALUES {ROW}"
# insert_many writes this many rows per statement: one multi-row INSERT costs
# ~40% less per row than executemany of INSERT, which runs a statement (and
# updates AUTOINCREMENT's sqlite_sequence row) per job. 200 rows bind 6,400
# parameters, within SQLite's limit (32,766 by default).
BULK_ROWS = 200
# Fresh jobs (sqlite_schema.FRESH_COLUMNS) go this many rows per statement:
# measured, 100 narrow rows a statement cost less per row than 200 or 500.
FRESH_ROWS = 100
# Store.replace writes the run-time columns only (sqlite_schema.RUN_TIME).
REPLACE = (
    f"UPDATE jobs SET {', '.join(f'{c} = ?' for c in RUN_TIME)}, touched_ms = ? "
    "WHERE job_id = ? AND state = ?"
)
CLAIM_SQL = (
    "UPDATE jobs SET state = 'running', locked_by = ?, locked_until = ?, touched_ms = ? "
    # INDEXED BY: without statistics the planner prefers jobs_state, then sorts
    # every scheduled job to find the first few; jobs_due is already in order
    # (one due range per priority, see sql_queues.PRIORITIES).
    "WHERE seq IN (SELECT seq FROM jobs INDEXED BY jobs_due "
    f"WHERE state IN ('scheduled', 'retrying') AND priority IN {sq.PRIORITIES} "
    "AND due_at <= ? AND {free} ORDER BY priority, due_at, seq LIMIT ?) "
    f"RETURNING {SELECT}"
)
# By whether limits apply: the claim of a store with no restricting queue settings.
CLAIM = {limits: CLAIM_SQL.replace("{free}", sq.no_restriction(limits)) for limits in (False, True)}
INSERT_RUN = (
    "INSERT INTO runs (job_id, started_at, finished_at, outcome, error, node, recorded_ms) "
    "VALUES (?, ?, ?, ?, ?, ?, ?)"
)
D = sq.Dialect("?", SELECT, False, queue_index="INDEXED BY jobs_queue_due")
FINAL = "('completed', 'dead', 'cancelled')"


# The earliest due time: the first of each priority's range of jobs_due
# (with NEXT_DUE_AFTER, of the range after ?1).
def _next_due(where: str) -> str:
    return (
        "SELECT min(d) FROM ("
        + " UNION ALL ".join(
            f"SELECT * FROM (SELECT due_at AS d FROM jobs INDEXED BY jobs_due "
            f"WHERE state IN ('scheduled', 'retrying') AND priority = {p} "
            f"AND due_at IS NOT NULL{where} ORDER BY due_at LIMIT 1)"
            for p in range(MAX_PRIORITY + 1)
        )
        + ")"
    )


NEXT_DUE = _next_due("")
NEXT_DUE_AFTER = _next_due(" AND due_at > ?1")


# Bound parameters per statement: far below SQLite's limit (32,766).
CHUNK = 500


@lru_cache(maxsize=8)
def bulk_insert(rows: int) -> str:
    """INSERT for ``rows`` rows (a batch's last statement is shorter)."""
    return INSERT + f", {ROW}" * (rows - 1)


def in_chunks(db: sqlite3.Connection, select: str, ids: Sequence[str]) -> list[tuple[object, ...]]:
    """The rows of ``select ... WHERE job_id IN (ids)``, a chunk of ids at a time."""
    rows: list[tuple[object, ...]] = []
    for at in range(0, len(ids), CHUNK):
        part = ids[at : at + CHUNK]
        sql = f"{select} WHERE job_id IN ({', '.join('?' * len(part))})"
        rows.extend(db.execute(sql, part).fetchall())
    return rows


def _literal(value: Any) -> str:
    """A FRESH_FIXED value as SQL text (they are None, int or str)."""
    if value is None:
        return "NULL"
    if type(value) is int:
        return str(value)
    if type(value) is str:
        return "'" + value.replace("'", "''") + "'"
    raise TypeError(f"no SQL literal for {value!r}")  # pragma: no cover - a new column's type


@lru_cache(maxsize=8)
def fresh_insert(rows: int) -> str:
    """INSERT of ``rows`` fresh jobs: ?1 is touched_ms, then each row's
    FRESH_COLUMNS values; the other columns are FRESH_FIXED's literals."""
    width = len(FRESH_COLUMNS)
    fixed = ", ".join(_literal(v) for v in FRESH_FIXED.values())
    values = ", ".join(
        "(" + ", ".join(f"?{2 + r * width + c}" for c in range(width)) + f", ?1, {fixed})"
        for r in range(rows)
    )
    names = ", ".join((*FRESH_COLUMNS, "touched_ms", *FRESH_FIXED))
    return f"INSERT INTO jobs ({names}) VALUES {values}"


def insert_statements(jobs: Sequence[Job], stamp: int) -> Iterator[tuple[str, list[Any]]]:
    """``(sql, parameters)`` that insert ``jobs`` in list order (so their seqs
    follow it): runs of fresh jobs by ``fresh_insert``, the rest whole."""
    fresh = [shape == FRESH_SHAPE for shape in map(fresh_shape, jobs)]
    at = 0
    while at < len(jobs):
        kind = fresh[at]
        end = min(len(jobs), at + (FRESH_ROWS if kind else BULK_ROWS))
        if (not kind) in fresh[at:end]:  # the run stops at the first job of the other kind
            end = fresh.index(not kind, at, end)
        part = jobs[at:end]
        if kind:
            yield fresh_insert(len(part)), [stamp, *chain.from_iterable(map(fresh_row, part))]
        else:
            rows = [(*job_to_row(job), stamp) for job in part]
            yield bulk_insert(len(part)), [v for row in rows for v in row]
        at = end
