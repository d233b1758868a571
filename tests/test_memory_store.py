"""The memory store's undo (promise 1 of stores/base.py) beyond the conformance
suite: seeded random writes in blocks that raise, nested or not, must leave
the store exactly as a twin that never saw them, down to its heaps and counts;
and the stdio node undoes a failed request on it."""

from __future__ import annotations

import io
import json
import os
import random
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from jobsched.errors import JobExists, JobschedError
from jobsched.jobs import FINAL_STATES, ONCE, RUNNABLE_STATES, Job, JobState
from jobsched.node import StdioNode
from jobsched.queues import QueueChange, QueueSettings
from jobsched.stores.base import RunRecord
from jobsched.stores.memory import RUNS_KEPT, MemoryStore
from jobsched.stores.memory_compact import seq_of
from tests.harness import Clock, Wire

S = JobState
T0 = 1_705_309_200_000
Op = Callable[[MemoryStore], object]
STATES = [S.SCHEDULED, S.RETRYING, S.RUNNING, S.PAUSED, S.COMPLETED, S.DEAD, S.CANCELLED]


def _job(job_id: str, state: JobState, due: int | None) -> Job:
    # Two queues: claims meet the rate limits and pauses the random writes set.
    return Job(job_id, "t", "{}", ONCE, state, due, T0, T0, queue=f"q{len(job_id) % 2}")


def _random_op(rng: random.Random, names: list[str]) -> Op:
    """One write of any kind, applied the same way to whichever store it is given."""
    name, t = rng.choice(names), T0 + rng.randrange(50)
    kind = rng.randrange(8)
    if kind == 7:
        change = rng.choice(
            [
                QueueChange(rate_max=rng.randrange(1, 3), rate_per_ms=rng.randrange(1, 20)),
                QueueChange(concurrency=rng.randrange(1, 3)),
                QueueChange(paused=rng.random() < 0.5),
                QueueChange(clear_rate=True, clear_concurrency=True),
            ]
        )
        queue = rng.choice(["q0", "q1"])
        return lambda s: s.configure_queue(queue, change)
    if kind == 0:
        state = rng.choice([S.SCHEDULED, S.RETRYING, S.COMPLETED, S.PAUSED])
        due = None if state in FINAL_STATES else t

        def insert(s: MemoryStore) -> object:
            try:
                return s.insert(_job(name, state, due))
            except JobExists:
                return "exists"

        return insert
    if kind == 1:
        state, due = rng.choice(STATES), rng.choice([None, t])

        def replace(s: MemoryStore) -> object:
            old = s.get(name)
            if old is None:
                return None
            return s.replace(old.evolve(state=state, due_at=due, runs=old.runs + 1), old.state)

        return replace
    owner, n, back = rng.choice(["a", "b"]), rng.randrange(1, 4), rng.randrange(5)
    if kind == 2:
        return lambda s: s.claim_due(t, n, owner, t + 10)
    if kind == 3:
        return lambda s: s.extend_leases(owner, t + 100)
    if kind == 4:
        return lambda s: s.prune(s.clock() - back, n)
    return lambda s: s.record_run(RunRecord(name, t, t + 1, "failed", str(t), owner))


def _seen(s: MemoryStore) -> tuple[object, ...]:
    jobs = list(s.iter_all())
    runs = {n: s.recent_runs(n, RUNS_KEPT) for n in sorted(s._runs)}
    starts = {q: list(d) for q, d in s._starts.items() if d}  # what the rate limits count
    leases = s.expired_leases(T0 + 10**6, 1000)
    return jobs, runs, s.counts(), s.next_due(), leases, s.queue_report(), starts


def _check_books(s: MemoryStore) -> None:
    """The derived structures agree with the jobs (what no reader sees directly)."""
    items = list(s._jobs.values())
    jobs = [s.get(i) for i in s._jobs]
    assert s._undo == [] and s._marks == []
    assert [j for j in s._by_seq if j is not None] == sorted(items, key=seq_of)
    # A job is a compact record exactly when it is pending with a due time.
    for item, j in zip(items, jobs, strict=True):
        assert j is not None
        pending = j.state in RUNNABLE_STATES and j.due_at is not None
        assert isinstance(item, tuple) is pending
        if pending:
            # Its key is in its queue's heap, and leads back to it.
            heap = s._heaps[j.priority][j.queue]
            assert item[0] in heap and s._record(item[0], heap) is item
    pending = [
        sum(isinstance(i, tuple) and s.get(i[1]).state is st for i in items)  # type: ignore[union-attr]
        for st in (S.SCHEDULED, S.RETRYING)
    ]
    assert s._pending == pending
    assert s.counts() == {
        st: n for st in STATES if (n := sum(j is not None and j.state is st for j in jobs))
    }
    assert set(s._running) == {j.job_id for j in jobs if j and j.state is S.RUNNING}
    assert set(s._final_at) == {j.job_id for j in jobs if j and j.state in FINAL_STATES}
    assert set(s._final_at.items()) <= set((i, t) for t, i in s._final_heap)
    assert s._live_runs == sum(len(q) for q in s._runs.values())
    assert all(s._runs.values())  # no empty tails
    entries = set(s._run_heap)
    assert all((t, k, i) in entries for i, q in s._runs.items() for k, t, _ in q)


def _play(a: MemoryStore, b: MemoryStore, rng: random.Random, names: list[str]) -> None:
    """One outer block on ``a`` of inner blocks that commit or raise, the outer
    one committing or raising; ``b`` gets only what ``a`` should keep."""
    segments = [
        ([_random_op(rng, names) for _ in range(rng.randrange(1, 6))], rng.random() < 0.4)
        for _ in range(rng.randrange(1, 4))
    ]
    outer_fails = rng.random() < 0.4
    kept: list[Op] = []
    with pytest.raises(KeyError) if outer_fails else _nothing(), a.transaction():
        for ops, fails in segments:
            with pytest.raises(ValueError) if fails else _nothing(), a.transaction():
                for op in ops:
                    op(a)
                if fails:
                    raise ValueError
            kept += [] if fails else ops
        if outer_fails:
            raise KeyError
    for op in [] if outer_fails else kept:
        op(b)


class _nothing:
    def __enter__(self) -> None:
        pass

    def __exit__(self, *exc: object) -> None:
        pass


@pytest.mark.parametrize("seed", range(6))
def test_blocks_that_raise_leave_the_store_as_if_they_never_ran(seed: int) -> None:
    rng = random.Random(seed)
    names = [f"j{i}" for i in range(6)] + [f"jj{i}" for i in range(6)]
    a, b = MemoryStore(), MemoryStore()
    a.clock = b.clock = clock = Clock(1_000)
    for step in range(150):
        clock.ms += rng.randrange(3)
        if rng.random() < 0.3:  # a plain call outside any block, on both
            op = _random_op(rng, names)
            assert op(a) == op(b)
        else:
            _play(a, b, rng, names)
        assert _seen(a) == _seen(b), f"step {step}"
        _check_books(a)
    # Nothing lingers that would show later: claims and pruning agree to the end.
    assert a.claim_due(T0 + 10**6, 1000, "z", 0) == b.claim_due(T0 + 10**6, 1000, "z", 0)
    assert a.prune(10**9, 1000) == b.prune(10**9, 1000)


def test_undo_restores_a_run_tail_that_a_new_record_pushed_out() -> None:
    store = MemoryStore()
    store.clock = clock = Clock(1_000)
    runs = [RunRecord("a", T0 + i, T0 + i, "succeeded") for i in range(RUNS_KEPT)]
    for r in runs:
        store.record_run(r)
    clock.ms = 5_000
    with pytest.raises(KeyError), store.transaction():
        store.record_run(RunRecord("a", T0 + 99, T0 + 99, "failed"))  # pushes runs[0] out
        assert store.prune(2_000, 100) == RUNS_KEPT - 1  # the rest of the old ones
        raise KeyError
    assert store.recent_runs("a", RUNS_KEPT) == runs[::-1]
    # All of them are still known to retention, the one pushed out included.
    assert store.prune(2_000, 100) == RUNS_KEPT
    assert store.recent_runs("a") == []


class _FailsAfterResuming(MemoryStore):
    """A store whose write lands and then fails: the request answers error 13."""

    def replace(self, job: Job, expect_state: JobState, expect_owner: str | None = None) -> bool:
        written = super().replace(job, expect_state, expect_owner)
        if expect_state is S.PAUSED:
            raise JobschedError("the resume failed after its write")
        return written


def test_the_node_undoes_a_request_that_failed_after_writing() -> None:
    store = _FailsAfterResuming()
    wire = Wire(store)
    job_id = wire.ok({"type": "schedule_job", "task": "t", "delay_ms": 9}, "job_scheduled")[
        "job_id"
    ]
    wire.ok({"type": "pause_job", "job_id": job_id}, "job_paused")
    line = {"src": "c", "dest": "s", "body": {"type": "resume_job", "msg_id": 7, "job_id": job_id}}
    out, (r, w) = io.BytesIO(), os.pipe()
    os.write(w, json.dumps(line).encode() + b"\n")
    os.close(w)
    try:
        StdioNode(wire.ctx, r, out).run()
    finally:
        os.close(r)
    reply = json.loads(out.getvalue())["body"]
    assert (reply["type"], reply["code"]) == ("error", 13)
    got = store.get(job_id)
    assert got is not None and got.state is S.PAUSED  # the resume's write was undone


def test_a_write_from_another_thread_waits_for_the_block_and_is_not_undone() -> None:
    store = MemoryStore()
    waiting = threading.Event()

    def other() -> None:
        waiting.set()
        store.insert(_job("theirs", S.SCHEDULED, T0))  # waits for the block's lock

    thread = threading.Thread(target=other)
    with pytest.raises(KeyError), store.transaction():
        store.insert(_job("mine", S.SCHEDULED, T0))
        thread.start()
        assert waiting.wait(10)
        time.sleep(0.02)  # let the other thread reach the lock
        raise KeyError
    thread.join(10)
    assert [j.job_id for j in store.iter_all()] == ["theirs"]
    _check_books(store)


def test_a_rolled_back_claim_gives_its_rate_limit_start_back() -> None:
    store = MemoryStore()
    store.configure_queue("r", QueueChange(rate_max=1, rate_per_ms=1000))
    for i in range(3):
        store.insert(Job(f"r{i}", "t", "{}", ONCE, S.SCHEDULED, T0, T0, T0, queue="r"))
    with pytest.raises(KeyError), store.transaction():
        assert [j.job_id for j in store.claim_due(T0, 10, "a", T0 + 100)] == ["r0"]
        raise KeyError
    # The claim never happened: the one start the window allows is still free.
    assert [j.job_id for j in store.claim_due(T0, 10, "a", T0 + 100)] == ["r0"]
    assert store.claim_due(T0 + 999, 10, "a", T0 + 100) == []


def test_a_rolled_back_claim_brings_back_the_starts_it_found_expired() -> None:
    store = MemoryStore()
    store.configure_queue("r", QueueChange(rate_max=1, rate_per_ms=1000))
    for i in range(3):
        store.insert(Job(f"r{i}", "t", "{}", ONCE, S.SCHEDULED, T0, T0, T0, queue="r"))
    assert len(store.claim_due(T0, 10, "a", T0 + 100)) == 1  # a start at T0, committed
    with pytest.raises(KeyError), store.transaction():
        # At T0 + 1000 the start at T0 has left the window: this claim lets it go.
        assert len(store.claim_due(T0 + 1000, 10, "a", T0 + 100)) == 1
        raise KeyError
    # A caller's clock may go back (logical times): the start at T0 still counts,
    # and the rolled-back one does not.
    assert store.claim_due(T0 + 500, 10, "a", T0 + 100) == []
    assert len(store.claim_due(T0 + 1000, 10, "a", T0 + 100)) == 1


def test_a_rolled_back_block_restores_the_queue_settings_it_changed() -> None:
    store = MemoryStore()
    store.configure_queue("r", QueueChange(concurrency=2))
    with pytest.raises(KeyError), store.transaction():
        store.configure_queue("r", QueueChange(paused=True, rate_max=1, rate_per_ms=10))
        store.configure_queue("new", QueueChange(paused=True))
        raise KeyError
    assert [r.settings for r in store.queue_report()] == [QueueSettings("r", concurrency=2)]


def test_a_claim_behind_held_queues_does_not_touch_their_backlog(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A paused queue, or a full one, holds its due jobs back. The store kept
    one due heap per priority, so every claim popped each held due job and
    pushed it back: O(held) a claim. Heaps are per queue now: a claim pops
    what it takes (and stale records), nothing of the queues it leaves alone.
    Priority still comes first across queues, then due time."""
    import heapq

    def queued(job_id: str, queue: str, due: int, priority: int = 0) -> Job:
        return Job(job_id, "t", "{}", ONCE, JobState.SCHEDULED, due, T0, T0, queue=queue,
                   priority=priority)  # fmt: skip

    s = MemoryStore()
    s.insert_many([queued(f"h{i}", "held", T0 + i) for i in range(1500)])
    s.insert_many([queued(f"f{i}", "full", T0 + i) for i in range(1500)])
    s.insert_many([queued("d0", "default", T0 + 50), queued("d1", "default", T0 + 20)])
    s.insert_many([queued("p1", "other", T0 + 10, priority=1), queued("o0", "other", T0 + 30)])
    s.configure_queue("held", QueueChange(paused=True))
    s.configure_queue("full", QueueChange(concurrency=1))
    assert [j.job_id for j in s.claim_due(T0 + 5_000, 1, "me", T0 + 60_000)] == ["f0"]
    pops: list[None] = []
    real = heapq.heappop

    def counted(heap: list[object]) -> object:
        pops.append(None)
        return real(heap)

    monkeypatch.setattr(heapq, "heappop", counted)
    taken = s.claim_due(T0 + 5_000, 10, "me", T0 + 60_000)
    assert [j.job_id for j in taken] == ["d1", "o0", "d0", "p1"]  # priority 0 by due, then 1
    assert len(pops) == 4
    monkeypatch.undo()
    s.configure_queue("held", QueueChange(paused=False))
    assert len(s.claim_due(T0 + 5_000, 5_000, "me", T0 + 60_000)) == 1500  # none was lost


def test_next_due_after_walks_a_held_backlog_once_while_nothing_is_pushed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A dispatcher blocked on a paused or full queue asks, at every look, for
    the first job due after now (``next_due(after)``); the memory store found
    it by walking every due record of the held heap, each time. The answer is
    kept per heap until something is pushed to it, and checked to be live."""

    def queued(job_id: str, due: int, queue: str = "held") -> Job:
        return Job(job_id, "t", "{}", ONCE, JobState.SCHEDULED, due, T0, T0, queue=queue)

    s = MemoryStore()
    s.insert_many([queued(f"h{i}", T0 + i) for i in range(1500)])
    s.insert_many([queued("f1", T0 + 100_000), queued("f2", T0 + 200_000)])
    s.configure_queue("held", QueueChange(paused=True))
    walks: list[None] = []
    real = MemoryStore._first_after

    def counted(self: MemoryStore, heap: Any, bound: int) -> Any:
        walks.append(None)
        return real(self, heap, bound)

    monkeypatch.setattr(MemoryStore, "_first_after", counted)
    assert s.next_due(after=T0 + 5_000) == T0 + 100_000
    assert s.next_due(after=T0 + 6_000) == T0 + 100_000
    assert len(walks) == 1  # the second look used the first one's answer
    s.insert(queued("f0", T0 + 50_000))  # pushed: the answer is read again
    assert s.next_due(after=T0 + 6_000) == T0 + 50_000
    f0 = s.get("f0")
    assert f0 is not None
    s.replace(f0.evolve(state=JobState.CANCELLED, due_at=None), JobState.SCHEDULED)
    assert s.next_due(after=T0 + 6_000) == T0 + 100_000  # the answer's job changed
    assert s.next_due(after=T0 + 150_000) == T0 + 200_000  # past the answer
    assert s.next_due(after=T0 + 300_000) is None
    assert s.next_due(after=T0 + 400_000) is None
    assert s.next_due() == T0


def test_a_job_put_back_at_the_same_due_time_pushes_its_key_again_safely() -> None:
    """A recurring job claimed and ended at the same due time (a manual run
    that failed for the last time: due at the same next occurrence) pushed a
    second record with the same key; the heap then compared the two records
    past their keys (None against an int) and raised, and the rollback of
    that raised again: the node died with every job in memory. The heaps
    hold keys now, which never compare beyond themselves."""
    from jobsched.engine import Engine
    from jobsched.validate import schedule_spec

    s = MemoryStore()
    engine = Engine(s, wall_clock=lambda: T0)
    spec = schedule_spec({"task": "t", "job_id": "a", "interval_ms": 60_000, "max_attempts": 1})
    engine.schedule(spec, T0)
    engine.schedule(schedule_spec({"task": "t", "job_id": "b", "delay_ms": 60_000}), T0)
    for _ in range(3):  # each failure gives up: due again at the same next occurrence
        assert not engine.execute_one("a", True, T0).retry_scheduled
    job = s.get("a")
    assert job is not None and (job.state, job.due_at) == (S.SCHEDULED, T0 + 60_000)
    assert engine.execute_due(T0 + 60_000) == (["a", "b"], [])
    _check_books(s)
