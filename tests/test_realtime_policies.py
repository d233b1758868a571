"""Overlap and misfire policies, timeouts, lease rescue: the dispatcher driven by an
injected clock (``step(now)`` / ``run_until_idle(now)``); no test sleeps for time.
Handlers are real (real worker threads); a blocking one waits on an Event."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from jobsched import policies
from jobsched.dispatcher import Dispatcher
from jobsched.engine import Engine
from jobsched.jobs import IntervalSchedule, Job, JobOptions, JobState
from jobsched.runner import Runner, TaskRegistry
from jobsched.spec import ScheduleSpec
from jobsched.stores.base import Store
from jobsched.stores.memory import MemoryStore
from jobsched.stores.sqlite import SQLiteStore

T0 = 1_700_000_000_000
WAIT = 10.0


class Handlers:
    """A registry whose handlers count calls; ``block`` ones wait for ``release``."""

    def __init__(self) -> None:
        self.registry = TaskRegistry()
        self.calls: list[Any] = []
        self.release = threading.Event()
        self.entered = threading.Event()
        self.registry.register("ok", self.calls.append)
        self.registry.register("block", self._block)
        self.registry.register("boom", self._boom)

    def _block(self, payload: Any) -> None:
        self.calls.append(payload)
        self.entered.set()
        self.release.wait(WAIT)

    def _boom(self, payload: Any) -> None:
        raise RuntimeError("handler failed")


@pytest.fixture(params=["memory", "sqlite"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    s: Store = MemoryStore() if request.param == "memory" else SQLiteStore(str(tmp_path / "j.db"))
    yield s
    s.close()


@pytest.fixture
def h() -> Iterator[Handlers]:
    handlers = Handlers()
    yield handlers
    handlers.release.set()


def make(store: Store, h: Handlers) -> tuple[Engine, Dispatcher]:
    engine = Engine(store, h.registry)
    runner = Runner(h.registry, workers=2)
    runner.start()
    return engine, Dispatcher(engine, runner, clock=lambda: T0)


def every(engine: Engine, task: str, ms: int = 1000, **options: Any) -> Job:
    spec = ScheduleSpec(task=task, payload_json="{}", interval_ms=ms, options=JobOptions(**options))
    return engine.schedule(spec, T0)


def once(engine: Engine, task: str, delay_ms: int = 0, timeout_ms: int | None = None) -> Job:
    opts = JobOptions(timeout_ms=timeout_ms)
    return engine.schedule(
        ScheduleSpec(task=task, payload_json="{}", delay_ms=delay_ms, options=opts), T0
    )


def get(engine: Engine, job: Job) -> Job:
    return engine.get(job.job_id)


def outcomes(engine: Engine, job: Job) -> list[str]:
    return [r.outcome for r in reversed(engine.store.recent_runs(job.job_id, 20))]


# -- one-time jobs, failures, timeouts --------------------------------------------


def test_a_job_runs_when_due_and_not_before(store: Store, h: Handlers) -> None:
    engine, d = make(store, h)
    job = once(engine, "ok", delay_ms=100)
    d.run_until_idle(T0 + 99)
    assert h.calls == [] and get(engine, job).state is JobState.SCHEDULED
    d.run_until_idle(T0 + 100)
    done = get(engine, job)
    assert h.calls == [{}] and done.state is JobState.COMPLETED and done.runs == 1
    assert d.metrics.runs["succeeded"] == 1 and d.metrics.lateness_count == 1


def test_a_handler_that_raises_goes_through_the_retry_rules(store: Store, h: Handlers) -> None:
    engine, d = make(store, h)
    job = once(engine, "boom")
    d.run_until_idle(T0)
    failed = get(engine, job)
    assert failed.state is JobState.RETRYING and failed.attempts == 1
    assert failed.due_at == T0 + 2000 and failed.last_error == "RuntimeError: handler failed"
    assert d.metrics.retries == 1 and d.metrics.runs["failed"] == 1


def test_a_handler_past_its_timeout_fails_at_the_deadline(store: Store, h: Handlers) -> None:
    engine, d = make(store, h)
    job = once(engine, "block", timeout_ms=500)
    d.step(T0)
    assert h.entered.wait(WAIT)
    d.step(T0 + 499)
    assert get(engine, job).state is JobState.RUNNING
    d.step(T0 + 500)
    failed = get(engine, job)
    assert failed.state is JobState.RETRYING and failed.last_error == "timed out after 500 ms"
    assert d.busy == 1  # Python cannot stop the thread: its worker is still taken
    h.release.set()
    d.run_until_idle(T0 + 600)
    assert d.busy == 0 and get(engine, job).attempts == 1  # the late end changes nothing
    assert d.metrics.runs["timed_out"] == 1


# -- overlap --------------------------------------------------------------------------


def test_overlap_skip_counts_occurrences_that_came_during_a_run(store: Store, h: Handlers) -> None:
    engine, d = make(store, h)
    job = every(engine, "block")  # due T0+1000, 2000, ...
    d.step(T0 + 1000)
    assert h.entered.wait(WAIT)
    d.step(T0 + 2500)  # the 2000 occurrence is due, but the job is running
    assert len(h.calls) == 1
    h.release.set()
    d.run_until_idle(T0 + 3500)  # 2000 and 3000 came during the run
    after = get(engine, job)
    assert after.state is JobState.SCHEDULED and after.skipped == 2
    assert after.due_at == T0 + 4000 and after.runs == 1
    assert outcomes(engine, job) == ["skipped", "succeeded"]
    assert d.metrics.skipped == 2


def test_overlap_allow_runs_the_missed_occurrence_right_after(store: Store, h: Handlers) -> None:
    engine, d = make(store, h)
    job = every(engine, "block", overlap="allow")
    d.step(T0 + 1000)
    assert h.entered.wait(WAIT)
    h.release.set()
    d.run_until_idle(T0 + 2500)  # the run ends; 2000 came during it: kept, run at once
    after = get(engine, job)
    assert len(h.calls) == 2 and after.runs == 2 and after.due_at == T0 + 3000
    assert after.skipped == 0


# -- misfire --------------------------------------------------------------------------


def test_misfire_coalesce_runs_once_after_downtime(store: Store, h: Handlers) -> None:
    engine, d = make(store, h)
    job = every(engine, "ok")
    d.run_until_idle(T0 + 5500)  # 1000..5000 all missed
    after = get(engine, job)
    assert len(h.calls) == 1 and after.runs == 1
    assert after.skipped == 4 and after.due_at == T0 + 6000


def test_misfire_skip_drops_late_occurrences_and_resumes(store: Store, h: Handlers) -> None:
    engine, d = make(store, h)
    job = every(engine, "ok", misfire="skip")
    d.run_until_idle(T0 + 5500)
    after = get(engine, job)
    assert h.calls == [] and after.runs == 0 and after.skipped == 5
    assert after.state is JobState.SCHEDULED and after.due_at == T0 + 6000
    assert outcomes(engine, job) == ["skipped"]
    d.run_until_idle(T0 + 6000 + 999)  # late, but inside the default 1 s grace
    assert len(h.calls) == 1 and get(engine, job).due_at == T0 + 7000


def test_misfire_all_runs_each_missed_occurrence(store: Store, h: Handlers) -> None:
    engine, d = make(store, h)
    job = every(engine, "ok", misfire="all")
    d.run_until_idle(T0 + 3500)  # 1000, 2000, 3000, back to back
    after = get(engine, job)
    assert len(h.calls) == 3 and after.runs == 3 and after.skipped == 0
    assert after.due_at == T0 + 4000


def test_misfire_all_is_bounded_by_the_catchup_window(store: Store, h: Handlers) -> None:
    engine, d = make(store, h)
    job = every(engine, "ok", misfire="all", catchup_window_ms=1500)
    d.run_until_idle(T0 + 3500)  # 1000 is older than 3500 - 1500: skipped
    after = get(engine, job)
    assert len(h.calls) == 2 and after.skipped == 1 and after.due_at == T0 + 4000


# -- leases ---------------------------------------------------------------------------


def test_a_job_whose_holder_died_is_rescued_as_a_lost_attempt(store: Store, h: Handlers) -> None:
    engine, d = make(store, h)
    job = once(engine, "ok")
    [held] = store.claim_due(T0, 10, "dead-node/1", T0 + 100)
    assert held.job_id == job.job_id
    d.step(T0 + 50)  # the lease still holds
    assert get(engine, job).state is JobState.RUNNING
    d.run_until_idle(T0 + 20_000)
    rescued = get(engine, job)
    assert rescued.state is JobState.RETRYING and rescued.attempts == 1
    assert "lease of dead-node/1 expired" in (rescued.last_error or "")
    assert outcomes(engine, job) == ["lost"] and h.calls == []
    # A lost run is a failed attempt, and this one scheduled a retry.
    assert d.metrics.runs["lost"] == 1 and d.metrics.retries == 1
    d.run_until_idle(rescued.due_at or 0)
    assert get(engine, job).state is JobState.COMPLETED


def test_shutdown_puts_back_a_job_whose_handler_outlives_the_grace(
    store: Store, h: Handlers
) -> None:
    engine = Engine(store, h.registry)
    d = Dispatcher(engine, Runner(h.registry, workers=1))  # the real clock
    job = once(engine, "block")
    d.start()
    assert h.entered.wait(WAIT)
    d.stop(grace_s=0.05)
    back = get(engine, job)
    assert back.state is JobState.SCHEDULED and back.due_at == job.due_at
    assert back.locked_by is None and outcomes(engine, job) == ["lost"]
    h.release.set()
    again = Dispatcher(engine, Runner(h.registry, workers=1), clock=lambda: T0)
    again.runner.start()
    again.run_until_idle(job.due_at or 0)
    assert get(engine, job).state is JobState.COMPLETED and len(h.calls) == 2


# -- the pure rules -------------------------------------------------------------------


def _interval_job(**options: Any) -> Job:
    return Job(
        job_id="j",
        task="t",
        payload_json="{}",
        schedule=IntervalSchedule(1000, T0),
        state=JobState.RUNNING,
        due_at=T0 + 1000,
        created_at=T0,
        updated_at=T0,
        options=JobOptions(**options),
    )


def test_count_between_counts_grid_points_in_the_half_open_range() -> None:
    job = _interval_job()
    assert policies.count_between(job, T0 + 1000, T0 + 1000) == 0
    assert policies.count_between(job, T0 + 1000, T0 + 3000) == 2
    assert policies.count_between(job, T0 - 5000, T0) == 1  # the anchor itself
    assert policies.count_between(job, T0 + 999, T0 + 1999) == 1


def test_a_retry_is_not_an_occurrence() -> None:
    job = _interval_job(misfire="skip").evolve(attempts=1, due_at=T0 + 1500)
    claim = policies.on_claim(job, T0 + 9000)
    assert claim.run and claim.skipped == 0 and claim.job.due_at == T0 + 10_000


def test_after_run_leaves_a_pending_catch_up_alone() -> None:
    job = _interval_job(misfire="all").evolve(due_at=T0 + 2000)
    same, n = policies.after_run(job, started=T0 + 3000, now=T0 + 3100)
    assert same is job and n == 0
