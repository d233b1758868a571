"""The scheduler's rules over a Store and a clock: one synchronous engine that
every transport (stdio node, HTTP service, dispatcher) calls.

Time is passed in as ``now`` (UTC epoch ms) on every call, so a request's
``current_time`` and a test's fixed clock work the same way as the wall clock.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

from jobsched import transitions
from jobsched.cron import CronExpr
from jobsched.errors import JobExists, JobNotFound, Malformed, PreconditionFailed
from jobsched.execute import Executing
from jobsched.execution import ExecConfig
from jobsched.ids import uuid7, uuid7_many
from jobsched.jobs import (
    ALL_STATES,
    ONCE,
    CronSchedule,
    IntervalSchedule,
    Job,
    JobState,
    Schedule,
)
from jobsched.queues import QueueChange, QueueReport, QueueSettings
from jobsched.runner import TaskRegistry
from jobsched.spec import ScheduleSpec
from jobsched.stores.base import ClusterClock, DuplicateKey, Membership, Store
from jobsched.timefmt import MAX_MS, now_ms

# A node whose heartbeat is older than this is not listed by stats (dispatchers beat every few s).
NODES_WINDOW_MS = 60_000
# (node_id, last_seen, jobs_held) as a shared store reports its nodes.
NodeRows = list[tuple[str, int, int]]


# The most specs one schedule_many (one schedule_jobs message) takes: 10,000
# specs of a few hundred bytes fit a line (8 MiB) many times over, and one
# batch is one transaction that holds the store's write lock while it lasts.
MAX_BATCH = 10_000

# The engine's settings are the execution pipeline's.
EngineConfig = ExecConfig


class Engine(Executing):
    """The scheduler's rules: scheduling, reading and changing jobs here; the
    execution pipeline (claim, finish, rescue, release) from ``Execution``,
    the protocol's execute_jobs and execute_job from ``Executing``."""

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
        self._init_executing()

    # -- scheduling ---------------------------------------------------------

    def schedule(self, spec: ScheduleSpec, now: int) -> Job:
        """Create the job (or return the existing one for an idempotent re-send)."""
        return self.place(spec, now)[0]

    def place(self, spec: ScheduleSpec, now: int) -> tuple[Job, bool]:
        """``schedule``, and whether the job returned is a duplicate: the job
        that holds the spec's unique_key (docs/queues.md)."""
        return self._place(spec, None, now)

    def _place(self, spec: ScheduleSpec, job: Job | None, now: int) -> tuple[Job, bool]:
        # A caller's id is inserted first and read only when taken (a re-send,
        # or another node's insert): a read before every insert was 12% of a
        # durable schedule_job. With a unique_key the id is read first: a
        # re-send must find itself, not be told the key's holder (itself).
        if spec.job_id is not None and spec.unique_key is not None:
            existing = self.store.get(spec.job_id)
            if existing is not None:
                return self._same_spec(existing, spec), False
        if job is None:
            try:
                job = self._new_job(spec, now)
            except Malformed:
                # A re-send is answered with its job, even if its task or its
                # schedule would be refused now.
                existing = None if spec.job_id is None else self.store.get(spec.job_id)
                if existing is None:
                    raise
                return self._same_spec(existing, spec), False
        try:
            return self.store.insert(job), False
        except DuplicateKey as dup:
            return self._holder(dup.holder, job), True
        except JobExists:
            # The id is taken: a re-send, or another node's insert just before ours.
            existing = self.store.get(job.job_id)
            if existing is None:
                raise
            return self._same_spec(existing, spec), False

    def _holder(self, holder: str, job: Job) -> Job:
        """The job holding a unique key; if retention pruned it while its
        window is still open, only its id is known (no due time)."""
        found = self.store.get(holder)
        return found if found is not None else job.evolve(job_id=holder, first_due=None)

    def schedule_batch(self, specs: Sequence[ScheduleSpec], now: int) -> tuple[list[Job], set[int]]:
        """``schedule_many``, and the indexes of the specs that are duplicates.

        A batch with unique keys is inserted spec by spec in one transaction,
        so that a spec whose key an earlier spec of the batch took is a
        duplicate of that one (the store's unique index decides, as it does
        across nodes)."""
        if all(spec.unique_key is None for spec in specs):
            return self.schedule_many(specs, now), set()
        if len(specs) > MAX_BATCH:
            raise Malformed("jobs", f"at most {MAX_BATCH} jobs per batch, not {len(specs)}")
        _caller_ids(specs)
        built = []
        for i, spec in enumerate(specs):
            try:
                built.append(self._new_job(spec, now))
            except Malformed as exc:
                raise _at(i, exc) from None
        out: list[Job] = []
        dups: set[int] = set()
        with self.store.transaction():
            for i, (spec, job) in enumerate(zip(specs, built, strict=True)):
                try:
                    placed, dup = self._place(spec, job, now)
                except JobExists as exc:
                    raise JobExists(exc.job_id, f"with a different spec (jobs[{i}])") from None
                out.append(placed)
                if dup:
                    dups.add(i)
        return out, dups

    def configure_queue(self, name: str, change: QueueChange) -> QueueSettings:
        return self.store.configure_queue(name, change)

    def queues(self) -> list[QueueReport]:
        return self.store.queue_report()

    def queue_settings(self) -> list[QueueSettings]:
        return self.store.queue_settings()

    def schedule_many(self, specs: Sequence[ScheduleSpec], now: int) -> list[Job]:
        """Create every job, or none, in one bulk insert; the jobs in spec order.

        Every spec is checked before anything is written, and an error names
        its index (``jobs[7].delay_ms: ...``). A caller's ``job_id`` already
        stored is an idempotent re-send, as in ``schedule`` (the stored job
        comes back; a different spec is error 21); the same ``job_id`` twice
        in one batch is error 12."""
        if len(specs) > MAX_BATCH:
            raise Malformed("jobs", f"at most {MAX_BATCH} jobs per batch, not {len(specs)}")
        named = _caller_ids(specs)
        existing = self.store.get_many(named) if named else {}
        # The generated ids of the batch, made together (in spec order).
        made = iter(uuid7_many(len(specs) - len(named)))
        # A batch names a few tasks: each is looked up once. With one unknown,
        # every spec is checked in order, so the error names the first.
        check = not all(self.registry.knows(task) for task in {spec.task for spec in specs})
        out: list[Job] = []
        fresh: list[int] = []  # indexes of the jobs to insert
        new_job = self._new_job
        for i, spec in enumerate(specs):
            job_id = spec.job_id
            if job_id is None:
                job_id = next(made)
            elif job_id in existing:
                out.append(_same_spec_at(i, existing[job_id], spec))
                continue
            try:
                out.append(new_job(spec, now, job_id, check))
            except Malformed as exc:
                raise _at(i, exc) from None
            fresh.append(i)
        self._insert_fresh(out, fresh, specs)
        return out

    def _new_job(
        self, spec: ScheduleSpec, now: int, job_id: str | None = None, check: bool = True
    ) -> Job:
        if check and not self.registry.knows(spec.task):
            raise Malformed("task", f"no handler is registered for task {spec.task!r}")
        schedule, due = _first_due(spec, now)
        # Job's first ten fields by position, the rest set after: a dataclass
        # __init__ given keywords costs three times as much, once per job of a batch.
        job = Job(
            job_id or spec.job_id or uuid7(),
            spec.task,
            spec.payload_json,
            schedule,
            JobState.SCHEDULED,
            due,  # due_at
            now,  # created_at
            now,  # updated_at
            spec.retry,
            spec.options,
        )
        job.first_due = due
        job.spec_key = spec.spec_key
        job.queue = spec.queue
        job.priority = spec.priority
        job.unique_key = spec.unique_key
        job.unique_for_ms = spec.unique_for_ms
        return job

    def _insert_fresh(
        self, out: list[Job], fresh: list[int], specs: Sequence[ScheduleSpec]
    ) -> None:
        """Insert ``out[i]`` for every i in ``fresh``, all or none. A caller's id
        another node inserted since we looked is a re-send (or error 21) like
        any other: insert_many undid everything, so the rest goes in again."""
        while fresh:
            try:
                self.store.insert_many(
                    out[:] if len(fresh) == len(out) else [out[i] for i in fresh]
                )
                return
            except JobExists as exc:
                i = next((i for i in fresh if out[i].job_id == exc.job_id), None)
                existing = None if i is None else self.store.get(exc.job_id)
                if i is None or existing is None:
                    raise
                out[i] = _same_spec_at(i, existing, specs[i])
                fresh.remove(i)

    @staticmethod
    def _same_spec(existing: Job, spec: ScheduleSpec) -> Job:
        if not _resent(existing, spec):
            raise JobExists(existing.job_id, "with a different spec")
        return existing

    # -- reading ------------------------------------------------------------

    def get(self, job_id: str) -> Job:
        job = self.store.get(job_id)
        if job is None:
            raise JobNotFound(job_id)
        return job

    def list(
        self,
        state: JobState | None,
        task: str | None,
        after: str | None,
        limit: int,
        queue: str | None = None,
    ) -> tuple[list[Job], str | None]:
        """A page of jobs in scheduling order and the cursor of the next page."""
        jobs = self.store.list_jobs(state, task, after, limit + 1, queue)
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
        try:
            return self._transition(job_id, lambda job: transitions.requeue(job, now))
        except DuplicateKey as held:
            # At most one job that is not final holds a unique key (docs/queues.md).
            by = f"job {held.holder!r}" if held.holder else "another job"
            raise PreconditionFailed(
                job_id, f"its unique_key is held by {by}, which is not final"
            ) from None

    def _transition(self, job_id: str, change: Callable[[Job], Job]) -> Job:
        """Read, compute the next value, write guarded by the state read; a lost
        race (another node changed the job meanwhile) is re-read and retried."""
        for _ in range(self.config.guard_retries):
            job = self.get(job_id)
            new = change(job)
            if self.store.replace(new, job.state):
                return new
        raise PreconditionFailed(job_id, "kept changing under concurrent updates; try again")


def _caller_ids(specs: Sequence[ScheduleSpec]) -> list[str]:
    """The callers' job ids of a batch; one named twice is error 12."""
    first: dict[str, int] = {}
    for i, spec in enumerate(specs):
        if spec.job_id is None:
            continue
        if spec.job_id in first:
            raise Malformed(
                f"jobs[{i}].job_id",
                f"{spec.job_id!r} is also the job_id of jobs[{first[spec.job_id]}]; "
                "a batch names each job once",
            )
        first[spec.job_id] = i
    return list(first)


def _same_spec_at(i: int, existing: Job, spec: ScheduleSpec) -> Job:
    if not _resent(existing, spec):
        raise JobExists(existing.job_id, f"with a different spec (jobs[{i}])")
    return existing


def _resent(existing: Job, spec: ScheduleSpec) -> bool:
    """Is ``spec`` the one ``existing`` was scheduled with (docs/protocol.md,
    Idempotency)? A job stored before its key's last change matches it as
    it was made then (``legacy_key``)."""
    key = existing.spec_key
    return key is not None and (key == spec.spec_key or key == spec.legacy_key)


def _at(i: int, exc: Malformed) -> Malformed:
    """The error of the batch's i-th spec, named by its place in the batch."""
    return Malformed(f"jobs[{i}].{exc.field}" if exc.field else f"jobs[{i}]", exc.problem)


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
