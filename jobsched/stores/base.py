"""The store interface and the contract every backend keeps.

The conformance suite (tests/test_store_conformance.py) runs these promises
against every backend; a new backend is done when it passes that suite.

Promises:

1. Atomic changes. Every method either applies its whole change or none of it.
   Inside ``transaction()`` the changes of all calls become visible to other
   processes together, when the outermost block exits without an exception,
   and are durable (for durable stores) before it returns. A failed commit
   raises ``Unavailable`` and leaves nothing applied. A call outside any
   block is a transaction of its own.
   Rollback, on every store (memory included): a block that raises undoes
   every write made inside it (inserts, replaces, claims, lease extensions,
   run records, prunes) and nothing else. Blocks nest as savepoints: an inner
   block that raises undoes only what was written inside it, and the outer
   block goes on; an inner block that exits normally hands its writes to the
   outer one, which still undoes them if it raises later.
2. Guarded updates. ``replace`` writes a job only if the stored job is still in
   ``expect_state`` (and, when ``expect_owner`` is given, still held by that
   owner); otherwise it changes nothing and returns False. Two processes can
   never both win the same guard.
3. Claims are exclusive. ``claim_due`` moves each due job from scheduled or
   retrying to running in one atomic step; a job is returned by at most one
   concurrent claim, however many processes share the store.
4. Order. Due jobs are claimed in (due_at, seq) order; ``list_jobs`` returns
   jobs in seq (scheduling) order; seq is assigned on insert and increases.
5. Values. Jobs are values: callers never mutate one (they ``evolve`` a new
   one), so a store may hand out the objects it holds. Stores keep every field
   of Job exactly (round trip).
6. Faults. A store that cannot be reached or written raises ``Unavailable``
   (error 11) and the request changes nothing. A read may still succeed while
   writes fail (a locked or read-only file).
7. Retention. ``prune`` measures age on the store's own clock (``clock``,
   wall-clock ms; tests replace it), stamped when a job or run record is
   written, never on the jobs' logical times: a caller's ``current_time`` may
   lie anywhere, and a job finished a second ago must not vanish because its
   logical time says 2024. ``maybe_prune`` applies the retention policy in
   small batches, at most once a minute.

Optional capabilities are declared, not probed: a store that has one inherits
its mixin below (``ClusterClock``, ``WakeupListener``, ``Membership``), and
callers test ``isinstance(store, WakeupListener)``. The PostgreSQL store has
all three; the SQLite store is a ``WakeupListener`` too (it notices other
connections' commits by polling ``PRAGMA data_version``).
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass

from jobsched.errors import JobExists, JobschedError
from jobsched.jobs import Job, JobState
from jobsched.queues import QueueChange, QueueReport, QueueSettings
from jobsched.timefmt import now_ms

log = logging.getLogger("jobsched.store")

# How many recent runs get_job shows.
RECENT_RUNS = 5
DAY_MS = 24 * 3600 * 1000
# Final jobs and run records older than this are pruned (see maybe_prune).
DEFAULT_RETENTION_MS = 7 * DAY_MS
PRUNE_EVERY_MS = 60_000
PRUNE_BATCH = 500
# A maybe_prune call stops after this many batches and resumes at the next call,
# so that pruning a backlog never stalls the node for long.
PRUNE_MAX_BATCHES = 20


class DuplicateKey(JobExists):
    """``insert`` found the job's unique_key held (docs/queues.md): by a job
    that is not final, or by one whose ``unique_for_ms`` window is still open.
    The engine answers with the holder (``holder``, a job id)."""

    def __init__(self, holder: str) -> None:
        super().__init__(holder, "(its unique_key is held)")
        self.holder = holder


@dataclass(frozen=True, slots=True)
class RunRecord:
    """One run of a job: when it started and ended, and how it went."""

    job_id: str
    started_at: int
    finished_at: int
    outcome: str  # succeeded | failed | skipped | lost
    error: str | None = None
    node: str | None = None


#: A guarded write: the job, the state it must have, and its holder (or None).
Replacement = tuple[Job, JobState, str | None]


class Store(ABC):
    """Where jobs live. See the module docstring for what every store promises."""

    #: How long final jobs and run records are kept; None keeps them forever.
    retention_ms: int | None = DEFAULT_RETENTION_MS
    #: The store's clock for retention stamps (promise 7); tests replace it.
    clock: Callable[[], int] = staticmethod(now_ms)
    _last_prune: int | None = None

    @abstractmethod
    def transaction(self) -> AbstractContextManager[None]:
        """Group the calls inside into one atomic, durable commit. Re-entrant:
        an inner block is a savepoint of the outer one (promise 1)."""

    @abstractmethod
    def insert(self, job: Job) -> Job:
        """Store a new job; return it with its ``seq`` assigned.
        Raises ``JobExists`` if the id is taken (and changes nothing)."""

    @abstractmethod
    def insert_many(self, jobs: Sequence[Job]) -> list[Job]:
        """Store new jobs, all or none; return them with their ``seq`` assigned
        (increasing in list order). Raises ``JobExists`` naming the first job, in
        list order, whose id is taken (by a stored job or by an earlier job of
        the list), and then stores none of them."""

    @abstractmethod
    def get(self, job_id: str) -> Job | None:
        """The job with this id, or None."""

    def get_many(self, job_ids: Sequence[str]) -> dict[str, Job]:
        """The stored jobs among these ids, by id (ids that name no job are left
        out). SQL stores read them in a few statements, not one per id."""
        found = {}
        for job_id in job_ids:
            job = self.get(job_id)
            if job is not None:
                found[job_id] = job
        return found

    @abstractmethod
    def replace(self, job: Job, expect_state: JobState, expect_owner: str | None = None) -> bool:
        """Overwrite the stored job with ``job`` (same id) if its stored state is
        ``expect_state`` (and its ``locked_by`` is ``expect_owner`` when given).
        Returns whether it was written. Only what a job's life changes is
        written (state, due time, counters, last run and error, lease: the SQL
        stores' ``RUN_TIME`` columns); the rest is fixed at insert, and callers
        evolve only those fields."""

    @abstractmethod
    def claim_due(
        self,
        now: int,
        limit: int,
        owner: str,
        lease_until: int,
        queues: frozenset[str] | None = None,
        limits: bool = True,
    ) -> list[Job]:
        """Atomically take up to ``limit`` jobs in state scheduled or retrying
        whose ``due_at <= now``, in (priority, due_at, seq) order: each becomes
        ``running`` with ``locked_by=owner`` and ``locked_until=lease_until``.
        Returns them as stored after the claim, in claim order.

        Queues (docs/queues.md): nothing is taken from a paused queue, nor,
        with ``queues``, from a queue not named there; with ``limits``, no
        more than a queue's concurrency and rate limit allow, counted across
        every process sharing the store, race-free."""

    @abstractmethod
    def configure_queue(self, name: str, change: QueueChange) -> QueueSettings:
        """Apply ``change`` to the queue's settings (created if new); return them."""

    @abstractmethod
    def queue_report(self) -> list[QueueReport]:
        """Every queue with settings or jobs, by name, with its jobs by state."""

    def queue_settings(self) -> list[QueueSettings]:
        """The settings of every queue configured (``configure_queue``), by
        name: ``queue_report`` without counting the jobs, which a dispatcher
        reads while blocked. This default counts them; the stores read only
        the settings."""
        reports = self.queue_report()
        return [r.settings for r in reports if r.settings != QueueSettings(r.settings.name)]

    @abstractmethod
    def next_due(self, after: int | None = None) -> int | None:
        """The earliest ``due_at`` among scheduled and retrying jobs, or None;
        with ``after``, the earliest later than it (a dispatcher whose due jobs
        are all blocked looks for the next one that may not be)."""

    @abstractmethod
    def list_jobs(
        self,
        state: JobState | None,
        task: str | None,
        after: str | None,
        limit: int,
        queue: str | None = None,
    ) -> list[Job]:
        """Up to ``limit`` jobs in seq order, filtered by state, task and queue, after the
        job named by the cursor ``after`` (a job id). Raises ``JobNotFound`` if the
        cursor names no job."""

    @abstractmethod
    def counts(self) -> dict[JobState, int]:
        """How many jobs are in each state (states with none may be left out)."""

    @abstractmethod
    def extend_leases(self, owner: str, until: int) -> int:
        """Push ``locked_until`` of every running job held by ``owner`` to
        ``until``; return how many."""

    @abstractmethod
    def expired_leases(self, now: int, limit: int) -> list[Job]:
        """Running jobs whose lease ended before ``now`` (their holder is gone)."""

    @abstractmethod
    def record_run(self, run: RunRecord) -> None:
        """Append a run to the job's history."""

    def record_runs(self, runs: Sequence[RunRecord]) -> None:
        """``record_run`` for each, in order (one statement on the SQL stores)."""
        for run in runs:
            self.record_run(run)

    def finish_runs(self, writes: Sequence[Replacement], runs: Sequence[RunRecord]) -> list[bool]:
        """``replace`` for each ``(job, expect_state, expect_owner)`` (whether
        each was written, in order), then ``record_runs(runs)``: the writes of
        a dispatcher's batch of finished runs, together (one round trip on
        PostgreSQL)."""
        applied = [self.replace(job, state, owner) for job, state, owner in writes]
        self.record_runs(runs)
        return applied

    @abstractmethod
    def recent_runs(self, job_id: str, limit: int = RECENT_RUNS) -> list[RunRecord]:
        """The job's latest runs, newest first."""

    @abstractmethod
    def prune(self, finished_before: int, batch: int) -> int:
        """Delete up to ``batch`` final jobs (with all their run records) whose
        last write was stamped before ``finished_before``, and up to ``batch``
        run records stamped before it (times on ``clock``). Return how many
        jobs and run records went; 0 means nothing is left to prune."""

    def maybe_prune(self, now: int | None = None) -> int:
        """Apply the retention policy if a minute has passed since the last time.

        Cheap to call after every batch of requests, outside any transaction:
        each batch of deletions is its own short transaction. Never raises: a
        storage fault is logged and pruning is tried again later.
        """
        now = self.clock() if now is None else now
        last = self._last_prune
        if self.retention_ms is None or (last is not None and 0 <= now - last < PRUNE_EVERY_MS):
            return 0
        self._last_prune = now
        total = 0
        try:
            for _ in range(PRUNE_MAX_BATCHES):
                gone = self.prune(now - self.retention_ms, PRUNE_BATCH)
                total += gone
                if gone == 0:
                    break
        except JobschedError as exc:
            log.warning("pruning old jobs failed, will retry: %s", exc.text)
        return total

    def close(self) -> None:  # noqa: B027 - optional hook, a no-op by default
        """Release connections and files."""

    def iter_all(self) -> Iterator[Job]:
        """Every job in seq order (tests and tools; not on any hot path)."""
        after: str | None = None
        while True:
            page = self.list_jobs(None, None, after, 1000)
            yield from page
            if len(page) < 1000:
                return
            after = page[-1].job_id


def first_taken(jobs: Sequence[Job], stored: set[str]) -> str | None:
    """For ``insert_many``'s JobExists: the first job id, in list order, that is
    among ``stored`` or repeats an earlier job of the list; None if none does."""
    seen: set[str] = set()
    for job in jobs:
        if job.job_id in stored or job.job_id in seen:
            return job.job_id
        seen.add(job.job_id)
    return None


class ClusterClock(ABC):
    """A store shared by several processes that keeps the cluster's clock."""

    @abstractmethod
    def db_now(self) -> int:
        """The shared database's clock in UTC epoch ms: the "now" that nodes
        with skewed clocks agree on (what is due, whose lease ended). Cheap
        enough to call per loop iteration, and never raises: while the
        database is unreachable it is the local clock plus the last offset
        measured."""


class WakeupListener(ABC):
    """A store whose writes, made by any process, can wake a sleeping caller."""

    @abstractmethod
    def wait_for_wakeup(self, timeout_s: float) -> bool:
        """Sleep until a committed write (by this or any other process) makes a
        job due sooner than every other, ``wake()`` is called, or ``timeout_s``
        passes; True if woken. Call it once with 0 before the first
        ``next_due`` read, so that no wake-up in between is missed. A wake-up
        is a hint, never needed for correctness: a caller still polls. Never
        raises (an unreachable database just makes it time out)."""

    @abstractmethod
    def wake(self) -> None:
        """End a ``wait_for_wakeup`` in progress in another thread now (for
        shutdown); the next wait returns at once if none is in progress."""


class Membership(ABC):
    """A store that knows which nodes share it, from their heartbeats."""

    @abstractmethod
    def heartbeat(self, owner: str, now: int) -> None:
        """Record that the node claiming jobs as ``owner`` (their ``locked_by``)
        is alive at ``now`` (on the cluster's clock). Raises ``Unavailable``
        when the store cannot be written."""

    @abstractmethod
    def nodes_seen(self, since: int) -> list[tuple[str, int, int]]:
        """The nodes whose last heartbeat is at or after ``since``, by owner:
        ``(owner, last_seen, jobs_held)``, jobs_held = its running jobs."""
