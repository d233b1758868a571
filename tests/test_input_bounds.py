"""Input at the edges of what JSON, the formats and the stores carry, through a
real ``main.py`` on the memory store and on SQLite (then reopened): no line may
stop the node, go unanswered, or store a job that cannot be read back."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from jobsched.timefmt import MAX_MS, MIN_MS, format_ms, parse_timestamp
from tests.harness import run_lines

LAST = "9999-12-31T23:59:59.999Z"
Y9990 = "9990-01-01T00:00:00Z"
HUGE = "1" + "0" * 400  # 10**400 as a JSON integer literal
CENTURY_MS = 100 * 365 * 24 * 3600 * 1000


@pytest.fixture(params=["memory", "memory-general", "sqlite"])
def db(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> list[str]:
    """The node's store; "memory-general": with its fast path turned off
    (JOBSCHED_FAST_PATH=0), so that every line here runs through both paths."""
    if request.param == "memory-general":
        monkeypatch.setenv("JOBSCHED_FAST_PATH", "0")
    return ["--db", str(tmp_path / "jobs.db")] if request.param == "sqlite" else []


def run(lines: list[str], db: list[str]) -> list[dict[str, Any]]:
    """Every line answered, once, in order, by a node that exits 0."""
    out, err, rc = run_lines(lines, *db)
    assert rc == 0, err
    assert len(out) == len(lines), err
    assert "Traceback" not in err, err
    return [json.loads(line) for line in out]


def body(reply: dict[str, Any]) -> dict[str, Any]:
    return dict(reply.get("body", reply))


def req(kind: str, msg_id: int, **fields: Any) -> str:
    return json.dumps({"type": kind, "msg_id": msg_id, **fields})


def nested(depth: int) -> str:
    """A JSON value of ``depth`` nested arrays and objects, alternating."""
    opens = "".join('{"k":' if i % 2 else "[" for i in range(depth))
    closes = "".join("}" if i % 2 else "]" for i in reversed(range(depth)))
    return opens + "0" + closes


def run_and_read(
    lines: list[str], db: list[str], ids: list[str]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Run ``lines``, then read ``ids`` back with get_job and list_jobs on the
    same node; on SQLite once more on a fresh node, which must read the same.
    Returns (the replies to ``lines``, the jobs read)."""
    reads = [req("get_job", 1000 + i, job_id=j) for i, j in enumerate(ids)]
    reads.append(req("list_jobs", 999, limit=1000))
    replies = run(lines + reads, db)
    jobs = _read(replies[len(lines) :], ids)
    if db:
        assert _read(run(reads, db), ids) == jobs
    return replies[: len(lines)], jobs


def _read(replies: list[dict[str, Any]], ids: list[str]) -> list[dict[str, Any]]:
    bodies = [body(r) for r in replies]
    assert [r["type"] for r in bodies] == ["job_info"] * len(ids) + ["jobs_listed"], bodies
    listed = {j["job_id"]: j for j in bodies[-1]["jobs"]}
    jobs = [r["job"] for r in bodies[:-1]]
    for job in jobs:
        assert {k: v for k, v in job.items() if k != "recent_runs"} == listed[job["job_id"]]
    return jobs


# -- non-finite numbers ------------------------------------------------------------


NON_FINITE = [
    req("stats", 0).replace('"msg_id": 0', '"msg_id": 1e400'),
    '{"src": 1e400, "dest": "n1", "body": {"type": "stats", "msg_id": 3}}',
    '{"src": "c", "dest": -1e400, "body": {"type": "stats", "msg_id": 4}}',
    '{"type": "schedule_job", "msg_id": 5, "task": "a", "job_id": "p", "payload": [1, 1e400]}',
    '{"type": "schedule_job", "msg_id": 6, "task": "a", "job_id": "d", "delay_ms": 1E999}',
    '{"type": "schedule_job", "msg_id": 7, "task": "a", "retry": {"base_ms": -1e309}}',
    '{"type": "execute_jobs", "msg_id": 8, "current_time": 1.8e308}',
    '{"type": "stats", "msg_id": 9, "unknown": [{"x": -2e308}]}',
]


def test_a_non_finite_number_anywhere_is_12_and_the_batch_goes_on(db: list[str]) -> None:
    lines = [req("schedule_job", 1, task="a", job_id="first")]
    lines += NON_FINITE
    lines += [req("schedule_job", 10, task="a", job_id="last"), req("stats", 11)]
    replies, _ = run_and_read(lines, db, ["first", "last"])
    assert body(replies[0])["type"] == "job_scheduled"
    for reply in replies[1:-2]:
        # Refused before anything ran: a bare error, as for any line that is not JSON.
        assert reply["type"] == "error" and reply["code"] == 12, reply
        assert "in_reply_to" not in reply and "finite" in reply["text"], reply
    assert body(replies[-2])["type"] == "job_scheduled"
    assert body(replies[-1])["total"] == 2


def test_integer_literals_that_overflow_a_float_are_not_rejected_as_non_finite(
    db: list[str],
) -> None:
    # 10**400 is a fine JSON integer: only floats can be non-finite.
    replies = run([f'{{"type": "stats", "msg_id": {HUGE}}}'], db)
    assert replies[0]["type"] == "stats"
    assert json.dumps(replies[0]["in_reply_to"]) == HUGE  # echoed exactly


# -- nesting -------------------------------------------------------------------------


def test_payload_nesting_is_bounded_at_64_levels(db: list[str]) -> None:
    lines = [
        f'{{"type": "schedule_job", "msg_id": 1, "task": "a", "job_id": "ok", "payload": {nested(64)}}}',
        f'{{"type": "schedule_job", "msg_id": 2, "task": "a", "job_id": "x1", "payload": {nested(65)}}}',
        f'{{"type": "schedule_job", "msg_id": 3, "task": "a", "job_id": "x2", "payload": {nested(900)}}}',
        '{"src": "c", "dest": "s", "body": {"type": "schedule_job", "msg_id": 4, "task": "a",'
        f' "job_id": "x3", "payload": {nested(500)}}}}}',
        req("stats", 5),
        # The fast path's shape (no job_id): the same bounds.
        f'{{"type": "schedule_job", "msg_id": 6, "task": "a", "payload": {nested(64)}}}',
        f'{{"type": "schedule_job", "msg_id": 7, "task": "a", "payload": {nested(65)}}}',
        f'{{"type": "schedule_job", "msg_id": 8, "task": "a", "delay_ms": 1, "payload": {nested(900)}}}',
        req("stats", 9),
    ]
    got, (job,) = run_and_read(lines, db, ["ok"])
    replies = [body(r) for r in got]
    assert replies[0]["type"] == replies[5]["type"] == "job_scheduled"
    for msg_id, reply in [*enumerate(replies[1:4], start=2), (7, replies[6]), (8, replies[7])]:
        assert reply["type"] == "error" and reply["code"] == 12, reply
        assert reply["in_reply_to"] == msg_id
        assert reply["text"].startswith("payload:") and "64" in reply["text"], reply
    assert replies[4]["total"] == 1
    assert replies[8]["total"] == 2
    assert json.dumps(job["payload"], separators=(",", ":")) == nested(64)


@pytest.mark.parametrize("depth", [5_000, 200_000])
def test_a_line_nested_deeper_than_the_decoder_allows_is_one_bare_12(
    db: list[str], depth: int
) -> None:
    lines = [
        req("stats", 1),
        f'{{"type": "schedule_job", "msg_id": 2, "task": "a", "payload": {nested(depth)}}}',
        "[" * depth,
        req("stats", 3),
    ]
    replies = run(lines, db)
    for reply in replies[1:3]:
        assert reply["type"] == "error" and reply["code"] == 12 and "in_reply_to" not in reply
    assert replies[3]["total"] == 0


def test_msg_id_and_envelope_values_are_bounded_too(db: list[str]) -> None:
    lines = [
        f'{{"type": "stats", "msg_id": {nested(900)}}}',
        f'{{"src": {nested(900)}, "dest": "s", "body": {{"type": "stats", "msg_id": 2}}}}',
        f'{{"type": "stats", "msg_id": 3, "junk": {nested(900)}}}',
        f'{{"type": "stats", "msg_id": {nested(64)}}}',
        # An envelope field other than src and dest: the reply is still addressed.
        f'{{"src": "c", "dest": "s", "extra": {nested(65)}, "body": {{"type": "stats", "msg_id": 5}}}}',
        f'{{"src": "c", "extra": {nested(65)}, "body": {{"type": "stats", "msg_id": {nested(65)}}}}}',
        f'{{"extra": {nested(65)}, "dest": {nested(65)}, "body": {{"type": "stats", "msg_id": 7}}}}',
    ]
    replies = run(lines, db)
    first = replies[0]
    assert (
        first["code"] == 12 and first["text"].startswith("msg_id:") and "in_reply_to" not in first
    )
    second = replies[1]
    assert second["code"] == 12 and second["text"].startswith("src:") and "body" not in second
    third = replies[2]
    assert third["code"] == 12 and third["text"].startswith("junk:") and third["in_reply_to"] == 3
    assert replies[3]["type"] == "stats"
    assert json.dumps(replies[3]["in_reply_to"], separators=(",", ":")) == nested(64)
    addressed, deep_id, bare = replies[4:7]
    assert (addressed["src"], addressed["dest"]) == ("s", "c")
    assert addressed["body"] == {
        "type": "error", "in_reply_to": 5, "code": 12,
        "text": "extra: is nested more than 64 levels deep (arrays and objects)",
    }  # fmt: skip
    assert deep_id["dest"] == "c" and "in_reply_to" not in deep_id["body"]
    assert "body" not in bare and bare["code"] == 12 and "in_reply_to" not in bare


# -- times past year 9999 ------------------------------------------------------------


def test_a_retry_backoff_past_year_9999_leaves_the_job_readable(db: list[str]) -> None:
    lines = [
        req("schedule_job", 1, task="a", job_id="y", current_time=Y9990, base_ms=10**12),
        req("execute_job", 2, job_id="y", force_fail=True, current_time=Y9990),
        req(
            "schedule_job", 3, task="a", job_id="j", current_time=Y9990, base_ms=10**12, jitter=True
        ),
        req("execute_job", 4, job_id="j", force_fail=True, current_time=Y9990),
    ]
    got, jobs = run_and_read(lines, db, ["y", "j"])
    replies = [body(r) for r in got]
    kinds = ["job_scheduled", "job_failed", "job_scheduled", "job_failed"]
    assert [r["type"] for r in replies] == kinds, replies
    assert replies[1]["retry_scheduled"] is True
    for job in jobs:
        assert job["state"] == "retrying"
        assert parse_timestamp(job["due_at"], "due_at") <= MAX_MS


def test_an_interval_whose_next_occurrence_is_past_year_9999_has_none(db: list[str]) -> None:
    start, late = "9999-12-31T23:59:58.000Z", "9999-12-31T23:59:59.500Z"
    lines = [
        req("schedule_job", 1, task="a", job_id="i", interval_ms=1000, current_time=start),
        req("execute_jobs", 2, current_time=late),
        req("get_job", 3, job_id="i"),
        req("execute_jobs", 4, current_time=LAST),
        req("schedule_job", 5, task="a", interval_ms=2000, current_time=start),
        req("schedule_job", 6, task="a", delay_ms=2000, current_time=start),
    ]
    got, (job,) = run_and_read(lines, db, ["i"])
    replies = [body(r) for r in got]
    assert replies[0]["next_run"] == "9999-12-31T23:59:59.000Z"
    assert replies[1]["jobs"] == ["i"]
    assert replies[2]["job"]["due_at"] is None and replies[2]["job"]["state"] == "scheduled"
    assert replies[3]["jobs"] == []
    for reply, field in ((replies[4], "interval_ms"), (replies[5], "delay_ms")):
        assert reply["code"] == 12 and reply["text"].startswith(field + ":"), reply
    assert job["due_at"] is None


# -- numbers in every integer field --------------------------------------------------

# (message type, field, the smallest value a request may give it)
INTEGER_FIELDS = [
    ("list_jobs", "limit", 1),
    ("schedule_job", "max_attempts", 1),
    ("schedule_job", "base_ms", 0),
    ("schedule_job", "max_backoff_ms", 0),
    ("schedule_job", "delay_ms", 0),
    ("schedule_job", "interval_ms", 1),
    ("schedule_job", "timeout_ms", 1),
    ("schedule_job", "catchup_window_ms", 0),
    ("schedule_job", "run_at", MIN_MS),
    ("schedule_job", "current_time", MIN_MS),
    ("execute_jobs", "current_time", MIN_MS),
]
BAD_NUMBERS = [HUGE, "-" + HUGE, "1e308", "-1e308", "1.5", '"5"', "true", "[1]", "{}"]


def test_bad_numbers_in_every_integer_field_are_12_naming_it(db: list[str]) -> None:
    lines, fields = [], []
    for kind, field, _ in INTEGER_FIELDS:
        for value in BAD_NUMBERS:
            lines.append(
                f'{{"type": "{kind}", "msg_id": {len(lines)}, "task": "a", "{field}": {value}}}'
            )
            fields.append(field)
    lines.append(req("stats", len(lines)))
    replies = run(lines, db)
    for line, field, reply in zip(lines, fields, replies, strict=False):
        assert reply["type"] == "error" and reply["code"] == 12, (line[:120], reply)
        assert reply["text"].startswith(field + ":"), (line[:120], reply)
        # A clear text: the value is not repeated at length.
        assert len(reply["text"]) < 200, reply
    assert replies[-1]["total"] == 0


def test_negative_zero_reads_as_zero(db: list[str]) -> None:
    lines = []
    for kind, field, _ in INTEGER_FIELDS:
        lines.append(f'{{"type": "{kind}", "msg_id": {len(lines)}, "task": "a", "{field}": -0.0}}')
    replies = run(lines, db)
    for (_, field, minimum), reply in zip(INTEGER_FIELDS, replies, strict=True):
        if minimum > 0:
            assert reply["code"] == 12 and reply["text"].startswith(field + ":"), reply
        else:
            assert reply["type"] != "error", (field, reply)


DURATION_BOUNDS = [
    ("base_ms", CENTURY_MS),
    ("max_backoff_ms", CENTURY_MS),
    ("timeout_ms", CENTURY_MS),
    ("delay_ms", MAX_MS - MIN_MS),
    ("interval_ms", MAX_MS - MIN_MS),
    ("catchup_window_ms", MAX_MS - MIN_MS),
]


def test_durations_that_can_never_be_valid_are_refused(db: list[str]) -> None:
    early = format_ms(MIN_MS)  # the bound itself is valid from the first instant on
    lines = []
    for field, limit in DURATION_BOUNDS:
        lines.append(req("schedule_job", 1, task="a", current_time=early, **{field: limit}))
        lines.append(req("schedule_job", 2, task="a", current_time=early, **{field: limit + 1}))
    replies = run(lines, db)
    for i, (field, _) in enumerate(DURATION_BOUNDS):
        fits, past = replies[2 * i], replies[2 * i + 1]
        assert fits["type"] == "job_scheduled", (field, fits)
        assert past["code"] == 12 and past["text"].startswith(field + ":"), past


def test_msg_id_of_any_json_value_round_trips(db: list[str]) -> None:
    ids = [HUGE, "-" + HUGE, "1e308", "-0.0", "1.5", '"5"', "true", "null", '{"a": [1, "b"]}']
    ids += ['"\u00e9\\"\\ud800"', "[]", "-7", "0"]
    lines = [f'{{"type": "stats", "msg_id": {i}}}' for i in ids]
    # schedule_job of the fast path's shape, bare and enveloped: its reply is written directly.
    lines += [f'{{"type": "schedule_job", "msg_id": {i}, "task": "t"}}' for i in ids]
    lines += [
        f'{{"src": {i}, "dest": "\u00e9", "body": {{"type": "schedule_job", "msg_id": {i}, "task": "t"}}}}'
        for i in ids
    ]
    replies = run(lines, db)
    for msg_id, reply in zip(ids * 3, replies, strict=True):
        reply = body(reply)
        assert reply["type"] in ("stats", "job_scheduled"), reply
        assert reply["in_reply_to"] == json.loads(msg_id)
        if msg_id.lstrip("-").isdigit():
            assert json.dumps(reply["in_reply_to"]) == msg_id
    for msg_id, reply in zip(ids, replies[-len(ids) :], strict=True):
        assert (reply["src"], reply["dest"]) == ("\u00e9", json.loads(msg_id))


def test_job_id_of_the_wrong_type_is_12(db: list[str]) -> None:
    lines, fields = [], []
    for value in [HUGE, "1e308", "-0.0", "1.5", "true", "[]", "{}"]:
        for kind in ("get_job", "execute_job", "cancel_job", "resume_job"):
            lines.append(f'{{"type": "{kind}", "msg_id": 1, "job_id": {value}}}')
        lines.append(f'{{"type": "list_jobs", "msg_id": 2, "after": {value}}}')
        lines.append(f'{{"type": "schedule_job", "msg_id": 3, "task": "a", "job_id": {value}}}')
        fields += ["job_id"] * 4 + ["after", "job_id"]
    for line, field, reply in zip(lines, fields, run(lines, db), strict=True):
        assert reply["code"] == 12 and reply["text"].startswith(field + ":"), (line, reply)


# -- long strings ----------------------------------------------------------------------


def test_long_strings_are_12_naming_the_field_and_short_texts(db: list[str]) -> None:
    every = " ".join(",".join(str(i) for i in range(lo, hi)) for lo, hi in FULL_LISTS)
    long = "x" * 100_000
    lines = [
        req("schedule_job", 1, task="a", job_id="full", cron=every),
        req("schedule_job", 2, task="a", cron="0 0 " + ",".join(["1"] * 600) + " * *"),
        req("schedule_job", 3, task=long),
        req("schedule_job", 4, task="a", job_id=long),
        req("schedule_job", 5, task="a", timezone=long),
        req("schedule_job", 6, task="a", run_at=long),
        req("schedule_job", 7, task="a", current_time=long),
        req("schedule_job", 8, task="a", overlap=long),
        req("list_jobs", 9, state=long),
        req("list_jobs", 10, after=long),
        f'{{"type": "stats", "msg_id": 11, "current_time": {"9" * 5000}}}',
    ]
    fields = [
        "cron",
        "task",
        "job_id",
        "timezone",
        "run_at",
        "current_time",
        "overlap",
        "state",
        "after",
    ]
    got, (job,) = run_and_read(lines, db, ["full"])
    assert body(got[0])["type"] == "job_scheduled", got[0]
    assert job["schedule"]["cron"] == every
    for field, reply in zip(fields, got[1:-1], strict=True):
        assert reply["code"] == 12 and reply["text"].startswith(field + ":"), reply
        assert len(reply["text"]) < 200, reply
    last = got[-1]  # not JSON we can decode: a bare 12 that says why
    assert last["code"] == 12 and "more than 4300 digits" in last["text"], last
    assert "sys." not in last["text"]


FULL_LISTS = [(0, 60), (0, 60), (0, 24), (1, 32), (1, 13), (0, 7)]  # seconds first


# -- the domain's own bounds ------------------------------------------------------------


def test_decide_retry_cuts_the_backoff_at_the_last_instant() -> None:
    import random

    from jobsched.jobs import RetryPolicy, decide_retry

    rng = random.Random(1)
    policy = RetryPolicy(max_attempts=5, base_ms=10**12)
    assert decide_retry(policy, 0, rng).backoff_ms == 2 * 10**12  # without from_ms: as before
    assert decide_retry(policy, 0, rng, from_ms=MAX_MS - 1000).backoff_ms == 1000
    assert decide_retry(policy, 0, rng, from_ms=MAX_MS).backoff_ms == 0
    jittered = RetryPolicy(max_attempts=5, base_ms=10**12, jitter=True)
    for _ in range(50):
        assert 0 <= decide_retry(jittered, 1, rng, from_ms=MAX_MS - 7).backoff_ms <= 7


def test_an_interval_grid_ends_at_the_last_instant() -> None:
    from jobsched.jobs import IntervalSchedule

    grid = IntervalSchedule(interval_ms=1000, anchor_ms=MAX_MS - 2000)
    assert grid.next_after(MAX_MS - 3000) == MAX_MS - 2000
    assert grid.next_after(MAX_MS - 1000) == MAX_MS
    assert grid.next_after(MAX_MS - 1) == MAX_MS
    assert grid.next_after(MAX_MS) is None
    assert IntervalSchedule(MAX_MS - MIN_MS, MIN_MS).next_after(MIN_MS) == MAX_MS
