"""The memory store's compact records (stores/memory_compact.py) at their edges.

A pending job is held as a short tuple and rebuilt into a Job on every read:
each field must come back exactly, whatever the state, the size of the payload,
the fields that differ from a fresh job's, or the writes and rollbacks it went
through; and the due heaps, whose entries are the records themselves, must
claim in (priority, due_at, seq) order through all of it.
"""

from __future__ import annotations

import dataclasses
import json

import pytest

from jobsched.cron import CronExpr
from jobsched.jobs import (
    ALL_STATES,
    ONCE,
    RUNNABLE_STATES,
    CronSchedule,
    IntervalSchedule,
    Job,
    JobOptions,
    JobState,
    RetryPolicy,
)
from jobsched.queues import QueueChange
from jobsched.stores.memory import MemoryStore
from jobsched.stores.memory_compact import SEQ_MASK, Packer
from jobsched.timefmt import MAX_MS, MIN_MS

S = JobState
T0 = 1_705_309_200_000


def _job(job_id: str, due: int | None = T0, state: JobState = S.SCHEDULED, **kw: object) -> Job:
    fields: dict[str, object] = {"first_due": due, **kw}
    return Job(job_id, "t", "{}", ONCE, state, due, T0, T0, **fields)  # type: ignore[arg-type]


def _everything(job_id: str, state: JobState, due: int | None) -> Job:
    """A job with no field left at its default."""
    return Job(
        job_id, "send-report", json.dumps({"to": ["a@example.com"], "n": 3}),
        CronSchedule(CronExpr.parse("*/5 9-17 * * MON-FRI", "Europe/London")), state, due,
        T0 - 5, T0 + 7, RetryPolicy(7, 250, 60_000, True), JobOptions(30_000, "allow", "all", 9),
        attempts=2, runs=4, last_run_at=T0 - 1, last_error="boom\nline 2", paused_from=S.RETRYING,
        first_due=T0 - 60_000, spec_key='{"task":"send-report"}', skipped=3, locked_by="node-1",
        locked_until=T0 + 30_000, queue="reports", priority=7, unique_key="report:42",
        unique_for_ms=86_400_000,
    )  # fmt: skip


def _held(store: MemoryStore, job_id: str) -> object:
    return store._jobs[job_id]


def _pending(job: Job) -> bool:
    return job.state in RUNNABLE_STATES and job.due_at is not None


@pytest.mark.parametrize("state", ALL_STATES)
@pytest.mark.parametrize("due", [T0, None])
def test_every_field_of_every_state_round_trips(state: JobState, due: int | None) -> None:
    store = MemoryStore()
    job = _everything("j", state, due)
    store.insert(job)
    assert store.get("j") == job
    assert store.list_jobs(state, "send-report", None, 10, "reports") == [job]
    assert store.counts() == {state: 1}
    # A record exactly when the job is pending with a due time; a Job otherwise.
    assert isinstance(_held(store, "j"), tuple) is _pending(job)


def test_a_fresh_job_is_a_five_item_record_sharing_its_shape_and_clock() -> None:
    store = MemoryStore()
    for i in range(3):
        store.insert(_job(f"j{i}", T0 + i))
    a, b = _held(store, "j0"), _held(store, "j2")
    assert isinstance(a, tuple) and isinstance(b, tuple) and len(a) == len(b) == 5
    assert a[4] is b[4]  # one shape object for equal shapes
    assert a[3] is b[3]  # and one int for the same creation time


@pytest.mark.parametrize(
    "change",
    [
        {"updated_at": T0 + 1},
        {"attempts": 1},
        {"runs": 1},
        {"skipped": 1},
        {"last_run_at": T0},
        {"last_error": "x"},
        {"first_due": T0 - 1},
        {"first_due": None},
        {"spec_key": "{}"},
        {"locked_until": T0},
        {"unique_key": "k"},
        {"unique_key": "k", "unique_for_ms": 5},
        {"state": S.RETRYING, "paused_from": S.SCHEDULED, "locked_by": "n"},
    ],
)
def test_a_field_that_is_the_jobs_own_is_kept_exactly(change: dict[str, object]) -> None:
    store = MemoryStore()
    job = _job("j").evolve(**change)
    store.insert(job)
    assert store.get("j") == job
    own = "state" not in change  # the shape's fields need no own part
    assert len(_held(store, "j")) == (6 if own else 5)  # type: ignore[arg-type]


def test_equal_schedules_and_policies_share_one_shape() -> None:
    store = MemoryStore()
    for i in range(2):  # equal values, not the same objects
        expr = CronExpr.parse("0 9 * * *", "UTC")
        job = _job(f"j{i}").evolve(schedule=CronSchedule(expr), retry=RetryPolicy(9, 10))
        store.insert(job)
        assert store.get(f"j{i}") == job
    a, b = _held(store, "j0"), _held(store, "j1")
    assert isinstance(a, tuple) and isinstance(b, tuple)
    assert a[4] is b[4]  # the parsed expression is cached, so the schedules are equal
    store.insert(_job("j2").evolve(retry=RetryPolicy(9, 11)))
    c = _held(store, "j2")
    assert isinstance(c, tuple) and c[4] is not a[4] and c[4][3] == RetryPolicy(9, 11)


def test_huge_payloads_and_ids_round_trip() -> None:
    store = MemoryStore()
    payload = json.dumps({"blob": "é" * 1_000_000, "n": list(range(10_000))})
    job_id = "x" * 10_000
    job = Job(job_id, "t" * 5_000, payload, ONCE, S.SCHEDULED, T0, T0, T0, first_due=T0)
    store.insert(job)
    assert store.get(job_id) == job
    assert store.list_jobs(None, None, None, 1) == [job]
    (claimed,) = store.claim_due(T0, 10, "a", T0 + 1)
    assert claimed.payload_json is payload and claimed.job_id == job_id
    assert claimed == job.evolve(state=S.RUNNING, locked_by="a", locked_until=T0 + 1)


def test_due_times_across_the_whole_range_claim_in_order() -> None:
    store = MemoryStore()
    dues = [MAX_MS, 0, -1, MIN_MS, T0, 1, MIN_MS, MAX_MS - 1]
    for i, due in enumerate(dues):
        store.insert(_job(f"j{i}", due))
    assert store.next_due() == MIN_MS
    claimed = store.claim_due(MAX_MS, 100, "a", 0)
    want = sorted(range(len(dues)), key=lambda i: (dues[i], i))
    assert [j.job_id for j in claimed] == [f"j{i}" for i in want]
    assert [j.due_at for j in claimed] == sorted(dues)


def test_claims_stop_at_now_exactly() -> None:
    store = MemoryStore()
    for i, due in enumerate([T0 - 1, T0, T0 + 1, -5, -4]):
        store.insert(_job(f"j{i}", due))
    assert [j.job_id for j in store.claim_due(T0, 10, "a", 0)] == ["j3", "j4", "j0", "j1"]
    assert [j.job_id for j in store.claim_due(-4, 10, "a", 0)] == []
    assert store.next_due() == T0 + 1


def test_updates_of_a_pending_job_move_it_in_the_claim_order() -> None:
    store = MemoryStore()
    for i in range(4):
        store.insert(_job(f"j{i}", T0 + i))
    j3 = store.get("j3")
    assert j3 is not None
    # Sooner, then later again: its first two records are stale heap entries.
    assert store.replace(j3.evolve(due_at=T0 - 10), S.SCHEDULED)
    assert store.replace(j3.evolve(due_at=T0 + 100, payload_json='{"v":2}'), S.SCHEDULED)
    j1 = store.get("j1")
    assert j1 is not None
    assert store.replace(j1.evolve(priority=9), S.SCHEDULED)  # to the last heap
    assert store.replace(store.get("j2").evolve(state=S.RETRYING, attempts=1), S.SCHEDULED)  # type: ignore[union-attr]
    assert store.next_due() == T0
    got = store.claim_due(T0 + 100, 10, "a", 0)
    assert [(j.job_id, j.due_at) for j in got] == [
        ("j0", T0), ("j2", T0 + 2), ("j3", T0 + 100), ("j1", T0 + 1),
    ]  # fmt: skip
    assert got[1].attempts == 1 and got[2].payload_json == '{"v":2}'
    assert store.counts() == {S.RUNNING: 4}
    assert store.claim_due(MAX_MS, 10, "a", 0) == []  # no stale entry is claimed


def test_a_rolled_back_block_puts_the_records_back() -> None:
    store = MemoryStore()
    for i in range(3):
        store.insert(_job(f"j{i}", T0 + i))
    before = list(store.iter_all())
    held = {i: _held(store, f"j{i}") for i in range(3)}
    with pytest.raises(KeyError), store.transaction():
        store.replace(before[2].evolve(due_at=T0 - 5), S.SCHEDULED)
        store.replace(before[0].evolve(state=S.PAUSED, due_at=None), S.SCHEDULED)
        store.insert(_job("new", T0 - 9))
        assert [j.job_id for j in store.claim_due(T0 + 1, 10, "a", 0)] == ["new", "j2", "j1"]
        raise KeyError
    assert list(store.iter_all()) == before
    assert all(_held(store, f"j{i}") is held[i] for i in range(3))  # the very records
    assert store.counts() == {S.SCHEDULED: 3}
    assert store.next_due() == T0
    assert [j.job_id for j in store.claim_due(T0 + 5, 10, "a", 0)] == ["j0", "j1", "j2"]


def test_a_claim_skipped_for_its_queue_keeps_its_record_claimable() -> None:
    store = MemoryStore()
    store.insert(_job("p", T0, queue="paused"))
    store.insert(_job("o", T0 + 1))
    store.configure_queue("paused", QueueChange(paused=True))
    assert [j.job_id for j in store.claim_due(T0 + 5, 10, "a", 0)] == ["o"]
    assert store.next_due() == T0
    store.configure_queue("paused", QueueChange(paused=False))
    assert [j.job_id for j in store.claim_due(T0 + 5, 10, "a", 0)] == ["p"]


def test_many_tasks_and_interval_schedules_outgrow_the_shape_cache_safely() -> None:
    store = MemoryStore()
    jobs = [
        _job(f"j{i}", T0 + i % 7).evolve(task=f"task-{i}", schedule=IntervalSchedule(60_000, i))
        for i in range(Packer.LIMIT * 2 + 5)
    ]
    store.insert_many(jobs)
    assert list(store.iter_all()) == jobs
    claimed = store.claim_due(T0 + 7, len(jobs), "a", 0)
    assert sorted(claimed, key=lambda j: j.seq) == [
        j.evolve(state=S.RUNNING, locked_by="a", locked_until=0) for j in jobs
    ]


def test_a_seq_too_large_for_the_key_leaves_the_job_a_plain_job() -> None:
    job = dataclasses.replace(_job("j"), seq=SEQ_MASK + 1)
    assert Packer().pack(job) is job
    fits = dataclasses.replace(_job("j"), seq=SEQ_MASK)
    assert isinstance(Packer().pack(fits), tuple)
