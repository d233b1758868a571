"""The store contract (jobsched/stores/base.py), run against every backend.

Each test runs once per backend through the ``store`` / ``make_store``
fixtures of conftest.py; ``make_store()`` opens another handle on the same
data, as another process would. The tests speak only of the contract.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest

from jobsched.cron import CronExpr
from jobsched.errors import JobExists, JobNotFound
from jobsched.jobs import (
    ONCE,
    CronSchedule,
    IntervalSchedule,
    Job,
    JobOptions,
    JobState,
    RetryPolicy,
    Schedule,
)
from jobsched.stores.base import (
    PRUNE_EVERY_MS,
    ClusterClock,
    Membership,
    RunRecord,
    Store,
    WakeupListener,
)

S = JobState
T0 = 1_705_309_200_000  # 2024-01-15T09:00:00Z
Factory = Callable[[], Store]


def job(job_id: str, due: int | None = T0, state: JobState = S.SCHEDULED, **kw: object) -> Job:
    fields: dict[str, object] = {
        "task": "t",
        "payload_json": "{}",
        "schedule": ONCE,
        "created_at": T0,
        "updated_at": T0,
    }
    fields.update(kw)
    return Job(job_id=job_id, state=state, due_at=due, **fields)  # type: ignore[arg-type]


def ids(jobs: list[Job]) -> list[str]:
    return [j.job_id for j in jobs]


class FixedClock:
    def __init__(self, ms: int) -> None:
        self.ms = ms

    def __call__(self) -> int:
        return self.ms


# -- insert and get ---------------------------------------------------------

SCHEDULES: list[Schedule] = [
    ONCE,
    CronSchedule(CronExpr.parse("*/15 9-17 * * MON-FRI", "Europe/Paris")),
    IntervalSchedule(interval_ms=90_000, anchor_ms=T0 - 7),
]


@pytest.mark.parametrize("schedule", SCHEDULES, ids=lambda s: s.kind)
def test_every_field_round_trips_through_another_handle(
    make_store: Factory, schedule: Schedule
) -> None:
    full = Job(
        job_id="job:1.a-b_c",
        task="send-email",
        payload_json='{"to":"ü@example.com","n":[1,2.5,null]}',
        schedule=schedule,
        state=S.PAUSED,
        due_at=T0 + 123,
        created_at=T0 - 5,
        updated_at=T0 + 6,
        retry=RetryPolicy(max_attempts=7, base_ms=250, max_backoff_ms=60_000, jitter=True),
        options=JobOptions(timeout_ms=1500, overlap="allow", misfire="all", catchup_window_ms=9),
        attempts=2,
        runs=41,
        last_run_at=T0 - 1,
        last_error="boom: ValueError('x')",
        paused_from=S.RETRYING,
        first_due=T0 + 1,
        spec_key='{"task":"send-email"}',
        skipped=3,
        locked_by="node-7",
        locked_until=T0 + 30_000,
    )
    a, b = make_store(), make_store()
    stored = a.insert(full)
    assert stored.seq > 0
    expected = full.evolve(seq=stored.seq)
    assert a.get(full.job_id) == expected
    assert b.get(full.job_id) == expected
    assert b.list_jobs(None, None, None, 10) == [expected]


def test_defaults_and_nulls_round_trip(store: Store) -> None:
    plain = job("plain", due=None, state=S.COMPLETED)
    store.insert(plain)
    got = store.get("plain")
    assert got == plain
    assert got is not None and got.retry == RetryPolicy() and got.options == JobOptions()


def test_seq_increases_in_insert_order(store: Store) -> None:
    seqs = [store.insert(job(f"j{i}")).seq for i in range(5)]
    assert seqs == sorted(seqs) and len(set(seqs)) == 5


def test_insert_of_a_taken_id_raises_and_keeps_the_first(store: Store) -> None:
    store.insert(job("dup", task="first"))
    with pytest.raises(JobExists):
        store.insert(job("dup", task="second"))
    got = store.get("dup")
    assert got is not None and got.task == "first"
    assert len(list(store.iter_all())) == 1


def test_get_of_an_unknown_id_is_none(store: Store) -> None:
    assert store.get("nope") is None


# -- bulk insert and read -----------------------------------------------------


def test_insert_many_assigns_increasing_seqs_in_list_order(make_store: Factory) -> None:
    a, b = make_store(), make_store()
    a.insert(job("before"))
    batch = [job(f"b{i}", due=T0 + (7 - i) % 3, task=f"t{i % 2}") for i in range(1200)]
    stored = a.insert_many(batch)
    seqs = [j.seq for j in stored]
    assert ids(stored) == ids(batch)
    assert seqs == sorted(seqs) and len(set(seqs)) == 1200
    assert seqs[0] > a.get("before").seq  # type: ignore[union-attr]
    assert a.insert(job("after")).seq > seqs[-1]
    assert ids(list(b.iter_all())) == ["before", *ids(batch), "after"]
    assert b.get("b7") == stored[7]
    assert a.insert_many([]) == []


def test_insert_many_with_a_taken_id_stores_none_and_names_the_first(store: Store) -> None:
    store.insert(job("taken-2"))
    store.insert(job("taken-1"))
    batch = [job("new-a"), job("taken-1"), job("new-b"), job("taken-2")]
    with pytest.raises(JobExists) as err:
        store.insert_many(batch)
    assert err.value.job_id == "taken-1"
    assert ids(list(store.iter_all())) == ["taken-2", "taken-1"]
    with pytest.raises(JobExists) as err:
        store.insert_many([job("x"), job("y"), job("x"), job("y")])
    assert err.value.job_id == "x"
    assert store.get("y") is None and store.counts() == {S.SCHEDULED: 2}
    assert ids(store.insert_many([job("x"), job("y")])) == ["x", "y"]


def test_a_failed_insert_many_leaves_the_enclosing_block_going(store: Store) -> None:
    with store.transaction():
        store.insert(job("first"))
        with pytest.raises(JobExists):
            store.insert_many([job("second"), job("first")])
        store.insert_many([job("third")])
    assert ids(list(store.iter_all())) == ["first", "third"]
    with pytest.raises(KeyError), store.transaction():
        store.insert_many([job("undone")])
        raise KeyError
    assert store.get("undone") is None
    assert ids(store.claim_due(T0, 10, "me", T0 + 9)) == ["first", "third"]


def test_get_many_returns_the_stored_jobs_among_the_ids(make_store: Factory) -> None:
    a, b = make_store(), make_store()
    stored = a.insert_many([job(f"g{i}") for i in range(700)])
    wanted = [f"g{i}" for i in range(0, 700, 3)] + ["missing", "g1"]
    got = b.get_many(wanted)
    assert got == {j.job_id: j for j in stored if j.job_id in wanted}
    assert b.get_many([]) == {}


# -- guarded replace --------------------------------------------------------


def test_replace_writes_when_the_state_matches(store: Store) -> None:
    old = store.insert(job("r"))
    new = old.evolve(state=S.PAUSED, paused_from=S.SCHEDULED, updated_at=T0 + 1)
    assert store.replace(new, S.SCHEDULED)
    assert store.get("r") == new


def test_replace_in_the_wrong_state_changes_nothing(store: Store) -> None:
    old = store.insert(job("r"))
    assert not store.replace(old.evolve(state=S.CANCELLED, due_at=None), S.RETRYING)
    assert store.get("r") == old


def test_replace_checks_the_owner_when_given(store: Store) -> None:
    store.insert(job("r"))
    [held] = store.claim_due(T0, 10, "owner-a", T0 + 1000)
    done = held.evolve(state=S.COMPLETED, due_at=None, locked_by=None, locked_until=None)
    assert not store.replace(done, S.RUNNING, "owner-b")
    assert store.get("r") == held
    assert store.replace(done, S.RUNNING, "owner-a")
    assert store.get("r") == done


def test_replace_of_an_unknown_job_is_false(store: Store) -> None:
    assert not store.replace(job("ghost"), S.SCHEDULED)
    assert store.get("ghost") is None


def test_finish_runs_applies_each_guard_on_its_own(make_store: Factory) -> None:
    a, b = make_store(), make_store()
    for name in "wxyz":
        a.insert(job(name))
    held = {j.job_id: j for j in a.claim_due(T0, 10, "owner-a", T0 + 1000)}
    b.replace(held["x"].evolve(state=S.CANCELLED, due_at=None, locked_by=None), S.RUNNING)
    done = {
        name: held[name].evolve(state=S.COMPLETED, due_at=None, locked_by=None, runs=1)
        for name in "wxyz"
    }
    writes = [
        (done["w"], S.RUNNING, "owner-a"),
        (done["x"], S.RUNNING, "owner-a"),  # cancelled meanwhile by another handle
        (done["y"], S.RUNNING, "owner-b"),  # not its holder
        (done["z"], S.RUNNING, "owner-a"),
    ]
    with a.transaction():
        assert a.finish_runs(writes, []) == [True, False, False, True]
    assert b.get("w") == done["w"] and b.get("z") == done["z"]
    got_x, got_y = b.get("x"), b.get("y")
    assert got_x is not None and got_x.state is S.CANCELLED
    assert got_y == held["y"]
    assert a.finish_runs([], []) == []


def test_record_runs_appends_in_order(make_store: Factory) -> None:
    a, b = make_store(), make_store()
    a.insert(job("a"))
    records = [run("a", T0 + i, "failed" if i % 2 else "skipped", f"e{i}") for i in range(3)]
    a.record_runs(records)
    a.record_runs([])
    assert b.recent_runs("a") == records[::-1]


def test_only_one_of_two_handles_wins_the_same_guard(make_store: Factory) -> None:
    a, b = make_store(), make_store()
    old = a.insert(job("g"))
    wins = [
        a.replace(old.evolve(state=S.CANCELLED, due_at=None), S.SCHEDULED),
        b.replace(old.evolve(state=S.PAUSED, paused_from=S.SCHEDULED), S.SCHEDULED),
    ]
    assert wins == [True, False]
    got = b.get("g")
    assert got is not None and got.state is S.CANCELLED


# -- claiming -----------------------------------------------------------------


def test_claim_takes_due_jobs_by_due_time_then_seq(store: Store) -> None:
    for name, due in [("c", T0 + 2), ("a", T0 + 1), ("b", T0 + 1), ("d", T0)]:
        store.insert(job(name, due=due))
    claimed = store.claim_due(T0 + 2, 10, "me", T0 + 99)
    assert ids(claimed) == ["d", "a", "b", "c"]
    for j in claimed:
        assert (j.state, j.locked_by, j.locked_until) == (S.RUNNING, "me", T0 + 99)
        assert store.get(j.job_id) == j


def test_claim_takes_only_runnable_jobs_that_are_due(store: Store) -> None:
    store.insert(job("due", due=T0))
    store.insert(job("retry", due=T0 - 1, state=S.RETRYING))
    store.insert(job("later", due=T0 + 1))
    store.insert(job("paused", due=T0, state=S.PAUSED, paused_from=S.SCHEDULED))
    store.insert(job("done", due=None, state=S.COMPLETED))
    store.insert(job("undated", due=None))
    assert ids(store.claim_due(T0, 10, "me", T0 + 9)) == ["retry", "due"]
    assert store.claim_due(T0, 10, "me", T0 + 9) == []
    assert store.get("later") == job("later", due=T0 + 1, seq=3)


def test_claim_respects_the_limit_and_continues_in_order(store: Store) -> None:
    for i in range(7):
        store.insert(job(f"j{i}", due=T0 - i))
    first = store.claim_due(T0, 3, "me", T0 + 9)
    rest = store.claim_due(T0, 10, "me", T0 + 9)
    assert ids(first) == ["j6", "j5", "j4"]
    assert ids(rest) == ["j3", "j2", "j1", "j0"]


def test_concurrent_claims_on_two_handles_never_share_a_job(make_store: Factory) -> None:
    a, b = make_store(), make_store()
    for i in range(300):
        a.insert(job(f"j{i:03}", due=T0 - i % 17))
    got: dict[str, list[str]] = {"a": [], "b": []}

    def worker(name: str, store: Store) -> None:
        while batch := store.claim_due(T0, 7, name, T0 + 9):
            got[name].extend(ids(batch))

    threads = [threading.Thread(target=worker, args=(n, s)) for n, s in (("a", a), ("b", b))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not set(got["a"]) & set(got["b"])
    assert sorted(got["a"] + got["b"]) == [f"j{i:03}" for i in range(300)]


def test_next_due_is_the_earliest_runnable_due_time(store: Store) -> None:
    assert store.next_due() is None
    store.insert(job("paused", due=T0 - 5, state=S.PAUSED, paused_from=S.SCHEDULED))
    store.insert(job("done", due=None, state=S.DEAD))
    store.insert(job("undated", due=None))
    assert store.next_due() is None
    store.insert(job("b", due=T0 + 2))
    store.insert(job("a", due=T0 + 1, state=S.RETRYING))
    assert store.next_due() == T0 + 1
    store.claim_due(T0 + 1, 10, "me", T0 + 9)
    assert store.next_due() == T0 + 2


def test_next_due_follows_a_replaced_due_time(store: Store) -> None:
    old = store.insert(job("a", due=T0 + 50))
    assert store.replace(old.evolve(due_at=T0 + 10), S.SCHEDULED)
    assert store.next_due() == T0 + 10
    assert store.claim_due(T0 + 9, 10, "me", T0) == []
    assert ids(store.claim_due(T0 + 10, 10, "me", T0)) == ["a"]


# -- listing and counting ---------------------------------------------------


def _mixed(store: Store) -> None:
    specs = [("a", "x", S.SCHEDULED), ("b", "y", S.COMPLETED), ("c", "x", S.COMPLETED)]
    specs += [("d", "y", S.SCHEDULED), ("e", "x", S.SCHEDULED)]
    for name, task, state in specs:
        store.insert(job(name, task=task, state=state))


def test_list_jobs_in_seq_order_with_filters(store: Store) -> None:
    _mixed(store)
    assert ids(store.list_jobs(None, None, None, 100)) == ["a", "b", "c", "d", "e"]
    assert ids(store.list_jobs(S.SCHEDULED, None, None, 100)) == ["a", "d", "e"]
    assert ids(store.list_jobs(None, "x", None, 100)) == ["a", "c", "e"]
    assert ids(store.list_jobs(S.COMPLETED, "x", None, 100)) == ["c"]
    assert store.list_jobs(S.DEAD, None, None, 100) == []


def test_list_jobs_pages_with_the_cursor(store: Store) -> None:
    _mixed(store)
    assert ids(store.list_jobs(None, None, None, 2)) == ["a", "b"]
    assert ids(store.list_jobs(None, None, "b", 2)) == ["c", "d"]
    assert ids(store.list_jobs(None, None, "d", 2)) == ["e"]
    assert ids(store.list_jobs(S.SCHEDULED, None, "a", 1)) == ["d"]
    # The cursor is a position: it need not match the filter.
    assert ids(store.list_jobs(None, "y", "c", 10)) == ["d"]


def test_list_jobs_with_an_unknown_cursor_raises(store: Store) -> None:
    _mixed(store)
    with pytest.raises(JobNotFound):
        store.list_jobs(None, None, "nope", 10)


def test_counts_by_state(store: Store) -> None:
    assert {k: v for k, v in store.counts().items() if v} == {}
    _mixed(store)
    store.claim_due(T0, 1, "me", T0)
    counts = {k: v for k, v in store.counts().items() if v}
    assert counts == {S.SCHEDULED: 2, S.RUNNING: 1, S.COMPLETED: 2}


def test_iter_all_yields_every_job_in_order(store: Store) -> None:
    for i in range(25):
        store.insert(job(f"j{i:02}"))
    assert ids(list(store.iter_all())) == [f"j{i:02}" for i in range(25)]


# -- leases -----------------------------------------------------------------


def test_extend_leases_moves_only_the_owners_running_jobs(store: Store) -> None:
    for name in "abc":
        store.insert(job(name))
    store.claim_due(T0, 2, "me", T0 + 10)  # a, b
    store.insert(job("mine-not-running", locked_by="me", locked_until=T0))
    assert store.extend_leases("me", T0 + 500) == 2
    assert store.extend_leases("other", T0 + 500) == 0
    for name in "ab":
        got = store.get(name)
        assert got is not None and got.locked_until == T0 + 500
    got_c = store.get("c")
    assert got_c is not None and got_c.state is S.SCHEDULED


def test_expired_leases_are_running_jobs_whose_lease_ended(store: Store) -> None:
    for name, due in [("a", T0), ("b", T0 + 1), ("c", T0 + 2)]:
        store.insert(job(name, due=due))
    store.claim_due(T0 + 1, 10, "n1", T0 + 100)  # a, b
    store.claim_due(T0 + 2, 10, "n2", T0 + 300)  # c
    store.insert(job("sched", locked_until=T0))  # not running: never expired
    assert store.expired_leases(T0 + 100, 10) == []
    assert sorted(ids(store.expired_leases(T0 + 101, 10))) == ["a", "b"]
    assert len(store.expired_leases(T0 + 101, 1)) == 1
    assert sorted(ids(store.expired_leases(T0 + 301, 10))) == ["a", "b", "c"]


# -- run history and retention ----------------------------------------------


def run(job_id: str, at: int, outcome: str = "succeeded", error: str | None = None) -> RunRecord:
    return RunRecord(job_id, at, at + 5, outcome, error, "node-1")


def test_recent_runs_newest_first_with_a_limit(store: Store) -> None:
    store.insert(job("a"))
    records = [run("a", T0 + i, "failed" if i % 2 else "succeeded", f"e{i}") for i in range(4)]
    for r in records:
        store.record_run(r)
    store.record_run(run("other", T0))
    assert store.recent_runs("a") == records[::-1]
    assert store.recent_runs("a", 2) == records[:1:-1]
    assert store.recent_runs("missing") == []


def test_prune_deletes_old_final_jobs_with_their_runs_and_old_runs(store: Store) -> None:
    clock = FixedClock(1_000)
    store.clock = clock
    for name, state in [("done", S.COMPLETED), ("dead", S.DEAD), ("live", S.SCHEDULED)]:
        store.insert(job(name, due=None if state is not S.SCHEDULED else T0, state=state))
        store.record_run(run(name, T0))
    clock.ms = 5_000
    store.insert(job("fresh-done", due=None, state=S.CANCELLED))
    store.record_run(run("live", T0 + 1))
    # Logical times do not count: these jobs' updated_at lies decades back.
    assert store.prune(1_000, 100) == 0
    assert store.prune(2_000, 100) == 5  # 2 jobs, their 2 runs, live's old run
    assert ids(list(store.iter_all())) == ["live", "fresh-done"]
    assert store.recent_runs("done") == []
    assert store.recent_runs("live") == [run("live", T0 + 1)]
    assert store.prune(2_000, 100) == 0


def test_prune_works_in_batches(store: Store) -> None:
    store.clock = FixedClock(1_000)
    for i in range(5):
        store.insert(job(f"j{i}", due=None, state=S.COMPLETED))
    assert store.prune(2_000, 2) == 2
    assert store.prune(2_000, 2) == 2
    assert store.prune(2_000, 2) == 1
    assert store.prune(2_000, 2) == 0
    assert list(store.iter_all()) == []


def test_a_job_that_becomes_final_is_kept_for_the_retention_from_then(store: Store) -> None:
    clock = FixedClock(1_000)
    store.clock = clock
    old = store.insert(job("a"))
    clock.ms = 9_000
    assert store.replace(old.evolve(state=S.COMPLETED, due_at=None), S.SCHEDULED)
    assert store.prune(5_000, 10) == 0
    assert store.prune(9_001, 10) == 1


def test_maybe_prune_applies_the_retention_at_most_once_a_minute(store: Store) -> None:
    clock = FixedClock(10**9)
    store.clock = clock
    store.retention_ms = 1_000
    store.insert(job("a", due=None, state=S.COMPLETED))
    clock.ms += 500
    assert store.maybe_prune() == 0  # too young
    store.insert(job("b", due=None, state=S.COMPLETED))
    clock.ms += 1_000
    assert store.maybe_prune() == 0  # "a" is old enough, but a minute has not passed
    clock.ms += PRUNE_EVERY_MS
    assert store.maybe_prune() == 2
    assert list(store.iter_all()) == []


# -- transactions -----------------------------------------------------------


def test_a_transaction_commits_all_its_calls_together(make_store: Factory) -> None:
    a, b = make_store(), make_store()
    with a.transaction():
        a.insert(job("x"))
        with a.transaction():
            a.insert(job("y"))
        if a is not b:
            assert b.get("x") is None  # not visible to another handle before the commit
    assert ids(list(b.iter_all())) == ["x", "y"]


def _lived(store: Store) -> tuple[object, ...]:
    """What a reader can see of the store: every job, counts, runs, due order."""
    jobs = list(store.iter_all())
    runs = {j.job_id: store.recent_runs(j.job_id, 20) for j in jobs}
    counts = {k: v for k, v in store.counts().items() if v}
    return jobs, runs, counts, store.next_due(), store.expired_leases(T0 + 10**6, 100)


def _write_everything(store: Store, tag: str) -> None:
    """One write of every kind: insert, replace, claim, lease, run record."""
    store.insert(job(f"{tag}-new", due=T0 - 100))
    store.insert_many([job(f"{tag}-bulk-1"), job(f"{tag}-bulk-2", due=T0 - 200)])
    old = store.get("sched")
    assert old is not None
    assert store.replace(old.evolve(due_at=T0 - 50, attempts=old.attempts + 1), S.SCHEDULED)
    store.claim_due(T0, 10, tag, T0 + 5)
    assert store.extend_leases("held", T0 + 999) == 1
    store.record_run(run("sched", T0 + 7, "failed", tag))


def _seeded(store: Store) -> None:
    store.insert(job("sched", due=T0 + 50))
    store.insert(job("held"))
    store.claim_due(T0, 10, "held", T0 + 10)
    store.record_run(run("held", T0))


def test_an_outer_block_that_raises_undoes_all_its_writes(store: Store) -> None:
    _seeded(store)
    before = _lived(store)
    with pytest.raises(KeyError), store.transaction():
        _write_everything(store, "x")
        raise KeyError
    assert _lived(store) == before
    # Nothing of the undone claim lingers: the jobs can be claimed again, in order.
    assert ids(store.claim_due(T0 + 50, 10, "me", T0 + 9)) == ["sched"]


def test_an_inner_block_that_raises_undoes_only_its_own_writes(store: Store) -> None:
    _seeded(store)
    with store.transaction():
        store.insert(job("before"))
        store.record_run(run("before", T0))
        expected = _lived(store)
        with pytest.raises(KeyError), store.transaction():
            _write_everything(store, "inner")
            raise KeyError
        assert _lived(store) == expected
        store.insert(job("after"))
    assert ids(list(store.iter_all())) == ["sched", "held", "before", "after"]
    assert store.recent_runs("before") == [run("before", T0)]
    assert store.recent_runs("sched") == []


def test_a_released_inner_block_is_undone_with_its_outer_block(store: Store) -> None:
    _seeded(store)
    before = _lived(store)
    with pytest.raises(KeyError), store.transaction():
        with store.transaction():
            _write_everything(store, "inner")
        with pytest.raises(ValueError), store.transaction():
            store.insert(job("doomed"))
            raise ValueError
        store.insert(job("outer"))
        raise KeyError
    assert _lived(store) == before


def test_a_block_that_raises_undoes_a_prune(store: Store) -> None:
    store.clock = FixedClock(1_000)
    for name in ("a", "b"):
        store.insert(job(name, due=None, state=S.COMPLETED))
        store.record_run(run(name, T0))
    store.record_run(run("gone-job", T0))
    before = _lived(store)
    with pytest.raises(KeyError), store.transaction():
        assert store.prune(2_000, 100) == 5
        raise KeyError
    assert _lived(store) == before
    assert store.prune(2_000, 100) == 5
    assert list(store.iter_all()) == []


def test_blocks_nest_as_savepoints_at_any_depth(store: Store) -> None:
    with store.transaction():
        store.insert(job("outer"))
        with pytest.raises(KeyError), store.transaction():
            store.insert(job("middle"))
            with store.transaction():
                store.insert(job("inner"))  # released into "middle", undone with it
                with pytest.raises(ValueError), store.transaction():
                    store.insert(job("innermost"))
                    raise ValueError
            raise KeyError
        with store.transaction(), store.transaction():
            store.insert(job("late"))
    assert ids(list(store.iter_all())) == ["outer", "late"]


# -- optional capabilities: each promise holds on every store that declares it ----


def test_a_cluster_clock_is_a_wall_clock_in_epoch_ms(store: Store) -> None:
    if not isinstance(store, ClusterClock):
        return
    assert abs(store.db_now() - time.time() * 1000) < 5_000


def test_a_wakeup_listener_can_be_woken_from_another_thread(store: Store) -> None:
    if not isinstance(store, WakeupListener):
        return
    assert not store.wait_for_wakeup(0)
    threading.Timer(0.05, store.wake).start()
    started = time.monotonic()
    assert store.wait_for_wakeup(30)
    assert time.monotonic() - started < 10


def test_a_wakeup_listener_is_woken_by_another_handles_commit(make_store: Factory) -> None:
    listener, writer = make_store(), make_store()
    if not isinstance(listener, WakeupListener):
        return
    assert not listener.wait_for_wakeup(0)
    assert not listener.wait_for_wakeup(0.1)  # nothing was written
    threading.Timer(0.05, lambda: writer.insert_many([job("soon", due=T0)])).start()
    started = time.monotonic()
    assert listener.wait_for_wakeup(30)
    assert time.monotonic() - started < 5


def test_membership_lists_the_nodes_seen_and_the_jobs_they_hold(store: Store) -> None:
    if not isinstance(store, Membership):
        return
    store.insert(job("a"))
    store.claim_due(T0, 10, "node-1", T0 + 10)
    store.heartbeat("node-1", 5_000)
    store.heartbeat("node-2", 4_000)
    assert store.nodes_seen(4_500) == [("node-1", 5_000, 1)]
    assert store.nodes_seen(0) == [("node-1", 5_000, 1), ("node-2", 4_000, 0)]
