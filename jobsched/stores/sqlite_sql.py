"""The SQL text of the SQLite store.

Built once, at import, from the column list (``sqlite_schema``). SQLite's
planner has no statistics here, so the hot statements name their index
(``INDEXED BY``): the test of the query plans (tests/test_sqlite_store.py)
fails if one stops using it.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from functools import lru_cache

from jobsched.stores import sql_queues as sq
from jobsched.stores.sqlite_schema import COLUMNS, RUN_TIME, SELECT

ROW = f"({', '.join('?' * (len(COLUMNS) + 1))})"
INSERT = f"INSERT INTO jobs ({', '.join(COLUMNS)}, touched_ms) VALUES {ROW}"
# insert_many writes this many rows per statement: one multi-row INSERT costs
# ~40% less per row than executemany of INSERT, which runs a statement (and
# updates AUTOINCREMENT's sqlite_sequence row) per job. 200 rows bind 6,400
# parameters, within SQLite's limit (32,766 by default).
BULK_ROWS = 200
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
D = sq.Dialect(
    "?", SELECT, False, due_index="INDEXED BY jobs_due", queue_index="INDEXED BY jobs_queue_due"
)
FINAL = "('completed', 'dead', 'cancelled')"
# The earliest due time: the first of each priority's range of jobs_due.
NEXT_DUE = (
    "SELECT min(d) FROM ("
    + " UNION ALL ".join(
        f"SELECT * FROM (SELECT due_at AS d FROM jobs INDEXED BY jobs_due "
        f"WHERE state IN ('scheduled', 'retrying') AND priority = {p} "
        "AND due_at IS NOT NULL ORDER BY due_at LIMIT 1)"
        for p in range(10)
    )
    + ")"
)


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
