"""Malformed input (SPEC section 3) and the envelope rules (section 1)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from jobsched.errors import JobschedError
from jobsched.stores.memory import MemoryStore
from tests.harness import Wire

S = {"type": "schedule_job", "task": "a"}


@pytest.fixture
def w() -> Wire:
    return Wire()


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"task": None}, "task"),
        ({"task": ""}, "task"),
        ({"task": 5}, "task"),
        ({"task": "x" * 256}, "task"),
        ({"delay_ms": -1}, "delay_ms"),
        ({"delay_ms": 1.5}, "delay_ms"),
        ({"delay_ms": "100"}, "delay_ms"),
        ({"delay_ms": True}, "delay_ms"),
        ({"delay_ms": [1]}, "delay_ms"),
        ({"delay_ms": 10**20}, "delay_ms"),
        ({"interval_ms": 0}, "interval_ms"),
        ({"interval_ms": "1s"}, "interval_ms"),
        ({"run_at": "yesterday"}, "run_at"),
        ({"run_at": "2024-13-01T00:00:00Z"}, "run_at"),
        ({"run_at": "2024-01-15T25:00:00Z"}, "run_at"),
        ({"run_at": True}, "run_at"),
        ({"run_at": 10**16}, "run_at"),
        ({"delay_ms": 1, "interval_ms": 5}, "interval_ms"),
        ({"cron": 5}, "cron"),
        ({"cron": ""}, "cron"),
        ({"timezone": "Mars/Olympus"}, "timezone"),
        ({"timezone": "../../etc/passwd"}, "timezone"),
        ({"timezone": 3}, "timezone"),
        ({"max_attempts": 0}, "max_attempts"),
        ({"max_attempts": "3"}, "max_attempts"),
        ({"base_ms": -5}, "base_ms"),
        ({"max_backoff_ms": -1}, "max_backoff_ms"),
        ({"jitter": "yes"}, "jitter"),
        ({"retry": 5}, "retry"),
        ({"retry": {"tries": 3}}, "retry.tries"),
        ({"retry": {"max_attempts": 0}}, "retry.max_attempts"),
        ({"max_attempts": 2, "retry": {"max_attempts": 3}}, "max_attempts"),
        ({"job_id": ""}, "job_id"),
        ({"job_id": "a/b"}, "job_id"),
        ({"job_id": 7}, "job_id"),
        ({"payload": {"big": "x" * 70_000}}, "payload"),
        ({"current_time": "soon"}, "current_time"),
        ({"timeout_ms": 0}, "timeout_ms"),
        ({"overlap": "sometimes"}, "overlap"),
        ({"misfire": "never"}, "misfire"),
    ],
)
def test_schedule_job_rejects_with_the_field_named(
    w: Wire, extra: dict[str, Any], field: str
) -> None:
    text = w.err({**S, **extra}, 12)
    assert text.startswith(field + ":"), text
    assert w.ok({"type": "stats"}, "stats")["total"] == 0  # nothing was created


def test_payload_limit_counts_utf8_bytes_and_is_configurable(w: Wire) -> None:
    fits = "é" * ((65_536 - 2) // 2)  # 2 bytes each; with the quotes exactly the limit
    w.ok({**S, "payload": fits}, "job_scheduled")
    w.err({**S, "payload": fits + "é"}, 12)
    w.ctx.max_payload = 10
    w.err({**S, "payload": {"abc": 12345}}, 12)
    w.ok({**S, "payload": [1, 2]}, "job_scheduled")


def test_an_empty_string_is_named_as_one(w: Wire) -> None:
    for field in ("task", "queue", "unique_key"):
        text = w.err({**S, field: ""}, 12)
        assert text == f"{field}: must be a non-empty string, not an empty string"


def test_payload_is_any_json_and_round_trips(w: Wire) -> None:
    for payload in [None, 0, "s", [1, {"a": [None, True]}], {"ü": "☃", "n": 1.5}]:
        jid = w.ok({**S, "payload": payload}, "job_scheduled")["job_id"]
        assert w.job(jid)["payload"] == payload


def test_deeply_nested_payload_is_malformed_not_a_crash(w: Wire) -> None:
    deep = "[" * 5000 + "]" * 5000
    line = '{"type":"schedule_job","msg_id":1,"task":"a","payload":' + deep + "}"
    reply = json.loads(w.raw(line))
    assert reply["type"] == "error" and reply["code"] == 12


def test_null_fields_count_as_absent(w: Wire) -> None:
    r = w.ok({**S, "delay_ms": None, "cron": None, "retry": None, "job_id": None}, "job_scheduled")
    assert r["scheduled_at"] == "2024-01-15T09:00:00.000Z"


def test_force_fail_must_be_boolean(w: Wire) -> None:
    jid = w.ok(S, "job_scheduled")["job_id"]
    assert w.err({"type": "execute_job", "job_id": jid, "force_fail": "yes"}, 12).startswith(
        "force_fail"
    )


def test_unknown_type_is_10_and_missing_type_is_12(w: Wire) -> None:
    assert "frobnicate" in w.err({"type": "frobnicate"}, 10)
    w.err({"type": 5}, 12)


@pytest.mark.parametrize(
    "line",
    [
        "not json",
        "[1, 2]",
        '"str"',
        "42",
        '{"src": "c"}',
        "{",
        '{"a": NaN, "type": "stats"}',
        "\xff\xfe",
    ],
)
def test_lines_that_are_not_requests_get_a_bare_12(w: Wire, line: str) -> None:
    reply = json.loads(w.raw(line))
    assert reply["type"] == "error" and reply["code"] == 12
    assert "in_reply_to" not in reply and "body" not in reply


def test_envelope_with_a_non_object_body(w: Wire) -> None:
    reply = json.loads(w.raw('{"src": "c", "dest": "s", "body": 5}'))
    assert reply["src"] == "s" and reply["dest"] == "c" and reply["body"]["code"] == 12


def test_envelope_without_type_keeps_in_reply_to(w: Wire) -> None:
    reply = json.loads(w.raw('{"src": "c", "dest": "s", "body": {"msg_id": 9}}'))
    assert reply["body"] == {
        "type": "error",
        "in_reply_to": 9,
        "code": 12,
        "text": reply["body"]["text"],
    }


def test_bare_body_is_answered_bare(w: Wire) -> None:
    line = w.raw('{"type": "schedule_job", "msg_id": 4, "task": "a"}')
    assert line.startswith('{"type": "job_scheduled", "in_reply_to": 4, "job_id": "')


def test_reply_without_msg_id_has_no_in_reply_to(w: Wire) -> None:
    reply = json.loads(w.raw('{"src": "c", "dest": "s", "body": {"type": "stats"}}'))
    assert "in_reply_to" not in reply["body"]


def test_init_sets_the_node_id_for_later_replies(w: Wire) -> None:
    first = w.raw(
        '{"src": "c1", "dest": "n1", "body": {"type": "init", "msg_id": 1, "node_id": "n1", "node_ids": ["n1"]}}'
    )
    assert first == '{"src": "n1", "dest": "c1", "body": {"type": "init_ok", "in_reply_to": 1}}'
    later = json.loads(w.raw('{"src": "c2", "dest": "other", "body": {"type": "stats"}}'))
    assert (later["src"], later["dest"]) == ("n1", "c2")


def test_reply_src_defaults_to_the_request_dest(w: Wire) -> None:
    reply = json.loads(w.raw('{"src": "client", "dest": "scheduler", "body": {"type": "stats"}}'))
    assert (reply["src"], reply["dest"]) == ("scheduler", "client")
    assert list(reply) == ["src", "dest", "body"]


class BrokenStore(MemoryStore):
    def counts(self) -> dict[Any, int]:
        raise KeyError("a bug")


def test_an_unexpected_fault_answers_13_and_the_node_goes_on() -> None:
    w = Wire(store=BrokenStore())
    assert "internal error" in w.err({"type": "stats"}, 13)
    w.ok(S, "job_scheduled")


def test_every_error_is_a_jobsched_error_subclass() -> None:
    from jobsched import errors

    classes = [c for c in vars(errors).values() if isinstance(c, type) and issubclass(c, Exception)]
    assert all(issubclass(c, JobschedError) for c in classes)


@pytest.mark.parametrize("task", ["a\x00b", "tab\there", "x\ud800"])
def test_task_with_control_characters_or_surrogates_is_malformed(w: Wire, task: str) -> None:
    assert w.err({**S, "task": task}, 12).startswith("task:")


def test_payload_with_a_lone_surrogate_is_kept_escaped(w: Wire) -> None:
    jid = w.ok({**S, "payload": {"s": "\ud800x"}}, "job_scheduled")["job_id"]
    assert w.job(jid)["payload"] == {"s": "\ud800x"}


@pytest.mark.parametrize(
    ("envelope", "msg_id", "fields", "expect_id"),
    [
        (None, 5, {"x": float("nan")}, True),
        (None, float("inf"), {}, False),
        ({"src": "s", "dest": "c"}, 6, {"x": [float("-inf")]}, True),
        ({"src": float("inf"), "dest": "c"}, 7, {"x": float("inf")}, True),
    ],
)
def test_a_reply_that_cannot_be_encoded_becomes_error_13(
    caplog: pytest.LogCaptureFixture,
    envelope: dict[str, Any] | None,
    msg_id: Any,
    fields: dict[str, Any],
    expect_id: bool,
) -> None:
    from jobsched.wire import Pending

    with caplog.at_level("ERROR", logger="jobsched.wire"):
        line = Pending(envelope, msg_id, "stats", fields, False).encode()
    reply = json.loads(line)
    body = reply.get("body", reply)
    assert body["type"] == "error" and body["code"] == 13 and body["text"], body
    assert ("in_reply_to" in body) is expect_id
    if expect_id:
        assert body["in_reply_to"] == msg_id
    if envelope is not None and envelope["src"] == "s":
        assert (reply["src"], reply["dest"]) == ("s", "c")
    assert any("encod" in r.getMessage() for r in caplog.records)
