"""The protocol's own runs: ``execute_jobs`` and ``execute_job``, whose
handlers run in the caller's thread, through the pipeline's steps
(``jobsched.execution``) like the dispatcher's.

What they guarantee, whatever happens to the process (docs/design.md):

- a run holds its job under this node's lease, renewed from another thread
  while the handler runs, so no node rescues it or runs it meanwhile however
  long it takes (``_keeping``);
- they hold their jobs as ``manual_owner`` (the node's owner + ``MANUAL``),
  not as the node's dispatcher does: the event stream's follower reports
  their starts, and leaves the dispatcher's to the dispatcher;
- ``execute_jobs`` claims its whole due set first (each job runs once per
  call), under the owner ``QUEUED`` marks; with task handlers loaded, each
  job is marked started, in the transaction that writes the previous job's
  outcome, just before its handler runs. A node that dies mid-call leaves one
  job lost (the one whose handler was running: the crash rule counts it an
  attempt) and the rest put back untouched (``Execution.rescue``). Without
  handlers every task is a no-op and no user code runs between the claim and
  the outcomes: they are written together, as before;
- a run cut off by a shutdown is put back, not counted an attempt
  (``release_held``, as the dispatcher's ``release``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from jobsched import transitions
from jobsched.errors import JobNotFound, PreconditionFailed
from jobsched.execution import QUEUED, Claim, Execution, Finished
from jobsched.jobs import Job, JobState
from jobsched.runner import Outcome

log = logging.getLogger("jobsched.execute")

MANUAL = "+manual"  # the owner suffix of the protocol's runs (Executing.manual_owner)


@dataclass(frozen=True, slots=True)
class Executed:
    """What one execute_job did."""

    job_id: str
    ok: bool
    retry_scheduled: bool = False
    backoff_ms: int = 0


class Executing(Execution):
    """``execute_jobs`` and ``execute_job`` (the engine is one of these)."""

    @property
    def manual_owner(self) -> str:
        """Who holds a job a protocol run holds: this process, told apart from
        its dispatcher (whose runs it reports itself: jobsched.web.follow)."""
        return self.owner + MANUAL

    def _init_executing(self) -> None:
        # The jobs this process's protocol runs hold now, and the occurrence
        # each stands for: what a shutdown puts back (release_held).
        self._held: dict[str, tuple[Job, int]] = {}
        self._held_lock = threading.Lock()
        self._keepers = 0  # runs in progress whose leases _keep renews
        self._keeper: threading.Thread | None = None

    def execute_due(self, now: int) -> tuple[list[str], list[str]]:
        """Run every job due at or before ``now`` once; return (ran, failed).
        The outcomes are committed before the caller replies."""
        if not self.registry.names():
            return self._execute_together(now)
        return self._execute_each(now)

    def _claim_due_set(self, now: int, owner: str) -> list[Claim]:
        """Every job due at ``now``, claimed (and committed) before any runs,
        so that a job whose retry comes due again within ``now`` (base_ms 0)
        runs once per call. Limits are not applied: the runs are one at a
        time, on a logical clock a rate cannot be measured on (docs/queues.md)."""
        cfg = self.config
        claims: list[Claim] = []
        while True:
            # A lease guards against a runner dying in real time, so it is
            # measured on the wall (or cluster) clock, never on a logical now.
            lease_until = self.wall_clock() + cfg.lease_ms
            batch = self.claim(now, cfg.claim_batch, owner, lease_until, "coalesce", limits=False)
            claims += batch
            if len(batch) < cfg.claim_batch:
                return [c for c in claims if c.run]

    def _execute_together(self, now: int) -> tuple[list[str], list[str]]:
        """No handlers: every task is a no-op, so nothing can stop the
        process between the claim and the outcomes (the stdio node holds them
        in one transaction): one claim, the runs, one write of the outcomes."""
        claims = self._claim_due_set(now, self.manual_owner)
        results = [(c.job, self.run_handler(c.job, False, c.due)) for c in claims]
        return _ran(self.finish_all([(job, outcome, now, now) for job, outcome in results]))

    def _execute_each(self, now: int) -> tuple[list[str], list[str]]:
        """Handlers: each job marked started just before its handler runs,
        with the previous job's outcome in the same transaction."""
        queued = self.manual_owner + QUEUED
        claims = self._claim_due_set(now, queued)
        if not claims:
            return [], []
        mine = {claim.job.job_id: claim.job for claim in claims}  # what this call holds
        for claim in claims:
            self._hold(claim.job, claim.due)
        finished: list[Finished] = []
        ended: tuple[Job, Outcome] | None = None
        renew_at = self.wall_clock() + self.config.lease_ms // 3
        try:
            with self._keeping():
                for claim in claims:
                    wall = self.wall_clock()
                    held = claim.job.evolve(
                        locked_by=self.manual_owner, locked_until=wall + self.config.lease_ms
                    )
                    with self.store.transaction():
                        if ended is not None:
                            finished += self.finish_all([(*ended, now, now)])
                        # Renewed here too, between handlers, at no commit of its own.
                        if wall >= renew_at:
                            self._renew(wall)
                            renew_at = wall + self.config.lease_ms // 3
                        started = self.store.replace(held, JobState.RUNNING, queued)
                    if ended is not None:
                        self._unhold(mine.pop(ended[0].job_id))
                    ended = None
                    if started:  # else cancelled since the claim
                        self._hold(held, claim.due)
                        mine[held.job_id] = held
                        ended = (held, self.run_handler(held, False, claim.due))
                if ended is not None:
                    finished += self.finish_all([(*ended, now, now)])
        finally:
            for job in mine.values():
                self._unhold(job)
        return _ran(finished)

    def execute_one(self, job_id: str, force_fail: bool, now: int) -> Executed:
        """Run one job now, due or not (execute_job). It is claimed first,
        as a dispatcher claims (running, under this node's lease), so that no
        dispatcher of any node runs it meanwhile; the handler runs with no
        transaction open; the outcome is written guarded by the claim (a job
        cancelled or rescued meanwhile answers 22 and keeps its newer state)."""
        job = self.store.get(job_id)
        if job is None:
            raise JobNotFound(job_id)
        transitions.check_runnable(job)
        lease_until = self.wall_clock() + self.config.lease_ms
        owner = self.manual_owner
        # updated_at: when it was claimed, the start of a run lost to a crash.
        held = job.evolve(
            state=JobState.RUNNING, locked_by=owner, locked_until=lease_until, updated_at=now
        )
        with self.store.transaction():
            if not self.store.replace(held, job.state):
                raise PreconditionFailed(job_id, "changed as it was about to run; try again")
        self._hold(held, job.due_at if job.due_at is not None else now)
        try:
            with self._keeping():
                outcome = self.run_handler(job, force_fail)
            # From the job as it was before the claim: a paused job stays paused,
            # a recurring one keeps its schedule (docs/protocol.md, execute_job).
            new, decision = self._after(job, outcome, now, now)
            with self.store.transaction():
                if not self.store.replace(new, JobState.RUNNING, owner):
                    raise PreconditionFailed(
                        job_id, "changed while it ran; its outcome was not applied"
                    )
                self._record(job_id, now, now, outcome)
        finally:
            self._unhold(held)
        if decision is None:
            return Executed(job_id, True)
        return Executed(job_id, False, decision.retry, decision.backoff_ms)

    def release_held(self, now: int, text: str) -> int:
        """At shutdown, once the grace is over: put back every job a protocol
        run of this process still holds (its handler still running, or not
        started), at the occurrence it stood for; not an attempt."""
        with self._held_lock:
            held = [(job, due, now) for job, due in self._held.values()]
        return self.release(held, now, text)

    def _hold(self, job: Job, due: int) -> None:
        with self._held_lock:
            self._held[job.job_id] = (job, due)

    def _unhold(self, job: Job) -> None:
        """Forget ``job`` if it is still the entry this run made (another run
        of the same job may have made its own since this one ended)."""
        with self._held_lock:
            entry = self._held.get(job.job_id)
            if entry is not None and entry[0] is job:
                del self._held[job.job_id]

    @contextmanager
    def _keeping(self) -> Iterator[None]:
        """While handlers run in this thread: the protocol runs' leases
        renewed every lease_ms / 3 from another thread, so a handler longer
        than the lease is not rescued under it. One thread for the engine's
        life, started at its first run: a thread per run would each leave a
        store connection behind (a store keeps one per thread until closed)."""
        with self._held_lock:
            self._keepers += 1
            if self._keeper is None:
                self._keeper = threading.Thread(
                    target=self._keep, name="jobsched-leases", daemon=True
                )
                self._keeper.start()
        try:
            yield
        finally:
            with self._held_lock:
                self._keepers -= 1

    def _keep(self) -> None:
        while True:
            time.sleep(self.config.lease_ms / 3000)
            with self._held_lock:
                busy = self._keepers > 0
            if busy:
                try:
                    self._renew(self.wall_clock())
                except Exception:  # a store fault now; the next turn tries again
                    log.warning("could not renew the leases of running jobs", exc_info=True)

    def _renew(self, wall: int) -> None:
        for owner in (self.manual_owner, self.manual_owner + QUEUED):
            self.store.extend_leases(owner, wall + self.config.lease_ms)


def _ran(finished: list[Finished]) -> tuple[list[str], list[str]]:
    return [f.job.job_id for f in finished], [f.job.job_id for f in finished if not f.ok]
