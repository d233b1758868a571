"""The scheduler's rules over a Store and a clock: one synchronous engine that
every transport (stdio node, HTTP service, dispatcher) calls.

Time is passed in as ``now`` (UTC epoch ms) on every call, so a request's
``current_time`` and a test's fixed clock work the same way as the wall clock.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from jobsched import transitions
from jobsched.cron import CronExpr
from jobsched.errors import JobExists, JobNotFound, Malformed, PreconditionFailed
from jobsched.execution import ExecConfig, Execution
from jobsched.ids import uuid7
from jobsched.jobs import (
    ALL_STATES,
    ONCE,
    CronSchedule,
    IntervalSchedule,
    Job,
    JobState,
    Schedule,
)
from jobsched.runner import TaskRegistry
from jobsched.spec import ScheduleSpec
from jobsched.stores.base import ClusterClock, Membership, Store
from jobsched.timefmt import MAX_MS, now_ms

# A node whose heartbeat is older than this is not listed by stats (dispatchers beat every few s).
NODES_WINDOW_MS = 60_000
# (node_id, last_seen, jobs_held) as a shared store reports its nodes.
NodeRows = list[tuple[str, int, int]]


# The engine's settings are the execution pipeline's.
EngineConfig = ExecConfig


class Engine(Execution):
    """The scheduler's rules: scheduling, reading and changing jobs here; the
    execution pipeline (claim, finish, rescue, release) from ``Execution``."""

    def __init__(
        self,
        store: Store,
        registry: TaskRegistry | None = None,
        config: EngineConfig | None = None,
        rng: random.Random | None = None,
        wall_clock: Callable[[], int] | None = None,
    ) -> None:
        self.store = store
        # Leases are measured on the real clock: the cluster's when the store
        # keeps one (PostgreSQL), else this machine's.
        if wall_clock is None:
            wall_clock = store.db_now if isinstance(store, ClusterClock) else now_ms
        self.wall_clock = wall_clock
        self.registry = registry or TaskRegistry()
        self.config = config or EngineConfig()
        self.rng = rng or random.Random()
        self._init_execution()

    # -- scheduling ---------------------------------------------------------

    def schedule(self, spec: ScheduleSpec, now: int) -> Job:
        """Create the job (or return the existing one for an idempotent re-send)."""
        if spec.job_id is not None:
            existing = self.store.get(spec.job_id)
            if existing is not None:
                return self._same_spec(existing, spec)
        if not self.registry.knows(spec.task):
            raise Malformed("task", f"no handler is registered for task {spec.task!r}")
        schedule, due = _first_due(spec, now)
        job = Job(
            job_id=spec.job_id or uuid7(),
            task=spec.task,
            payload_json=spec.payload_json,
            schedule=schedule,
            state=JobState.SCHEDULED,
            due_at=due,
            created_at=now,
            updated_at=now,
            retry=spec.retry,
            options=spec.options,
            first_due=due,
            spec_key=spec.spec_key,
        )
        try:
            return self.store.insert(job)
        except JobExists:
            # Another node inserted the same caller id between our get and insert.
            existing = self.store.get(job.job_id)
            if existing is None:
                raise
            return self._same_spec(existing, spec)

    @staticmethod
    def _same_spec(existing: Job, spec: ScheduleSpec) -> Job:
        if existing.spec_key is None or existing.spec_key != spec.spec_key:
            raise JobExists(existing.job_id, "with a different spec")
        return existing

    # -- reading ------------------------------------------------------------

    def get(self, job_id: str) -> Job:
        job = self.store.get(job_id)
        if job is None:
            raise JobNotFound(job_id)
        return job

    def list(
        self, state: JobState | None, task: str | None, after: str | None, limit: int
    ) -> tuple[list[Job], str | None]:
        """A page of jobs in scheduling order and the cursor of the next page."""
        jobs = self.store.list_jobs(state, task, after, limit + 1)
        if len(jobs) > limit:
            return jobs[:limit], jobs[limit - 1].job_id
        return jobs, None

    def nodes(self, now: int) -> NodeRows | None:
        """``(node_id, last_seen, jobs_held)`` for the nodes of a shared store
        seen in the last minute (their heartbeat); None for a store no other
        node shares."""
        if not isinstance(self.store, Membership):
            return None
        return self.store.nodes_seen(now - NODES_WINDOW_MS)

    def stats(self) -> dict[str, int]:
        counts = self.store.counts()
        return {state.value: counts.get(state, 0) for state in ALL_STATES}

    # -- changes ------------------------------------------------------------

    def cancel(self, job_id: str, now: int) -> Job:
        return self._transition(job_id, lambda job: transitions.cancel(job, now))

    def pause(self, job_id: str, now: int) -> Job:
        return self._transition(job_id, lambda job: transitions.pause(job, now))

    def resume(self, job_id: str, now: int) -> Job:
        return self._transition(job_id, lambda job: transitions.resume(job, now))

    def requeue(self, job_id: str, now: int) -> Job:
        return self._transition(job_id, lambda job: transitions.requeue(job, now))

    def _transition(self, job_id: str, change: Callable[[Job], Job]) -> Job:
        """Read, compute the next value, write guarded by the state read; a lost
        race (another node changed the job meanwhile) is re-read and retried."""
        for _ in range(self.config.guard_retries):
            job = self.get(job_id)
            new = change(job)
            if self.store.replace(new, job.state):
                return new
        raise PreconditionFailed(job_id, "kept changing under concurrent updates; try again")


def _first_due(spec: ScheduleSpec, now: int) -> tuple[Schedule, int]:
    schedule: Schedule
    if spec.cron is not None:
        schedule = CronSchedule(CronExpr.parse(spec.cron, spec.timezone))
        due = schedule.next_after(now)
        if due is None:
            raise Malformed("cron", "has no occurrence after the current time")
        return schedule, due
    if spec.interval_ms is not None:
        schedule = IntervalSchedule(spec.interval_ms, now)
        due, field = schedule.next_after(now), "interval_ms"
    elif spec.delay_ms is not None:
        schedule, due, field = ONCE, now + spec.delay_ms, "delay_ms"
    else:
        schedule, due, field = ONCE, spec.run_at if spec.run_at is not None else now, "run_at"
    if due is None or due > MAX_MS:
        raise Malformed(field, "puts the due time past the year 9999")
    return schedule, due
