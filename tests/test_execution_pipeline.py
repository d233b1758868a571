"""The execution pipeline: claim, run with no transaction open, finish; rescue
of crashed runs; release at shutdown; retention under every transport.

Findings this pins (each failed before the pipeline):
- execute_jobs ran handlers inside the batch's store transaction: another
  process's schedule_job on the same SQLite file waited for the handler and
  got error 11;
- a line over the size limit was split: the rest after the limit ran as a
  request of its own;
- the service never pruned (retention ran only in the stdio loop).
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from jobsched.dispatcher import Dispatcher
from jobsched.engine import Engine, EngineConfig
from jobsched.errors import PreconditionFailed
from jobsched.jobs import JobState
from jobsched.maintenance import Maintenance
from jobsched.runner import Runner, TaskRegistry
from jobsched.stores.base import DAY_MS, Store
from jobsched.validate import schedule_spec
from tests.conftest import StoreFactory
from tests.harness import ROOT, T0, NodeProcess, run_lines

SLOW_TASKS = """
import time
from jobsched import task

@task("slow")
def slow(payload):
    time.sleep(payload.get("s", 3))
"""


def _line(body: dict[str, object]) -> str:
    return json.dumps({"src": "c", "dest": "n", "body": body})


def test_a_handler_in_execute_jobs_holds_no_lock_on_the_sqlite_file(tmp_path: Path) -> None:
    (tmp_path / "slow_tasks.py").write_text(SLOW_TASKS)
    db = str(tmp_path / "j.db")
    env = {"PYTHONPATH": str(tmp_path)}
    node = NodeProcess("--db", db, "--tasks", "slow_tasks", env=env)
    try:
        reply = node.send(
            {"type": "schedule_job", "msg_id": 1, "task": "slow", "payload": {"s": 3}}
        )
        assert reply["type"] == "job_scheduled", reply
        assert node.proc.stdin is not None and node.proc.stdout is not None
        node.proc.stdin.write((_line({"type": "execute_jobs", "msg_id": 2}) + "\n").encode())
        node.proc.stdin.flush()
        time.sleep(0.7)  # the handler is running now
        t0 = time.monotonic()
        other = subprocess.run(
            [sys.executable, str(ROOT / "main.py"), "--db", db],
            input=(_line({"type": "schedule_job", "msg_id": 1, "task": "t"}) + "\n").encode(),
            capture_output=True,
            timeout=30,
        )
        waited = time.monotonic() - t0
        body = json.loads(other.stdout.decode().splitlines()[0])["body"]
        assert body["type"] == "job_scheduled", (body, other.stderr.decode()[-2000:])
        assert waited < 1.5, f"the second process waited {waited:.1f} s for the handler"
        done = json.loads(node.proc.stdout.readline())["body"]
        assert done["type"] == "jobs_executed" and done["count"] == 1, done
    finally:
        node.close()


def test_a_line_over_the_limit_is_discarded_whole_and_answered_once() -> None:
    limit = 8 << 20
    huge = '{"type": "schedule_job", "task": "t", "payload": "' + "x" * limit
    # What follows the limit inside the same line would be a request of its own
    # if the line were split there.
    huge += '", "x": 1}{"type": "schedule_job", "task": "smuggled", "msg_id": 99}'
    lines = [huge, json.dumps({"type": "stats", "msg_id": 2})]
    out, err, code = run_lines(lines, timeout=120)
    assert code == 0, err[-2000:]
    replies = [json.loads(line) for line in out]
    assert len(replies) == 2, out[:3]
    assert replies[0]["type"] == "error" and replies[0]["code"] == 12
    assert "at most" in replies[0]["text"]
    assert replies[1]["type"] == "stats" and replies[1]["total"] == 0


def test_a_line_just_under_the_limit_is_handled() -> None:
    limit = 8 << 20
    head = '{"type": "schedule_job", "msg_id": 1, "task": "t", "payload": "'
    line = head + "x" * (limit - len(head) - 2) + '"}'
    assert len(line) == limit
    out, err, code = run_lines([line, json.dumps({"type": "stats", "msg_id": 2})], timeout=120)
    assert code == 0, err[-2000:]
    first = json.loads(out[0])
    # The payload is bigger than the default payload limit: a clear 12 naming it,
    # not a "line too long".
    assert first["type"] == "error" and "payload" in first["text"], first
    assert json.loads(out[1])["type"] == "stats"


def _engine(store: Store, lease_ms: int = 1000) -> Engine:
    return Engine(store, config=EngineConfig(lease_ms=lease_ms), wall_clock=lambda: T0)


def test_a_claim_whose_runner_crashed_is_rescued_as_a_failed_attempt(
    make_store: StoreFactory,
) -> None:
    crashed, survivor = make_store(), make_store()
    try:
        first = _engine(crashed)
        spec = schedule_spec({"task": "t", "max_attempts": 2, "base_ms": 100})
        job = first.schedule(spec, T0)
        # The claim is committed before handlers run; the process then dies.
        claims = first.claim(T0, 10, first.owner, T0 + 1000, "coalesce")
        assert [c.job.job_id for c in claims] == [job.job_id]
        other = _engine(survivor)
        Maintenance(other, other.owner).run(T0 + 500)  # lease still valid
        assert survivor.get(job.job_id).state is JobState.RUNNING  # type: ignore[union-attr]
        Maintenance(other, other.owner).run(T0 + 1500)
        after = survivor.get(job.job_id)
        assert after is not None and after.state is JobState.RETRYING and after.attempts == 1
        assert [r.outcome for r in survivor.recent_runs(job.job_id)] == ["lost"]
        # The next execute_jobs runs it again; a second loss would be final.
        ran, failed = other.execute_due(T0 + 5000)
        assert ran == [job.job_id] and not failed
    finally:
        crashed.close()
        survivor.close()


def test_the_service_dispatcher_prunes_old_final_jobs(make_store: StoreFactory) -> None:
    store = make_store()
    clock = {"ms": T0}
    store.clock = lambda: clock["ms"]
    try:
        engine = _engine(store)
        job = engine.schedule(schedule_spec({"task": "t"}), T0)
        assert engine.execute_due(T0)[0] == [job.job_id]
        clock["ms"] = T0 + 8 * DAY_MS  # past the 7-day retention
        dispatcher = Dispatcher(engine, Runner(TaskRegistry(), 1), clock=lambda: T0)
        dispatcher.step(T0)
        assert store.get(job.job_id) is None
    finally:
        store.close()


def test_execute_jobs_renews_its_leases_between_long_handlers(tmp_path: Path) -> None:
    """A batch longer than the lease keeps its claims: another node's
    maintenance, run while the batch goes on, rescues none of them."""
    from jobsched.stores.sqlite import SQLiteStore

    db = str(tmp_path / "j.db")
    store, other_store = SQLiteStore(db), SQLiteStore(db)
    wall = {"ms": T0}
    other = Engine(other_store, config=EngineConfig(lease_ms=1000), wall_clock=lambda: wall["ms"])
    rescued: list[str] = []
    registry = TaskRegistry()

    @registry.task("tick")
    def tick(payload: object) -> None:
        wall["ms"] += 600  # each handler takes 600 ms of a 1,000 ms lease
        Maintenance(other, other.owner, lambda r, now: rescued.append(r.job.job_id)).run(wall["ms"])

    engine = Engine(store, registry, EngineConfig(lease_ms=1000), wall_clock=lambda: wall["ms"])
    try:
        for i in range(5):
            engine.schedule(schedule_spec({"task": "tick", "job_id": f"j{i}"}), T0)
        ran, failed = engine.execute_due(T0)
        assert len(ran) == 5 and not failed and not rescued
    finally:
        store.close()
        other_store.close()


def test_shutdown_puts_back_a_running_job_without_counting_an_attempt(
    make_store: StoreFactory,
) -> None:
    store = make_store()
    try:
        registry = TaskRegistry()
        gate = threading.Event()

        @registry.task("hang")
        def hang(payload: object) -> None:
            gate.wait(5)

        engine = Engine(store, registry, EngineConfig(lease_ms=60_000))
        job = engine.schedule(schedule_spec({"task": "hang"}), T0)
        dispatcher = Dispatcher(engine, Runner(registry, 1), clock=lambda: T0)
        dispatcher.runner.start()
        dispatcher.step(T0)
        assert dispatcher.in_flight == 1
        dispatcher._grace_until = 0.0  # the grace is over
        dispatcher._stopping = True
        assert dispatcher._drained()
        gate.set()
        back = store.get(job.job_id)
        assert back is not None and back.state is JobState.SCHEDULED and back.attempts == 0
        assert back.due_at == T0
        assert [r.outcome for r in store.recent_runs(job.job_id)] == ["lost"]
    finally:
        store.close()


def test_catch_up_a_year_late_counts_every_missed_occurrence_without_walking_them() -> None:
    """300 minutely jobs executed one year late: every job runs once, and its
    skipped count is exact (525,599), not walked one by one (which took ~100 s
    and stopped counting at 100,000)."""
    year_ms = 365 * DAY_MS
    lines = [
        json.dumps(
            {
                "type": "schedule_job",
                "msg_id": i,
                "task": "t",
                "cron": "* * * * *",
                "job_id": f"c{i}",
                "current_time": "2024-01-01T00:00:30Z",
            }
        )
        for i in range(300)
    ]
    late = T0 - T0 % 60_000 + year_ms  # any instant a year on
    lines.append(json.dumps({"type": "execute_jobs", "msg_id": "x", "current_time": late}))
    lines.append(json.dumps({"type": "get_job", "msg_id": "g", "job_id": "c7"}))
    out, err, code = run_lines(lines, timeout=60)
    assert code == 0, err[-2000:]
    executed, info = json.loads(out[-2]), json.loads(out[-1])
    assert executed["type"] == "jobs_executed" and executed["count"] == 300, executed
    first_due = 1_704_067_260_000  # 2024-01-01T00:01:00Z
    minutes = (late - first_due) // 60_000  # occurrences after the first one, up to late
    assert info["job"]["skipped"] == minutes, info["job"]["skipped"]


def test_execute_job_holds_its_job_so_no_dispatcher_runs_it_meanwhile(
    make_store: StoreFactory,
) -> None:
    """execute_job claims the job as a dispatcher does: while its handler
    runs, another node's claim of due jobs passes it by, and another
    execute_job of it is 22; it ran once."""
    mine, theirs = make_store(), make_store()
    try:
        registry = TaskRegistry()
        other = _engine(theirs)
        seen: dict[str, object] = {}

        @registry.task("probe")
        def probe(payload: object) -> None:
            seen["claimed"] = [
                c.job.job_id for c in other.claim(T0 + 10, 10, other.owner, T0 + 999)
            ]
            try:
                other.execute_one("p", False, T0)
            except PreconditionFailed as exc:
                seen["again"] = exc.code
            running = theirs.get("p")
            seen["state"] = None if running is None else running.state

        engine = Engine(mine, registry, EngineConfig(lease_ms=1000), wall_clock=lambda: T0)
        engine.schedule(schedule_spec({"task": "probe", "job_id": "p"}), T0)
        assert engine.execute_one("p", False, T0).ok
        assert seen == {"claimed": [], "again": 22, "state": JobState.RUNNING}
        done = theirs.get("p")
        assert done is not None and done.state is JobState.COMPLETED and done.runs == 1
        assert done.locked_by is None and done.locked_until is None
    finally:
        mine.close()
        theirs.close()


def test_a_paused_job_lost_in_a_manual_run_stays_paused(make_store: StoreFactory) -> None:
    crashed, survivor = make_store(), make_store()
    try:
        first = _engine(crashed)
        job = first.schedule(schedule_spec({"task": "t", "job_id": "p", "base_ms": 100}), T0)
        first.pause(job.job_id, T0)
        held = crashed.get("p")
        assert held is not None
        # execute_job's claim of the paused job, then the process dies.
        assert crashed.replace(
            held.evolve(state=JobState.RUNNING, locked_by=first.owner, locked_until=T0 + 1000),
            JobState.PAUSED,
        )
        other = _engine(survivor)
        Maintenance(other, other.owner).run(T0 + 1500)
        after = survivor.get("p")
        assert after is not None and after.state is JobState.PAUSED and after.attempts == 1
        assert after.paused_from is JobState.RETRYING and after.locked_by is None
    finally:
        crashed.close()
        survivor.close()


def test_execute_jobs_hands_a_handler_the_occurrence_it_runs() -> None:
    """The context's due_at is the occurrence claimed, as under the dispatcher,
    not the next one the claim set: two runs never see the same due_at."""
    from jobsched.handles import TaskContext
    from jobsched.stores.memory import MemoryStore

    registry = TaskRegistry()
    seen: list[int | None] = []

    @registry.task("tick", pass_context=True)
    def tick(payload: object, ctx: TaskContext) -> None:
        seen.append(ctx.due_at)

    engine = Engine(MemoryStore(), registry, wall_clock=lambda: T0)
    engine.schedule(schedule_spec({"task": "tick", "interval_ms": 10_000}), T0)
    engine.execute_due(T0 + 15_000)  # due at T0 + 10 s; next at T0 + 20 s
    engine.execute_due(T0 + 20_000)
    assert seen == [T0 + 10_000, T0 + 20_000]


def test_occurrences_due_while_a_lost_run_held_its_job_are_counted_skipped(
    make_store: StoreFactory,
) -> None:
    crashed, survivor = make_store(), make_store()
    try:
        first = _engine(crashed)
        spec = schedule_spec({"task": "t", "job_id": "tick", "interval_ms": 1000})
        first.schedule(spec, T0)
        # Claimed at its first occurrence (T0 + 1 s), then its node dies.
        assert [c.job.job_id for c in first.claim(T0 + 1000, 10, first.owner, T0 + 2000)] == [
            "tick"
        ]
        other = _engine(survivor)
        rescued = other.rescue(T0 + 5500, 10)
        # T0 + 2 s to T0 + 5 s came due while the dead node held it: four.
        assert [(r.job.job_id, r.skipped) for r in rescued] == [("tick", 4)]
        after = survivor.get("tick")
        assert after is not None and after.skipped == 4 and after.state is JobState.RETRYING
        outcomes = [r.outcome for r in survivor.recent_runs("tick")]
        assert sorted(outcomes) == ["lost", "skipped"]
    finally:
        crashed.close()
        survivor.close()


def test_a_manual_run_longer_than_the_lease_is_not_rescued_under_it(tmp_path: Path) -> None:
    """execute_job and execute_jobs renew their leases while a handler runs
    (from another thread): another node's maintenance, running all along,
    rescues nothing, and the one run is the only run."""
    from jobsched.stores.sqlite import SQLiteStore

    db = str(tmp_path / "j.db")
    store, other_store = SQLiteStore(db), SQLiteStore(db)
    other = Engine(other_store, config=EngineConfig(lease_ms=300))
    rescued: list[str] = []
    runs: list[str] = []
    registry = TaskRegistry()

    @registry.task("long")
    def long(payload: object) -> None:
        runs.append("run")
        for _ in range(8):  # 0.8 s: over two leases
            time.sleep(0.1)
            # As another node's maintenance does, on the real clock.
            rescued.extend(r.job.job_id for r in other.rescue(other.wall_clock(), 10))

    engine = Engine(store, registry, EngineConfig(lease_ms=300))
    try:
        engine.schedule(schedule_spec({"task": "long", "job_id": "one"}), T0)
        assert engine.execute_one("one", False, T0).ok
        engine.schedule(schedule_spec({"task": "long", "job_id": "due"}), T0)
        assert engine.execute_due(T0) == (["due"], [])
        assert rescued == [] and runs == ["run", "run"]
    finally:
        store.close()
        other_store.close()


def test_a_node_that_dies_in_execute_jobs_loses_only_the_run_it_was_in(
    make_store: StoreFactory,
) -> None:
    """execute_jobs claims its due set first; a node that dies while the
    first handler runs leaves that run lost (an attempt, the crash rule) and
    the jobs it had not started put back as they were: not attempts."""
    mine, theirs = make_store(), make_store()
    wall = {"ms": T0}
    after: dict[str, tuple[JobState, int]] = {}
    try:
        other = Engine(theirs, config=EngineConfig(lease_ms=1000), wall_clock=lambda: wall["ms"])
        registry = TaskRegistry()

        @registry.task("t")
        def dies(payload: object) -> None:
            if after:
                return
            wall["ms"] = T0 + 5000  # as if this node died here: every lease of it runs out
            Maintenance(other, other.owner).run(wall["ms"])
            for i in range(3):
                job = theirs.get(f"j{i}")
                assert job is not None
                after[f"j{i}"] = (job.state, job.attempts)

        engine = Engine(mine, registry, EngineConfig(lease_ms=1000), wall_clock=lambda: wall["ms"])
        for i in range(3):
            engine.schedule(schedule_spec({"task": "t", "job_id": f"j{i}", "max_attempts": 1}), T0)
        engine.execute_due(T0)
        assert after == {
            "j0": (JobState.DEAD, 1),  # its handler was running: the lost run counts
            "j1": (JobState.SCHEDULED, 0),
            "j2": (JobState.SCHEDULED, 0),
        }
        outcomes = {f"j{i}": [r.outcome for r in theirs.recent_runs(f"j{i}")] for i in range(3)}
        assert outcomes["j1"] == ["lost"] and outcomes["j2"] == ["lost"]
    finally:
        mine.close()
        theirs.close()


def test_manual_runs_share_one_lease_keeping_thread(tmp_path: Path) -> None:
    """A keeper thread per run left a store connection behind each (a store
    keeps one per thread until it is closed): one thread serves them all."""
    from jobsched.stores.sqlite import SQLiteStore

    store = SQLiteStore(str(tmp_path / "j.db"))
    registry = TaskRegistry()

    @registry.task("nap")
    def nap(payload: object) -> None:
        time.sleep(0.12)  # over a third of the lease: the keeper renews during it

    engine = Engine(store, registry, EngineConfig(lease_ms=150))
    try:
        for i in range(6):
            engine.schedule(schedule_spec({"task": "nap", "job_id": f"n{i}"}), T0)
            assert engine.execute_one(f"n{i}", False, T0).ok
        assert engine._keeper is not None  # started by the first run, for them all
        assert len(store._all) <= 2  # this thread's connection and the keeper's
    finally:
        store.close()


def test_a_paused_job_in_a_manual_run_cut_by_a_shutdown_stays_paused(
    make_store: StoreFactory,
) -> None:
    store = make_store()
    try:
        registry = TaskRegistry()
        engine = Engine(store, registry, EngineConfig(lease_ms=1000), wall_clock=lambda: T0)

        @registry.task("stop")
        def stop(payload: object) -> None:  # the shutdown comes while it runs
            assert engine.release_held(T0 + 10, "interrupted by shutdown") == 1

        job = engine.schedule(
            schedule_spec({"task": "stop", "job_id": "p", "interval_ms": 1000}), T0
        )
        engine.pause(job.job_id, T0)
        with pytest.raises(PreconditionFailed):  # put back under it: the outcome is not applied
            engine.execute_one("p", False, T0)
        back = store.get("p")
        assert back is not None and back.state is JobState.PAUSED and back.locked_by is None
        assert back.due_at == job.due_at and back.skipped == 0
        # A lost manual run of a paused job counts no occurrence the pause held back.
        held = back.evolve(state=JobState.RUNNING, locked_by="dead/1", locked_until=T0 + 1)
        assert store.replace(held, JobState.PAUSED)
        [rescued] = engine.rescue(T0 + 3_600_000, 10)
        assert rescued.skipped == 0
        after = store.get("p")
        assert after is not None and after.state is JobState.PAUSED and after.skipped == 0
    finally:
        store.close()
