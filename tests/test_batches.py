"""schedule_jobs: a batch of schedule_job specs, all or nothing.

Through a real ``main.py`` on SQLite and memory (10,000 specs in one line, and
one bad spec at index 7,000 that leaves the store as it was), and in-process
through the wire for every rule of docs/protocol.md."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from jobsched import wire
from jobsched.jsonfast import dumps
from jobsched.messages import scheduled_entries
from jobsched.stores.base import Store
from jobsched.stores.sqlite import SQLiteStore
from tests.harness import NodeProcess, Wire

AT = "2024-01-15T09:00:00Z"


def _spec(i: int) -> dict[str, Any]:
    """Specs of every kind, in turn; even ones carry the caller's job_id."""
    spec: dict[str, Any] = {"task": f"t{i % 3}", "payload": {"i": i}}
    kind = i % 4
    if kind == 0:
        spec["delay_ms"] = i
    elif kind == 1:
        spec["cron"] = "*/5 * * * *"
    elif kind == 2:
        spec["interval_ms"] = 1000 + i
    if i % 2 == 0:
        spec["job_id"] = f"b-{i}"
    return spec


def _line(body: dict[str, Any]) -> str:
    return json.dumps({"src": "c", "dest": "s", "body": body})


@pytest.fixture(params=["memory", "sqlite"])
def node_args(request: pytest.FixtureRequest, tmp_path: Path) -> list[str]:
    return [] if request.param == "memory" else ["--db", str(tmp_path / "jobs.db")]


def test_ten_thousand_specs_in_one_line_through_main_py(node_args: list[str]) -> None:
    node = NodeProcess(*node_args)
    try:
        specs = [_spec(i) for i in range(10_000)]
        reply = node.send({"type": "schedule_jobs", "msg_id": 1, "current_time": AT, "jobs": specs})
        assert reply["type"] == "jobs_scheduled", reply
        jobs = reply["jobs"]
        assert len(jobs) == 10_000
        for i, (spec, got) in enumerate(zip(specs, jobs, strict=True)):
            if "job_id" in spec:
                assert got["job_id"] == spec["job_id"]
            assert set(got) == {"job_id", "next_run" if i % 4 in (1, 2) else "scheduled_at"}
        assert jobs[8] == {"job_id": "b-8", "scheduled_at": "2024-01-15T09:00:00.008Z"}
        assert jobs[2] == {"job_id": "b-2", "next_run": "2024-01-15T09:00:01.002Z"}
        assert jobs[1]["next_run"] == "2024-01-15T09:05:00.000Z"
        assert len({j["job_id"] for j in jobs}) == 10_000
        assert node.send({"type": "stats"})["total"] == 10_000
        job = node.send({"type": "get_job", "job_id": jobs[7]["job_id"]})["job"]
        assert (job["task"], job["payload"], job["state"]) == ("t1", {"i": 7}, "scheduled")
        # The batch lists in spec order.
        page = node.send({"type": "list_jobs", "limit": 1000})
        assert [j["job_id"] for j in page["jobs"]] == [j["job_id"] for j in jobs[:1000]]
        assert node.close() == 0
    finally:
        node.proc.kill()


def test_one_bad_spec_at_index_7000_schedules_nothing(node_args: list[str]) -> None:
    node = NodeProcess(*node_args)
    try:
        node.send({"type": "schedule_job", "task": "keep", "job_id": "keep", "delay_ms": 5})
        before = node.send({"type": "stats"})
        specs = [_spec(i) for i in range(10_000)]
        specs[7000] = {"task": "t", "delay_ms": -1}
        reply = node.send({"type": "schedule_jobs", "msg_id": 2, "jobs": specs})
        assert reply == {
            "type": "error",
            "in_reply_to": 2,
            "code": 12,
            "text": "jobs[7000].delay_ms: must be at least 0, not -1",
        }
        assert node.send({"type": "stats"}) == before
        assert node.send({"type": "get_job", "job_id": "b-0"})["code"] == 20
        assert node.close() == 0
    finally:
        node.proc.kill()


def test_a_batch_that_fails_undoes_only_itself_within_a_group(tmp_path: Path) -> None:
    # Three lines read together (one group commit): the failed batch between
    # two good requests changes nothing, the others commit.
    good = {"type": "schedule_jobs", "jobs": [{"task": "a", "job_id": "g1"}]}
    bad = {"type": "schedule_jobs", "jobs": [{"task": "a", "job_id": "x1"}, {"task": ""}]}
    after = {"type": "schedule_job", "task": "a", "job_id": "g2"}
    node = NodeProcess("--db", str(tmp_path / "jobs.db"))
    try:
        assert node.proc.stdin is not None and node.proc.stdout is not None
        node.proc.stdin.write("".join(_line(b) + "\n" for b in (good, bad, after)).encode())
        node.proc.stdin.flush()
        replies = [json.loads(node.proc.stdout.readline())["body"] for _ in range(3)]
        assert [r["type"] for r in replies] == ["jobs_scheduled", "error", "job_scheduled"]
        assert replies[1]["text"].startswith("jobs[1].task: must be a non-empty string")
        assert node.close() == 0
    finally:
        node.proc.kill()
    store = SQLiteStore(str(tmp_path / "jobs.db"))
    try:
        assert [j.job_id for j in store.iter_all()] == ["g1", "g2"]
    finally:
        store.close()


# -- the rules, in-process ----------------------------------------------------------


def _ids(w: Wire) -> list[str]:
    return [j.job_id for j in w.store.iter_all()]


def test_replies_come_in_spec_order_with_the_fields_schedule_job_answers() -> None:
    w = Wire()
    specs = [
        {"task": "a", "run_at": "2024-02-01T00:00:00Z"},
        {"task": "b", "cron": "0 0 * * *", "timezone": "Europe/Paris", "job_id": "nightly"},
        {"task": "c", "interval_ms": 60_000},
        {"task": "d"},
    ]
    jobs = w.ok({"type": "schedule_jobs", "jobs": specs}, "jobs_scheduled")["jobs"]
    assert [list(j) for j in jobs] == [
        ["job_id", "scheduled_at"],
        ["job_id", "next_run"],
        ["job_id", "next_run"],
        ["job_id", "scheduled_at"],
    ]
    assert [j.get("scheduled_at") or j.get("next_run") for j in jobs] == [
        "2024-02-01T00:00:00.000Z",
        "2024-01-15T23:00:00.000Z",
        "2024-01-15T09:01:00.000Z",
        "2024-01-15T09:00:00.000Z",
    ]
    assert jobs[1]["job_id"] == "nightly"
    assert _ids(w) == [j["job_id"] for j in jobs]
    # Each job is what schedule_job would have made of its spec.
    single = Wire()
    for spec in specs:
        single.ok({"type": "schedule_job", **spec}, "job_scheduled")
    mine, theirs = w.job("nightly"), single.job("nightly")
    assert mine == theirs


def test_an_empty_batch_answers_an_empty_list() -> None:
    w = Wire()
    assert w.ok({"type": "schedule_jobs", "jobs": []}, "jobs_scheduled")["jobs"] == []


def test_the_batch_current_time_is_now_for_every_spec() -> None:
    w = Wire()
    body = {
        "type": "schedule_jobs",
        "current_time": "2030-01-01T00:00:00Z",
        "jobs": [{"task": "a"}],
    }
    [job] = w.ok(body, "jobs_scheduled")["jobs"]
    assert job["scheduled_at"] == "2030-01-01T00:00:00.000Z"


def test_a_resent_batch_answers_the_same_and_creates_nothing() -> None:
    w = Wire()
    body = {"type": "schedule_jobs", "jobs": [_spec(i) for i in range(0, 12, 2)]}
    first = w.ok(body, "jobs_scheduled")
    w.clock.ms += 3_600_000
    w.ok({"type": "execute_jobs"}, "jobs_executed")
    assert w.ok(body, "jobs_scheduled")["jobs"] == first["jobs"]
    # Ids sent one by one before are re-sends inside a batch too.
    w.ok({"type": "schedule_job", "task": "solo", "job_id": "solo"}, "job_scheduled")
    mixed = {"type": "schedule_jobs", "jobs": [{"task": "solo", "job_id": "solo"}, _spec(20)]}
    assert [j["job_id"] for j in w.ok(mixed, "jobs_scheduled")["jobs"]] == ["solo", "b-20"]
    assert len(_ids(w)) == 8


def test_a_conflicting_job_id_is_21_and_schedules_nothing() -> None:
    w = Wire()
    w.ok({"type": "schedule_job", "task": "a", "job_id": "taken"}, "job_scheduled")
    specs = [{"task": "new", "job_id": "n1"}, {"task": "other", "job_id": "taken"}]
    text = w.err({"type": "schedule_jobs", "jobs": specs}, 21)
    assert text == "job 'taken' already exists with a different spec (jobs[1])"
    assert _ids(w) == ["taken"]


def test_the_same_job_id_twice_in_one_batch_is_12() -> None:
    w = Wire()
    specs = [{"task": "a", "job_id": "x"}, {"task": "b"}, {"task": "a", "job_id": "x"}]
    text = w.err({"type": "schedule_jobs", "jobs": specs}, 12)
    assert text == "jobs[2].job_id: 'x' is also the job_id of jobs[0]; a batch names each job once"
    assert _ids(w) == []


@pytest.mark.parametrize(
    ("jobs", "text"),
    [
        (None, "jobs: is required: an array of schedule_job specs"),
        ({"task": "a"}, "jobs: must be an array of schedule_job specs, not an object"),
        ([{"task": "a"}, "b"], "jobs[1]: must be a schedule_job spec object, not a string"),
        ([{"task": "a"}, {}], "jobs[1].task: must be a non-empty string, not null"),
        (
            [{"task": "a", "cron": "0 0 30 2 *"}],
            "jobs[0].cron.day_of_month: the expression can never",
        ),
        ([{"task": "a", "retry": {"base_ms": -1}}], "jobs[0].retry.base_ms: must be at least 0"),
        ([{"task": "a", "current_time": 5}], "jobs[0].current_time: belongs to the batch"),
        (
            [{"task": "a"}, {"task": "a", "interval_ms": 315_537_897_599_999}],
            "jobs[1].interval_ms: puts the due time past the year 9999",
        ),
    ],
)
def test_malformed_batches_name_the_spec(jobs: Any, text: str) -> None:
    w = Wire()
    got = w.err({"type": "schedule_jobs", "jobs": jobs}, 12)
    assert got.startswith(text), got
    assert _ids(w) == []


def test_a_batch_of_more_than_10000_specs_is_refused() -> None:
    w = Wire()
    text = w.err({"type": "schedule_jobs", "jobs": [{"task": "a"}] * 10_001}, 12)
    assert text == "jobs: at most 10000 jobs per batch, not 10001"
    assert _ids(w) == []


def test_an_unknown_task_is_named_by_its_index_when_handlers_are_loaded() -> None:
    from jobsched.engine import Engine
    from jobsched.runner import TaskRegistry

    registry = TaskRegistry()
    registry.register("known", lambda payload: None)
    w = Wire()
    w.ctx.engine = Engine(w.store, registry)
    text = w.err({"type": "schedule_jobs", "jobs": [{"task": "known"}, {"task": "nope"}]}, 12)
    assert text == "jobs[1].task: no handler is registered for task 'nope'"
    assert _ids(w) == []


def test_schedule_many_inserts_all_or_nothing_on_every_store(store: Store) -> None:
    w = Wire(store)
    w.ok({"type": "schedule_job", "task": "a", "job_id": "before"}, "job_scheduled")
    specs = [{"task": "a", "job_id": f"j{i}", "delay_ms": i} for i in range(300)]
    with store.transaction():
        got = w.ok({"type": "schedule_jobs", "jobs": specs}, "jobs_scheduled")["jobs"]
    assert [j["job_id"] for j in got] == [f"j{i}" for i in range(300)]
    assert _ids(w) == ["before", *(f"j{i}" for i in range(300))]
    assert w.job("j299")["due_at"] == "2024-01-15T09:00:00.299Z"
    seqs = [j.seq for j in store.iter_all()]
    assert seqs == sorted(seqs)


def _nested(levels: int) -> Any:
    value: Any = 1
    for _ in range(levels):
        value = [value]
    return value


@pytest.mark.parametrize("fast", [True, False], ids=["fast", "general"])
def test_a_payload_in_a_batch_nests_62_levels_the_line_64(fast: bool) -> None:
    w = Wire()
    w.ctx.fast_path = fast
    ok = {"type": "schedule_jobs", "jobs": [{"task": "a", "payload": _nested(62)}]}
    [job] = w.ok(ok, "jobs_scheduled")["jobs"]
    assert w.job(job["job_id"])["payload"] == _nested(62)
    deep = {"type": "schedule_jobs", "jobs": [{"task": "a", "payload": _nested(63)}]}
    assert w.err(deep, 12) == "jobs: is nested more than 64 levels deep (arrays and objects)"


# Specs nesting one level too deep, in every place a spec can: the reader of
# the batch (validate.batch_specs) bounds them, not the wire's walk.
TOO_DEEP_SPECS = [
    {"task": "a", "cron": "0 0 * * *", "payload": _nested(63)},  # not once_spec's shape
    {"task": "a", "msg_id": _nested(63)},  # a field no spec reads
    {"task": "a", "type": {"x": _nested(62)}},
    {"task": "a", "unknown": _nested(63)},
    {"task": "a", "retry": {"max_attempts": _nested(62)}},
    _nested(64),  # not a spec at all
]


@pytest.mark.parametrize("fast", [True, False], ids=["fast", "general"])
@pytest.mark.parametrize("spec", TOO_DEEP_SPECS)
def test_a_spec_nested_too_deeply_anywhere_is_the_jobs_field_s_error(spec: Any, fast: bool) -> None:
    w = Wire()
    w.ctx.fast_path = fast
    body = {"type": "schedule_jobs", "jobs": [{"task": "a", "job_id": "first"}, spec]}
    assert w.err(body, 12) == "jobs: is nested more than 64 levels deep (arrays and objects)"
    assert _ids(w) == []
    # One level less is no longer the nesting bound's business.
    shallower = json.loads(json.dumps(spec).replace("[1]", "1", 1))
    body["jobs"][1] = shallower
    assert "nested" not in str(w.send(body))


def test_the_batch_reply_written_directly_is_what_the_encoder_writes() -> None:
    # wire writes a jobs_scheduled line itself (wire._entries_text); the
    # differential tests compare whole replies, this the pieces, duplicates
    # and an id the encoder would have to escape included.
    w = Wire()
    specs = [{"task": "a", "job_id": "x1"}, {"task": "a", "cron": "0 0 * * *"}, {"task": "b"}]
    w.ok({"type": "schedule_jobs", "jobs": specs}, "jobs_scheduled")
    jobs = list(w.store.iter_all())
    for dups in (set(), {1}, {0, 2}):
        assert f"[{wire._entries_text(jobs, dups)}]" == dumps(scheduled_entries(jobs, dups))
    same = [jobs[0], jobs[2]]  # one due time: the ids joined
    assert f"[{wire._entries_text(same, set())}]" == dumps(scheduled_entries(same, set()))
    for odd in ('x"1', "x\\1", "é", "x\n"):
        assert wire._entries_text([jobs[0].evolve(job_id=odd), jobs[1]], set()) is None
