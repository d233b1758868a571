"""The store contract for queues, priorities and unique keys (docs/queues.md),
run against every backend through conftest's ``store`` / ``make_store``."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from jobsched.jobs import JobState
from jobsched.queues import QueueChange, QueueSettings
from jobsched.stores.base import DuplicateKey, RunRecord, Store
from tests.test_store_conformance import T0, ids, job

S = JobState
Factory = Callable[[], Store]


def test_queue_fields_round_trip_through_another_handle(make_store: Factory) -> None:
    a = make_store()
    a.insert(job("j", queue="mail", priority=7, unique_key="k:1", unique_for_ms=5000))
    got = make_store().get("j")
    assert got is not None
    assert (got.queue, got.priority, got.unique_key, got.unique_for_ms) == ("mail", 7, "k:1", 5000)
    a.insert(job("plain"))
    plain = make_store().get("plain")
    assert plain is not None and (plain.queue, plain.priority) == ("default", 0)


def test_claim_takes_by_priority_then_due_time_then_seq(store: Store) -> None:
    store.insert(job("late-urgent", due=T0 + 5, priority=0))
    store.insert(job("early-low", due=T0, priority=5))
    store.insert(job("early-urgent", due=T0 + 1, priority=0))
    store.insert(job("tie-urgent", due=T0 + 1, priority=0))
    store.insert(job("not-due", due=T0 + 100, priority=0))
    first = store.claim_due(T0 + 10, 3, "a", T0 + 1000)
    assert ids(first) == ["early-urgent", "tie-urgent", "late-urgent"]
    assert ids(store.claim_due(T0 + 10, 10, "a", T0 + 1000)) == ["early-low"]
    assert store.next_due() == T0 + 100


def test_list_jobs_filters_by_queue(store: Store) -> None:
    store.insert(job("a1", queue="a"))
    store.insert(job("b1", queue="b"))
    store.insert(job("a2", queue="a"))
    assert ids(store.list_jobs(None, None, None, 10, "a")) == ["a1", "a2"]
    assert ids(store.list_jobs(None, None, "a1", 10, "a")) == ["a2"]


def test_a_paused_queue_is_not_claimed_from_and_keeps_its_jobs(make_store: Factory) -> None:
    a, b = make_store(), make_store()
    a.insert(job("p1", queue="p"))
    a.insert(job("o1", queue="other", due=T0 + 1))
    paused = a.configure_queue("p", QueueChange(paused=True))
    assert paused == QueueSettings("p", paused=True)
    assert ids(b.claim_due(T0 + 5, 10, "b", T0 + 100)) == ["o1"]
    assert ids(b.claim_due(T0 + 5, 10, "b", T0 + 100, limits=False)) == []
    a.configure_queue("p", QueueChange(paused=False))
    assert ids(b.claim_due(T0 + 5, 10, "b", T0 + 100)) == ["p1"]


def test_concurrency_counts_running_jobs_of_every_handle(make_store: Factory) -> None:
    a, b = make_store(), make_store()
    for i in range(5):
        a.insert(job(f"c{i}", queue="c", due=T0 + i))
    a.insert(job("free", queue="f", due=T0 + 9))
    a.configure_queue("c", QueueChange(concurrency=2))
    assert ids(a.claim_due(T0 + 10, 1, "a", T0 + 100)) == ["c0"]
    assert ids(b.claim_due(T0 + 10, 10, "b", T0 + 100)) == ["c1", "free"]
    assert b.claim_due(T0 + 10, 10, "b", T0 + 100) == []
    # A run ends: its slot frees, for any handle.
    done = a.get("c0")
    assert done is not None
    assert a.replace(done.evolve(state=S.COMPLETED, locked_by=None), S.RUNNING, "a")
    assert ids(b.claim_due(T0 + 10, 10, "b", T0 + 100)) == ["c2"]
    # execute_jobs' claims (limits=False) ignore concurrency.
    assert ids(a.claim_due(T0 + 10, 10, "a", T0 + 100, limits=False)) == ["c3", "c4"]


def test_rate_limit_counts_starts_per_window(make_store: Factory) -> None:
    a, b = make_store(), make_store()
    for i in range(5):
        a.insert(job(f"r{i}", queue="r", due=T0))
    a.configure_queue("r", QueueChange(rate_max=2, rate_per_ms=1000))
    assert len(a.claim_due(T0 + 10, 10, "a", T0 + 100)) == 2
    assert b.claim_due(T0 + 500, 10, "b", T0 + 100) == []
    assert len(b.claim_due(T0 + 1010, 10, "b", T0 + 100)) == 2
    assert len(b.claim_due(T0 + 2010, 10, "b", T0 + 100)) == 1


def test_queues_filter_claims_only_from_those_queues(store: Store) -> None:
    store.insert(job("x", queue="x"))
    store.insert(job("y", queue="y"))
    store.insert(job("z", queue="z"))
    got = store.claim_due(T0, 10, "a", T0 + 100, frozenset({"x", "z"}))
    assert ids(got) == ["x", "z"]


@pytest.mark.parametrize("only", [None, frozenset({"lim", "free", "held"})])
def test_limits_pause_and_priority_apply_together_in_one_claim(
    make_store: Factory, only: frozenset[str] | None
) -> None:
    a, b = make_store(), make_store()
    for i in range(3):
        a.insert(job(f"l{i}", queue="lim", due=T0 + i, priority=1))
    a.insert(job("u0", queue="free", due=T0 + 5, priority=0))
    a.insert(job("u1", queue="free", due=T0, priority=2))
    a.insert(job("p0", queue="held", due=T0, priority=0))
    a.configure_queue("lim", QueueChange(concurrency=3, rate_max=2, rate_per_ms=1000))
    a.configure_queue("held", QueueChange(paused=True))
    # By priority across queues; "lim" gives what its rate leaves (2), "held" nothing.
    assert ids(b.claim_due(T0 + 10, 10, "b", T0 + 5000, only)) == ["u0", "l0", "l1", "u1"]
    assert b.claim_due(T0 + 20, 10, "b", T0 + 5000, only) == []
    # The window moves on: the rate allows 2 again, the concurrency 3 - 2 running.
    assert ids(a.claim_due(T0 + 1011, 10, "a", T0 + 5000, only)) == ["l2"]
    a.insert(job("l3", queue="lim", due=T0, priority=1))
    assert a.claim_due(T0 + 1012, 10, "a", T0 + 5000, only) == []


def test_next_due_after_a_time_skips_what_is_already_due(make_store: Factory) -> None:
    a, b = make_store(), make_store()
    for i, due in enumerate([T0, T0 + 1, T0 + 20, T0 + 10, T0 + 30]):
        a.insert(job(f"j{i}", due=due, priority=(7 * i) % 10, queue=f"q{i % 2}"))
    assert b.next_due() == T0
    assert b.next_due(after=T0) == T0 + 1
    assert b.next_due(after=T0 + 1) == T0 + 10
    # A claimed job is no longer due: the next is found past it.
    assert ids(b.claim_due(T0 + 10, 10, "b", T0 + 100, frozenset({"q1"}))) == ["j3", "j1"]
    assert a.next_due(after=T0) == T0 + 20
    assert a.next_due(after=T0 + 29) == T0 + 30
    assert a.next_due(after=T0 + 30) is None


def test_queue_settings_are_the_configured_queues_without_their_jobs(make_store: Factory) -> None:
    a = make_store()
    a.insert(job("c1", queue="c"))
    a.configure_queue("b", QueueChange(concurrency=2))
    a.configure_queue("a", QueueChange(paused=True))
    want = [QueueSettings("a", paused=True), QueueSettings("b", concurrency=2)]
    assert make_store().queue_settings() == want


def test_queue_report_shows_settings_and_jobs_by_state(store: Store) -> None:
    store.insert(job("a1", queue="a"))
    store.insert(job("a2", queue="a", state=S.PAUSED, paused_from=S.SCHEDULED))
    store.configure_queue("b", QueueChange(concurrency=3, rate_max=4, rate_per_ms=60_000))
    report = {r.settings.name: r for r in store.queue_report()}
    assert set(report) == {"a", "b"}
    assert report["a"].counts == {S.SCHEDULED: 1, S.PAUSED: 1}
    assert report["b"].settings == QueueSettings("b", 3, 4, 60_000)
    store.configure_queue("b", QueueChange(clear_concurrency=True))
    again = {r.settings.name: r for r in store.queue_report()}
    assert again["b"].settings == QueueSettings("b", None, 4, 60_000)


# -- unique keys ----------------------------------------------------------------


def test_a_second_job_with_a_live_unique_key_is_refused(make_store: Factory) -> None:
    a, b = make_store(), make_store()
    a.insert(job("first", unique_key="k"))
    with pytest.raises(DuplicateKey) as caught:
        b.insert(job("second", unique_key="k"))
    assert caught.value.holder == "first"
    assert b.get("second") is None
    # Once the holder is final (and had no window), the key is free again.
    first = a.get("first")
    assert first is not None
    assert a.replace(first.evolve(state=S.CANCELLED), S.SCHEDULED)
    b.insert(job("third", unique_key="k"))


def test_a_window_blocks_the_key_after_the_job_ends(make_store: Factory) -> None:
    a, b = make_store(), make_store()
    a.insert(job("w1", unique_key="k", unique_for_ms=1000))
    w1 = a.get("w1")
    assert w1 is not None
    assert a.replace(w1.evolve(state=S.COMPLETED), S.SCHEDULED)
    with pytest.raises(DuplicateKey) as caught:
        b.insert(job("w2", unique_key="k", created_at=T0 + 999))
    assert caught.value.holder == "w1"
    b.insert(job("w3", unique_key="k", created_at=T0 + 1000, unique_for_ms=10))
    with pytest.raises(DuplicateKey):
        a.insert(job("w4", unique_key="k", created_at=T0 + 1005))


def test_a_refused_unique_insert_inside_a_block_leaves_the_block_going(store: Store) -> None:
    with store.transaction():
        store.insert(job("one", unique_key="k", unique_for_ms=50))
        with pytest.raises(DuplicateKey):
            store.insert(job("two", unique_key="k"))
        store.record_run(RunRecord("one", T0, T0, "succeeded"))
    assert store.get("one") is not None and store.get("two") is None


def test_an_undone_unique_insert_frees_its_key(store: Store) -> None:
    with pytest.raises(RuntimeError), store.transaction():
        store.insert(job("gone", unique_key="k", unique_for_ms=10_000))
        raise RuntimeError("undo")
    store.insert(job("kept", unique_key="k"))
    assert store.get("kept") is not None


def test_a_final_job_made_live_again_is_refused_while_another_holds_its_key(
    make_store: Factory,
) -> None:
    # retry_job brings a dead job back: at most one job that is not final
    # holds a key, so it may not while another does (the engine answers 22).
    a, b = make_store(), make_store()
    a.insert(job("old", state=S.DEAD, due=None, unique_key="k"))
    a.insert(job("new", unique_key="k"))
    old = b.get("old")
    assert old is not None
    with b.transaction():  # the refusal leaves the caller's block going
        with pytest.raises(DuplicateKey) as caught:
            b.replace(old.evolve(state=S.RETRYING, due_at=T0), S.DEAD)
        assert caught.value.holder == "new"
        b.insert(job("other"))
    got = a.get("old")
    assert got is not None and got.state is S.DEAD and a.get("other") is not None
    new = a.get("new")
    assert new is not None and a.replace(new.evolve(state=S.CANCELLED), S.SCHEDULED)
    assert b.replace(old.evolve(state=S.RETRYING, due_at=T0), S.DEAD)
    with pytest.raises(DuplicateKey) as caught:
        a.insert(job("later", unique_key="k"))
    assert caught.value.holder == "old"
