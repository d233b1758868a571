"""The long way of a PostgreSQL claim in two statements, not one per step.

``sql_queues.claim_restricted`` reads the restricting queue settings, then
counts, reads candidates and takes them, a statement each: on PostgreSQL each
is a round trip made while the limited queues' settings rows are locked, so
every other node's claim waits for all of them. Here the settings are read
and locked first (``sql_queues.restricting``: it must be its own statement,
because a statement's snapshot is taken when it starts, and only one that
starts after the lock is granted sees the runs the previous holder claimed),
then one statement does the rest: each limited queue's free slots (its runs
in flight, its starts in the rate window), its candidates up to them, the
other queues' candidates, the merge in claim order cut to the limit, the
guarded take, and the rate-limited queues' starts recorded and their
expired starts pruned. The rules are ``sql_queues``'s and docs/queues.md's.

The two statements go in one round trip when the node has seen the settings
before: the claim is built from those and checked against the settings the
lock read (``claim_limited``).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

from jobsched.jobs import Job
from jobsched.queues import QueueSettings
from jobsched.stores import sql_queues as sq
from jobsched.stores.postgres_sql import PAIRS, other_rows, queue_rows

Bound = tuple[str, list[Any]]  # SQL text and its arguments


def _bound(q: QueueSettings | None, now: int, limit: int) -> Bound:
    """SQL for how many of queue ``q`` to read, and its arguments: the claim's
    ``limit``, and for a limited queue at most ``queues.free_slots``, counted
    by the statement itself."""
    bounds: list[str] = ["%s"]
    args: list[Any] = [limit]
    if q is not None and q.concurrency is not None:
        bounds.append("%s - (SELECT count(*) FROM jobs WHERE state = 'running' AND queue = %s)")
        args += [q.concurrency, q.name]
    if q is not None and q.rate_max is not None and q.rate_per_ms is not None:
        bounds.append("%s - (SELECT count(*) FROM queue_starts WHERE queue = %s AND at > %s)")
        args += [q.rate_max, q.name, now - q.rate_per_ms]
    if len(bounds) == 1:
        return "%s", args
    return f"GREATEST(0, LEAST({', '.join(bounds)}))", args


def _candidates(
    now: int,
    limit: int,
    rules: list[QueueSettings],
    only: frozenset[str] | None,
    limits: bool,
    lock: bool,
) -> tuple[list[str], list[Any], dict[str, QueueSettings]]:
    """The claim's candidate CTEs (``c0``, ``c1``, ...), their arguments, and
    the restricting queues by name. ``_with`` puts them in a WITH."""
    special = sq.restricting_by_name(rules, limits)
    ctes: list[str] = []
    args: list[Any] = []
    for name in sorted(special if only is None else only):
        q = special.get(name)
        if q is not None and q.paused:
            continue
        bound, bound_args = _bound(q, now, limit)
        ctes.append(f"c{len(ctes)} AS ({queue_rows(bound, lock)})")
        args += [name, now, *bound_args, *bound_args]
    if only is None:
        # The other queues' candidates, per (queue, priority) pair: never a walk
        # of the jobs the queues above hold back (postgres_sql.PAIRS).
        ctes.append(f"c{len(ctes)} AS ({other_rows(len(special), '%s', lock)})")
        args += [now, limit, *sorted(special), limit]
    return ctes, args, special


def _with(ctes: list[str], only: frozenset[str] | None) -> str:
    """The WITH of the candidate CTEs (and of ``PAIRS``, which the other
    queues' candidates read when only is None)."""
    return f"WITH RECURSIVE {', '.join([PAIRS, *ctes] if only is None else ctes)}"


def _union(ctes: list[str]) -> str:
    return " UNION ALL ".join(f"SELECT * FROM c{i}" for i in range(len(ctes)))


def look_sql(
    now: int,
    limit: int,
    rules: list[QueueSettings],
    only: frozenset[str] | None,
    limits: bool,
) -> tuple[str, list[Any]] | None:
    """A read of how many jobs a claim under these settings would take, with
    no lock: a node whose last claim took nothing looks first (``claim_limited``)."""
    ctes, args, _ = _candidates(now, limit, rules, only, limits, lock=False)
    if not ctes:
        return None
    return f"{_with(ctes, only)} SELECT count(*) FROM ({_union(ctes)}) u", args


def claim_sql(
    now: int,
    limit: int,
    lease: tuple[str, int, int],
    rules: list[QueueSettings],
    only: frozenset[str] | None,
    limits: bool,
) -> tuple[str, list[Any]] | None:
    """The one statement, and its arguments; None when nothing can be taken
    (every queue it may claim from is paused or not there)."""
    ctes, args, special = _candidates(now, limit, rules, only, limits, lock=True)
    if not ctes:
        return None
    owner, until, stamp = lease
    sql = (
        f"{_with(ctes, only)}, "
        f"picked AS (SELECT seq FROM ({_union(ctes)}) u ORDER BY priority, due_at, seq LIMIT %s), "
        "took AS (UPDATE jobs SET state = 'running', locked_by = %s, locked_until = %s, "
        "touched_ms = %s FROM picked WHERE jobs.seq = picked.seq "
        f"AND jobs.state IN ('scheduled', 'retrying') RETURNING jobs.*)"
    )
    args += [limit, owner, until, stamp]
    rated = [special[n] for n in sorted(special) if limits and special[n].rate_max is not None]
    if rated:
        # The window's starts were counted above on the statement's snapshot,
        # so pruning the expired ones in the same statement changes no count.
        names = ", ".join(["%s"] * len(rated))
        sql += (
            f", started AS (INSERT INTO queue_starts (queue, at) SELECT queue, %s FROM took "
            f"WHERE queue IN ({names}) RETURNING 1), pruned AS (DELETE FROM queue_starts "
            "WHERE " + " OR ".join(["(queue = %s AND at <= %s)"] * len(rated)) + " RETURNING 1)"
        )
        args += [now, *(q.name for q in rated)]
        for q in rated:
            args += [q.name, now - (q.rate_per_ms or 0)]
    return sql, args


Both = Callable[[Bound, Bound], tuple[list[Any], list[Any]]]  # two reads, one round trip


class _Stale(Exception):
    """The settings guessed for a claim were not the settings read with it."""


@dataclass(frozen=True, slots=True)
class Memory:
    """What this node knows from its earlier claims (``claim_limited``):
    ``seen``, the settings its last limited claim read; ``took_nothing``,
    True when that claim took no job. ``both``: two reads in one round trip;
    ``savepoint``: a nested transaction (it rides with the next statement)."""

    both: Both
    savepoint: Callable[[], AbstractContextManager[None]]
    seen: list[QueueSettings] | None = None
    took_nothing: bool = False


def claim_limited(
    run: sq.Run,
    d: sq.Dialect,
    parse: Callable[[Any], Job],
    now: int,
    limit: int,
    lease: tuple[str, int, int],
    only: frozenset[str] | None,
    limits: bool,
    tried_plain: bool,
    memory: Memory,
) -> tuple[list[Job], list[QueueSettings]]:
    """``sql_queues.claim_restricted``, in two statements (module docstring).
    ``d``: PostgreSQL's dialect (its ``select``: the job columns returned).

    When this node's last claim took nothing (``memory.took_nothing``), the
    settings and the jobs a claim would take are read first, with no lock
    (one round trip), and when the settings are the same and no job could be
    taken, nothing is locked: a claim that locks the settings holds every
    other node's claim until its COMMIT is flushed, though it takes nothing
    (two nodes on a full queue: one node's claims took the slots, the
    other's, all empty, made it wait). What frees a slot or makes a job due
    after that read wakes the node as it would after an empty claim.

    Otherwise, with settings seen before, the lock and the claim built from
    those settings are sent together (one round trip, not two: the claim's
    snapshot is still taken after the lock is granted, as the server runs
    them in order), in a savepoint; when the settings read are not the ones
    guessed, the savepoint is rolled back (the claim and its lock undone) and
    the claim is made again from what was read."""
    seen = memory.seen
    if seen is not None and memory.took_nothing and limits:
        probe = look_sql(now, limit, seen, only, limits)
        rows, counted = memory.both((sq.RESTRICTING, []), probe or ("SELECT 0", []))
        if _read(rows) == seen and counted[0][0] == 0:
            return [], seen
    if seen and (built := claim_sql(now, limit, lease, seen, only, limits)) is not None:
        try:
            with memory.savepoint():
                locked: Bound = (sq.restricting_sql(d, limits), [])
                rows, taken = memory.both(locked, _returning(built, d))
                if _read(rows) != seen:
                    raise _Stale
            return [parse(row) for row in taken], seen
        except _Stale:
            pass
    rules = sq.restricting(run, d, limits)
    if tried_plain and not rules and only is None:
        return [], rules
    built = claim_sql(now, limit, lease, rules, only, limits)
    if built is None:
        return [], rules
    sql, args = _returning(built, d)
    return [parse(row) for row in run(sql, args)], rules


def _read(rows: list[Any]) -> list[QueueSettings]:
    return [sq.settings_from(r) for r in rows]


def _returning(built: Bound, d: sq.Dialect) -> Bound:
    sql, args = built
    return f"{sql} SELECT {d.select} FROM took", args
