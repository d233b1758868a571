"""The execution pipeline: how a job goes from due to run to finished.

Every run, whoever drives it (``execute_jobs``/``execute_job`` of the
protocol, or the real-time dispatcher), passes through these four steps, and
every state change of a run is made here and only here:

- ``claim``: take due jobs (scheduled/retrying -> running, under a lease),
  apply the misfire policy (``execute_jobs`` is its coalesce case), write the
  advanced jobs and record skipped occurrences. One transaction.
- (the caller runs the handlers, with no store transaction open: user code
  may take seconds, and a transaction held that long blocks every other
  writer of a SQLite file)
- ``finish_all``: apply runs' outcomes: the overlap policy, then success or the
  retry decision, guarded by the lease; record the run. Returns the decision
  it applied, so callers never derive it a second time.
- ``rescue``: take back running jobs whose holder stopped renewing its lease
  (it crashed); the lost run counts as a failed attempt (the crash rule,
  docs/design.md).
- ``release``: put back jobs whose handler did not end before shutdown, at
  the occurrence they were running; not an attempt.

Transactions: ``claim`` and ``finish_all``/``rescue``/``release`` open their
own (re-entrant) transactions. A transport that wraps one in a transaction of
its own joins it, which is only done when no user code runs in between (the
stdio node without task handlers: every task is then a no-op).
"""

from __future__ import annotations

import logging
import random
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from jobsched import policies, transitions
from jobsched.handles import context_for
from jobsched.jobs import Job, JobState, RetryDecision
from jobsched.runner import Outcome, TaskRegistry
from jobsched.stores.base import Replacement, RunRecord, Store

log = logging.getLogger("jobsched.execution")

FORCED = "forced failure (force_fail)"
# The suffix of the owner an execute_jobs claims its due set under: a job it
# holds but has not started yet (jobsched.execute). One left by a node that
# stopped is put back, not counted as an attempt: its handler never ran.
QUEUED = "+queued"
LOST_SKIP = "overlap=skip: came due while its lost run held it"
SHUTDOWN = "interrupted by shutdown before its handler ended; it will run again"
Claim = policies.Claim


@dataclass(frozen=True, slots=True)
class ExecConfig:
    node_id: str = "jobsched"
    lease_ms: int = 30_000
    claim_batch: int = 1000
    # How many times a guarded write is retried when another writer got there first.
    guard_retries: int = 5


@dataclass(frozen=True, slots=True)
class Finished:
    """What ``finish_all`` applied to one run."""

    job: Job  # the job as written (or as it would have been, when not applied)
    ok: bool
    decision: RetryDecision | None  # None on success
    overlap_skipped: int  # occurrences skipped because they came due during the run
    applied: bool  # False: the job was cancelled or rescued meanwhile; the newer state won

    @property
    def retry(self) -> bool:
        return self.decision is not None and self.decision.retry


@dataclass(frozen=True, slots=True)
class Rescued:
    job: Job  # as it was found (running, its lease expired)
    error: str
    skipped: int = 0  # occurrences that came due while the lost run held it
    retry: bool = False  # the lost run, a failed attempt, scheduled a retry


class Execution:
    """The pipeline's steps over a store (the engine is one of these)."""

    store: Store
    registry: TaskRegistry
    config: ExecConfig
    rng: random.Random
    wall_clock: Callable[[], int]

    def _init_execution(self) -> None:
        # Unique per process: a restarted node never mistakes its
        # predecessor's leases for its own.
        self.owner = f"{self.config.node_id}/{uuid.uuid4().hex[:8]}"

    # -- the four steps ---------------------------------------------------------

    def claim(
        self,
        now: int,
        limit: int,
        owner: str,
        lease_until: int,
        misfire: str | None = None,
        queues: frozenset[str] | None = None,
        limits: bool = True,
    ) -> list[Claim]:
        """Claim up to ``limit`` due jobs and decide each one's run (one
        transaction). Decisions with ``run=False`` were given back without a
        run (misfire=skip); their skips are recorded already. ``queues``: take
        only from these; ``limits``: apply queues' concurrency and rate limits
        (docs/queues.md; paused queues and priorities hold either way)."""
        decisions: list[Claim] = []
        with self.store.transaction():
            for job in self.store.claim_due(now, limit, owner, lease_until, queues, limits):
                decision = policies.on_claim(job, now, misfire)
                if decision.job is not job:
                    self.store.replace(decision.job, JobState.RUNNING, owner)
                if decision.skipped:
                    self.record_skip(decision.job, decision.skipped, decision.reason, now)
                decisions.append(decision)
        return decisions

    def finish_all(self, runs: Sequence[tuple[Job, Outcome, int, int]]) -> list[Finished]:
        """Apply claimed runs' outcomes, each guarded by its lease: a batch of
        (job, outcome, ended, started), one commit:
        the guarded writes go to the store together, then the run records
        together (two statements for the batch on the SQL stores, not two per run)."""
        writes: list[Replacement] = []
        records: list[RunRecord] = []
        plans: list[tuple[Job, bool, RetryDecision | None, int]] = []
        for job, outcome, ended, started in runs:
            job, skipped = policies.after_run(job, started, ended)
            if skipped:
                reason = "overlap=skip: came due while it ran"
                records.append(self._skip_record(job, skipped, reason, ended))
            new, decision = self._after(job, outcome, ended, started)
            writes.append((new, JobState.RUNNING, job.locked_by))
            records.append(self._run_record(job.job_id, started, ended, outcome))
            plans.append((new, outcome.ok, decision, skipped))
        with self.store.transaction():
            # A write whose guard fails found the job cancelled or rescued
            # meanwhile: the newer state wins, and only the run record tells of this run.
            applied = self.store.finish_runs(writes, records)
        return [
            Finished(new, ok, decision, skipped, done)
            for (new, ok, decision, skipped), done in zip(plans, applied, strict=True)
        ]

    def rescue(self, now: int, limit: int, exclude: frozenset[str] = frozenset()) -> list[Rescued]:
        """Take back running jobs whose lease ended before ``now`` (the crash
        rule: the lost run is a failed attempt). ``exclude``: jobs the caller
        itself is running."""
        rescued: list[Rescued] = []
        for job in self.store.expired_leases(now, limit):
            if job.job_id in exclude:
                continue
            if (job.locked_by or "").endswith(QUEUED):
                self._unqueue(job, now)
                continue
            # Occurrences that came due while the lost run held the job are
            # skipped as a run's overlap skips them, and never silently; a
            # paused job's (a manual run's) were held back by the pause.
            over, skipped = job, 0
            if job.paused_from is None:
                over, skipped = policies.after_run(job, job.updated_at, now)
            new, decision = transitions.on_lost(over, now, self.rng)
            with self.store.transaction():
                if not self.store.replace(new, JobState.RUNNING, job.locked_by):
                    continue  # its holder finished it after all, or another node rescued it
                error = new.last_error or "lost"
                node = self.config.node_id
                self.store.record_run(RunRecord(job.job_id, now, now, "lost", error, node))
                if skipped:
                    self.record_skip(new, skipped, LOST_SKIP, now)
            log.warning("job %s (%s): %s", job.job_id, job.task, error)
            rescued.append(Rescued(job, error, skipped, decision.retry))
        return rescued

    def _unqueue(self, job: Job, now: int) -> None:
        """Put back a job an execute_jobs claimed and never started (its node
        stopped first), due at once: not an attempt, since nothing ran."""
        text = f"claimed by {job.locked_by} (execute_jobs), which stopped before running it"
        if self.release([(job, now, now)], now, text):
            log.warning("job %s (%s): %s; put back", job.job_id, job.task, text)

    def release(self, runs: Sequence[tuple[Job, int, int]], now: int, text: str) -> int:
        """Put back (job, due, started), each as claimed (held by its
        ``locked_by``), whose handler did not end before a shutdown (or, for
        an execute_jobs, never started), in one transaction; returns how many
        were put back: a job rescued or changed meanwhile keeps its newer state."""
        n = 0
        with self.store.transaction():
            for job, due, started in runs:
                back = transitions.put_back(job, due, now)
                if self.store.replace(back, JobState.RUNNING, job.locked_by):
                    record = RunRecord(job.job_id, started, now, "lost", text, self.config.node_id)
                    self.store.record_run(record)
                    n += 1
        return n

    def record_skip(self, job: Job, n: int, reason: str, now: int) -> None:
        """A skipped occurrence is never silent: recorded and logged."""
        self.store.record_run(self._skip_record(job, n, reason, now))

    def _skip_record(self, job: Job, n: int, reason: str, now: int) -> RunRecord:
        log.info("job %s (%s): skipped %d occurrence(s): %s", job.job_id, job.task, n, reason)
        text = f"{n} skipped: {reason}"
        return RunRecord(job.job_id, now, now, "skipped", text, self.config.node_id)

    def extend_leases(self, owner: str, until: int) -> int:
        return self.store.extend_leases(owner, until)

    def next_due(self, after: int | None = None) -> int | None:
        return self.store.next_due(after)

    def _after(
        self, job: Job, outcome: Outcome, ended: int, started: int
    ) -> tuple[Job, RetryDecision | None]:
        """The job after a run with this outcome, and the retry decision (None on success)."""
        if outcome.ok:
            return transitions.on_success(job, ended, started), None
        return transitions.on_failure(job, ended, started, outcome.error or "failed", self.rng)

    def run_handler(self, job: Job, force_fail: bool, due: int | None = None) -> Outcome:
        """``due``: the occurrence the run stands for (a claim's), else the job's due time."""
        if force_fail:
            return Outcome(False, FORCED)
        registry = self.registry
        ctx = context_for(job, due) if registry.wants_context(job.task) else None
        return registry.run(job.task, job.payload_json, job.options.timeout_ms, context=ctx)

    def _record(self, job_id: str, started: int, now: int, outcome: Outcome) -> None:
        self.store.record_run(self._run_record(job_id, started, now, outcome))

    def _run_record(self, job_id: str, started: int, now: int, outcome: Outcome) -> RunRecord:
        return RunRecord(
            job_id=job_id,
            started_at=started,
            finished_at=now,
            outcome="succeeded" if outcome.ok else "failed",
            error=outcome.error,
            node=self.config.node_id,
        )
