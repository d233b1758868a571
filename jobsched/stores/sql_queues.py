"""Queues and unique keys for the SQL stores (SQLite and PostgreSQL alike).

Every function takes ``run(sql, args) -> rows`` (the store's connection, inside
its open transaction) and a ``Dialect`` (placeholder, and PostgreSQL's row
locks). The rules are docs/queues.md; the pure parts are ``jobsched.queues``.

Claims (``claim``): the queue settings that restrict claims (paused, or with
a limit) are read first; on PostgreSQL the limited ones are locked
(``FOR UPDATE``, in name order, so two claims never deadlock) for the rest of
the claim's transaction, so that two nodes never both count the same free
slot. SQLite's write lock (``BEGIN IMMEDIATE``) serialises claims already.
Without such settings and without a ``--queues`` filter, a claim is the one
statement it always was. Otherwise candidates are read queue by queue (a
limited queue's at most its free slots; a paused one's not at all, and never
read past), merged in (priority, due_at, seq) order, cut to the limit, and
taken in one guarded UPDATE.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from jobsched.jobs import MAX_PRIORITY, Job, JobState
from jobsched.queues import QueueChange, QueueReport, QueueSettings, free_slots

Run = Callable[[str, Sequence[Any]], list[Any]]
# Every priority, spelt out: SQLite then searches one due range per priority
# of the (priority, due_at, seq) index, already in claim order (no sort).
PRIORITIES = f"({', '.join(str(p) for p in range(MAX_PRIORITY + 1))})"
_RUNNABLE = "state IN ('scheduled', 'retrying')"
_NOT_FINAL = "('scheduled', 'running', 'retrying', 'paused')"
_SETTINGS = "SELECT name, concurrency, rate_max, rate_per_ms, paused FROM queues"


@dataclass(frozen=True, slots=True)
class Dialect:
    mark: str  # the driver's placeholder
    select: str  # the job columns to return, as the store reads them
    locks: bool  # PostgreSQL: FOR UPDATE [SKIP LOCKED]; SQLite: its write lock does it
    queue_index: str = ""  # SQLite: an INDEXED BY hint (its planner lacks statistics)


def settings_from(row: Sequence[Any]) -> QueueSettings:
    name, concurrency, rate_max, per_ms, paused = row
    return QueueSettings(name, concurrency, rate_max, per_ms, bool(paused))


def _marks(d: Dialect, n: int) -> str:
    return ", ".join([d.mark] * n)


def _candidates(
    run: Run, d: Dialect, now: int, limit: int, queue: str
) -> list[tuple[int, int, int]]:
    """(priority, due_at, seq) of up to ``limit`` due jobs of ``queue``, in claim order."""
    lock = " FOR UPDATE SKIP LOCKED" if d.locks else ""
    sql = (
        f"SELECT priority, due_at, seq FROM jobs {d.queue_index} WHERE {_RUNNABLE} "
        f"AND queue = {d.mark} AND priority IN {PRIORITIES} AND due_at <= {d.mark} "
        f"ORDER BY priority, due_at, seq LIMIT {d.mark}{lock}"
    )
    return [(int(p), int(due), int(seq)) for p, due, seq in run(sql, (queue, now, limit))]


def _runnable_queues(run: Run, d: Dialect) -> Iterator[str]:
    """The queues that hold runnable jobs, in name order, one index descent
    each (a loose scan of the queue due index). A claim that must leave some
    queues' jobs alone (paused, or full) reads the others' candidates queue by
    queue: filtering the held ones out of a walk of the due index instead read
    every due job they hold, on every claim (a paused queue's backlog of
    100,000 jobs made each claim read all of them)."""
    sql = (
        f"SELECT queue FROM jobs {d.queue_index} WHERE {_RUNNABLE} AND queue > {d.mark} "
        "ORDER BY queue LIMIT 1"
    )
    after = ""  # queue names are never empty (validate.queue_name)
    while rows := run(sql, (after,)):
        after = str(rows[0][0])
        yield after


def _in_flight(run: Run, d: Dialect, queue: str) -> int:
    rows = run(f"SELECT count(*) FROM jobs WHERE state = 'running' AND queue = {d.mark}", (queue,))
    return int(rows[0][0])


def _recent_starts(run: Run, d: Dialect, q: QueueSettings, now: int) -> int:
    if q.rate_max is None or q.rate_per_ms is None:
        return 0
    # Starts that left the window are pruned as claims go: the table stays small.
    run(
        f"DELETE FROM queue_starts WHERE queue = {d.mark} AND at <= {d.mark}",
        (q.name, now - q.rate_per_ms),
    )
    rows = run(f"SELECT count(*) FROM queue_starts WHERE queue = {d.mark}", (q.name,))
    return int(rows[0][0])


def _restricts(limits: bool) -> str:
    return "paused OR concurrency IS NOT NULL OR rate_max IS NOT NULL" if limits else "paused"


def no_restriction(limits: bool) -> str:
    """A claim's condition that no queue setting restricts it: with it the
    store's plain claim is one statement. When it takes nothing, the claim
    reads the restricting settings (``restricting``) and goes the long way."""
    return f"NOT EXISTS (SELECT 1 FROM queues WHERE {_restricts(limits)})"


# The settings of the queues a claim must look at: paused ones and limited ones.
RESTRICTING = f"{_SETTINGS} WHERE {_restricts(True)} ORDER BY name"


def restricting_sql(d: Dialect, lock: bool) -> str:
    """RESTRICTING, locking the rows it reads when ``lock`` and the store locks rows."""
    return RESTRICTING + (" FOR UPDATE" if lock and d.locks else "")


def restricting(run: Run, d: Dialect, lock: bool) -> list[QueueSettings]:
    """The queues a claim must look at: paused ones and limited ones."""
    return [settings_from(r) for r in run(restricting_sql(d, lock), ())]


def claim_seqs(
    run: Run,
    d: Dialect,
    now: int,
    limit: int,
    rules: list[QueueSettings],
    only: frozenset[str] | None,
    limits: bool,
) -> tuple[list[int], dict[str, QueueSettings]]:
    """The seqs to claim (in claim order), and the rate-limited queues whose
    starts the caller must record."""
    special = restricting_by_name(rules, limits)
    picked: list[tuple[int, int, int]] = []
    for name in sorted(special if only is None else only):
        q = special.get(name)
        slots: int | None = None
        if q is not None:
            if q.paused:
                continue
            slots = free_slots(q, _in_flight(run, d, name), _recent_starts(run, d, q, now))
            if slots == 0:
                continue
        picked += _candidates(run, d, now, limit if slots is None else min(limit, slots), name)
    if only is None:
        for name in _runnable_queues(run, d):
            if name not in special:
                picked += _candidates(run, d, now, limit, name)
    picked.sort()
    seqs = [seq for _, _, seq in picked[:limit]]
    rated = {n: q for n, q in special.items() if limits and q.rate_max is not None}
    return seqs, rated


def restricting_by_name(rules: list[QueueSettings], limits: bool) -> dict[str, QueueSettings]:
    """The queues of these settings that restrict a claim (paused, or limited
    when ``limits`` apply), by name."""
    return {q.name: q for q in rules if q.paused or (limits and q.limited)}


def restricts(rules: list[QueueSettings], limits: bool) -> bool:
    """Whether these settings restrict claims: a store that read them goes the
    long way first at its next claim, rather than spend the one-statement claim
    that would take nothing (it goes back once a read finds none)."""
    return bool(restricting_by_name(rules, limits))


def claim_restricted(
    run: Run,
    d: Dialect,
    parse: Callable[[Any], Job],
    now: int,
    limit: int,
    lease: tuple[str, int, int],
    only: frozenset[str] | None,
    limits: bool,
    tried_plain: bool,
) -> tuple[list[Job], list[QueueSettings]]:
    """The long way of a claim (see the module docstring): the jobs taken
    (``lease``: owner, lease end, stamp), and the restricting settings read.
    ``tried_plain``: the one-statement claim was just made and took nothing,
    so without restrictions there is nothing to take."""
    rules = restricting(run, d, limits)
    if tried_plain and not rules and only is None:
        return [], rules
    seqs, rated = claim_seqs(run, d, now, limit, rules, only, limits)
    jobs = [parse(row) for row in take(run, d, seqs, *lease)]
    record_starts(run, d, rated, jobs, now)
    return jobs, rules


def take(run: Run, d: Dialect, seqs: list[int], owner: str, until: int, stamp: int) -> list[Any]:
    """Claim these runnable jobs (guarded: a job that left runnable is left)."""
    if not seqs:
        return []
    sql = (
        f"UPDATE jobs SET state = 'running', locked_by = {d.mark}, locked_until = {d.mark}, "
        f"touched_ms = {d.mark} WHERE seq IN ({_marks(d, len(seqs))}) AND {_RUNNABLE} "
        f"RETURNING {d.select}"
    )
    return run(sql, (owner, until, stamp, *seqs))


def record_starts(
    run: Run, d: Dialect, rated: dict[str, QueueSettings], jobs: list[Job], now: int
) -> None:
    for job in jobs:
        if job.queue in rated:
            run(
                f"INSERT INTO queue_starts (queue, at) VALUES ({d.mark}, {d.mark})",
                (job.queue, now),
            )


# -- settings -------------------------------------------------------------------


def configure(run: Run, d: Dialect, name: str, change: QueueChange) -> QueueSettings:
    lock = " FOR UPDATE" if d.locks else ""
    rows = run(f"{_SETTINGS} WHERE name = {d.mark}{lock}", (name,))
    new = change.apply(settings_from(rows[0]) if rows else QueueSettings(name))
    run(
        "INSERT INTO queues (name, concurrency, rate_max, rate_per_ms, paused) "
        f"VALUES ({_marks(d, 5)}) ON CONFLICT (name) DO UPDATE SET "
        "concurrency = excluded.concurrency, rate_max = excluded.rate_max, "
        "rate_per_ms = excluded.rate_per_ms, paused = excluded.paused",
        (name, new.concurrency, new.rate_max, new.rate_per_ms, new.paused),
    )
    return new


def all_settings(run: Run) -> list[QueueSettings]:
    """Every stored queue setting, by name."""
    return [settings_from(r) for r in run(f"{_SETTINGS} ORDER BY name", ())]


def report(run: Run) -> list[QueueReport]:
    """Every queue that has settings or jobs, by name. Counting groups every
    job: an operator's call, not a hot path."""
    settings = {q.name: q for q in all_settings(run)}
    counts: dict[str, dict[JobState, int]] = {}
    for queue, state, n in run("SELECT queue, state, count(*) FROM jobs GROUP BY queue, state", ()):
        counts.setdefault(queue, {})[JobState(state)] = int(n)
    names = sorted(set(settings) | set(counts))
    return [QueueReport(settings.get(n, QueueSettings(n)), counts.get(n, {})) for n in names]


# -- unique keys ----------------------------------------------------------------


def take_key(run: Run, d: Dialect, job: Job) -> str | None:
    """Take the job's unique key (None: taken; else the id of the job that
    holds it). With a window, the key row is taken with one upsert, which two
    inserts can never both win; without, the row is only read: a concurrent
    insert of the same key is stopped by the jobs_unique index instead."""
    key, now = job.unique_key, job.created_at
    if job.unique_for_ms is None:
        rows = run(
            f"SELECT job_id FROM unique_keys WHERE key = {d.mark} AND held_until > {d.mark}",
            (key, now),
        )
        return str(rows[0][0]) if rows else None
    taken = run(
        f"INSERT INTO unique_keys (key, job_id, held_until) VALUES ({_marks(d, 3)}) "
        "ON CONFLICT (key) DO UPDATE SET job_id = excluded.job_id, "
        f"held_until = excluded.held_until WHERE unique_keys.held_until <= {d.mark} "
        "RETURNING job_id",
        (key, job.job_id, now + job.unique_for_ms, now),
    )
    if taken:
        return None
    rows = run(f"SELECT job_id FROM unique_keys WHERE key = {d.mark}", (key,))
    return str(rows[0][0]) if rows else None


def live_holder(run: Run, d: Dialect, key: str) -> str | None:
    """The job that is not final and holds ``key``, if any."""
    rows = run(
        f"SELECT job_id FROM jobs WHERE unique_key = {d.mark} AND state IN {_NOT_FINAL}", (key,)
    )
    return str(rows[0][0]) if rows else None


def prune_keys(run: Run, d: Dialect, before: int, batch: int) -> int:
    """Drop key rows whose window ended before ``before`` (their window is on
    the requests' clock; the retention cut-off only bounds how long they stay)."""
    rows = run(
        f"SELECT key FROM unique_keys WHERE held_until < {d.mark} LIMIT {d.mark}", (before, batch)
    )
    for (key,) in rows:
        run(
            f"DELETE FROM unique_keys WHERE key = {d.mark} AND held_until < {d.mark}", (key, before)
        )
    return len(rows)
