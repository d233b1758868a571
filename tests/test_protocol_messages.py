"""Every message of SPEC section 2, in-process through the real wire encoder."""

from __future__ import annotations

import pytest

from jobsched import validate
from jobsched.timefmt import format_ms, parse_timestamp
from tests.harness import T0, Wire

ISO = "2024-01-15T09:00:00.000Z"


def ms(text: str) -> int:
    return parse_timestamp(text, "t")


@pytest.fixture
def w() -> Wire:
    return Wire()


def test_delay_job_is_due_now_plus_delay(w: Wire) -> None:
    r = w.ok({"type": "schedule_job", "task": "a", "delay_ms": 60000}, "job_scheduled")
    assert list(r) == ["type", "in_reply_to", "job_id", "scheduled_at"]
    assert r["scheduled_at"] == "2024-01-15T09:01:00.000Z"


def test_current_time_overrides_the_clock(w: Wire) -> None:
    r = w.ok(
        {
            "type": "schedule_job",
            "task": "a",
            "delay_ms": 5,
            "current_time": "2030-01-01T00:00:00Z",
        },
        "job_scheduled",
    )
    assert r["scheduled_at"] == "2030-01-01T00:00:00.005Z"


def test_no_when_field_means_due_now(w: Wire) -> None:
    r = w.ok({"type": "schedule_job", "task": "a"}, "job_scheduled")
    assert r["scheduled_at"] == ISO


def test_run_at_accepts_offsets_fractions_and_epoch_ms(w: Wire) -> None:
    for value, expected in [
        ("2024-02-01T10:00:00+02:00", "2024-02-01T08:00:00.000Z"),
        ("2024-02-01T10:00:00.5Z", "2024-02-01T10:00:00.500Z"),
        ("2024-02-01T10:00:00", "2024-02-01T10:00:00.000Z"),
        ("2024-02-01t10:00:00.25z", "2024-02-01T10:00:00.250Z"),  # RFC 3339 allows lower case
        ("2024-02-01 10:00+0100", "2024-02-01T09:00:00.000Z"),
        (ms("2024-02-01T10:00:00.123Z"), "2024-02-01T10:00:00.123Z"),
    ]:
        r = w.ok({"type": "schedule_job", "task": "a", "run_at": value}, "job_scheduled")
        assert r["scheduled_at"] == expected


def test_interval_next_run_and_grid(w: Wire) -> None:
    r = w.ok({"type": "schedule_job", "task": "a", "interval_ms": 1000}, "job_scheduled")
    assert list(r) == ["type", "in_reply_to", "job_id", "next_run"]
    assert r["next_run"] == "2024-01-15T09:00:01.000Z"
    jid = r["job_id"]
    # Run late, at +3.5 s: it runs once and stays on the grid start + k*interval.
    done = w.ok({"type": "execute_jobs", "current_time": T0 + 3500}, "jobs_executed")
    assert done["jobs"] == [jid] and done["count"] == 1
    assert w.job(jid)["due_at"] == "2024-01-15T09:00:04.000Z"
    assert w.job(jid)["schedule"] == {"kind": "interval", "interval_ms": 1000}


def test_execute_jobs_runs_due_jobs_in_due_then_scheduling_order(w: Wire) -> None:
    ids = []
    for delay in (3000, 1000, 1000, 99_999):
        ids.append(
            w.ok({"type": "schedule_job", "task": "a", "delay_ms": delay}, "job_scheduled")[
                "job_id"
            ]
        )
    r = w.ok({"type": "execute_jobs", "current_time": T0 + 3000}, "jobs_executed")
    assert r == {
        "type": "jobs_executed",
        "in_reply_to": r["in_reply_to"],
        "count": 3,
        "jobs": [ids[1], ids[2], ids[0]],
    }
    assert [w.job(i)["state"] for i in ids] == ["completed"] * 3 + ["scheduled"]
    # Nothing runs twice.
    again = w.ok({"type": "execute_jobs", "current_time": T0 + 3000}, "jobs_executed")
    assert again["count"] == 0 and again["jobs"] == []


def test_execute_jobs_boundary_is_inclusive(w: Wire) -> None:
    jid = w.ok({"type": "schedule_job", "task": "a", "delay_ms": 10}, "job_scheduled")["job_id"]
    assert w.ok({"type": "execute_jobs", "current_time": T0 + 9}, "jobs_executed")["count"] == 0
    assert w.ok({"type": "execute_jobs", "current_time": T0 + 10}, "jobs_executed")["jobs"] == [jid]


def test_execute_jobs_without_current_time_uses_the_clock(w: Wire) -> None:
    w.ok({"type": "schedule_job", "task": "a", "delay_ms": 10}, "job_scheduled")
    assert w.ok({"type": "execute_jobs"}, "jobs_executed")["count"] == 0
    w.clock.ms += 10
    assert w.ok({"type": "execute_jobs"}, "jobs_executed")["count"] == 1


def test_default_retry_sequence_2000_4000_then_final(w: Wire) -> None:
    jid = w.ok({"type": "schedule_job", "task": "a", "delay_ms": 0}, "job_scheduled")["job_id"]
    body = {"type": "execute_job", "job_id": jid, "force_fail": True}
    r1 = w.ok(body, "job_failed")
    assert list(r1) == ["type", "in_reply_to", "job_id", "retry_scheduled", "backoff_ms"]
    assert (r1["retry_scheduled"], r1["backoff_ms"]) == (True, 2000)
    job = w.job(jid)
    assert (job["state"], job["attempts"], job["due_at"]) == ("retrying", 1, format_ms(T0 + 2000))
    assert w.ok(body, "job_failed")["backoff_ms"] == 4000
    r3 = w.ok(body, "job_failed")
    assert r3 == {
        "type": "job_failed",
        "in_reply_to": r3["in_reply_to"],
        "job_id": jid,
        "retry_scheduled": False,
    }
    assert w.job(jid)["state"] == "dead"
    assert w.job(jid)["due_at"] is None
    w.err(body, 22)


def test_custom_base_cap_and_nested_retry(w: Wire) -> None:
    jid = w.ok(
        {
            "type": "schedule_job",
            "task": "a",
            "retry": {"max_attempts": 6, "base_ms": 100, "max_backoff_ms": 500},
        },
        "job_scheduled",
    )["job_id"]
    backoffs = [
        w.ok({"type": "execute_job", "job_id": jid, "force_fail": True}, "job_failed").get(
            "backoff_ms"
        )
        for _ in range(6)
    ]
    assert backoffs == [200, 400, 500, 500, 500, None]


def test_base_zero_and_max_attempts_one(w: Wire) -> None:
    jid = w.ok({"type": "schedule_job", "task": "a", "base_ms": 0}, "job_scheduled")["job_id"]
    assert (
        w.ok({"type": "execute_job", "job_id": jid, "force_fail": True}, "job_failed")["backoff_ms"]
        == 0
    )
    one = w.ok({"type": "schedule_job", "task": "a", "max_attempts": 1}, "job_scheduled")["job_id"]
    r = w.ok({"type": "execute_job", "job_id": one, "force_fail": True}, "job_failed")
    assert r["retry_scheduled"] is False and w.job(one)["state"] == "dead"


def test_jitter_stays_within_the_backoff(w: Wire) -> None:
    seen = set()
    for _ in range(40):
        jid = w.ok(
            {"type": "schedule_job", "task": "a", "jitter": True, "base_ms": 1000}, "job_scheduled"
        )["job_id"]
        b = w.ok({"type": "execute_job", "job_id": jid, "force_fail": True}, "job_failed")[
            "backoff_ms"
        ]
        assert 0 <= b <= 2000
        seen.add(b)
    assert len(seen) > 1


def test_success_resets_the_failure_count(w: Wire) -> None:
    jid = w.ok({"type": "schedule_job", "task": "a", "interval_ms": 60000}, "job_scheduled")[
        "job_id"
    ]
    w.ok({"type": "execute_job", "job_id": jid, "force_fail": True}, "job_failed")
    w.ok({"type": "execute_job", "job_id": jid, "force_fail": True}, "job_failed")
    w.ok({"type": "execute_job", "job_id": jid}, "job_executed")
    job = w.job(jid)
    assert (job["attempts"], job["runs"], job["state"]) == (0, 1, "scheduled")
    assert (
        w.ok({"type": "execute_job", "job_id": jid, "force_fail": True}, "job_failed")["backoff_ms"]
        == 2000
    )


def test_retry_in_execute_jobs_follows_the_same_rules() -> None:
    from jobsched.runner import TaskRegistry

    w = Wire()
    reg = TaskRegistry()

    def boom(payload: object) -> None:
        raise RuntimeError("smtp down")

    reg.register("flaky", boom)
    reg.register("fine", lambda p: None)
    w.ctx.engine.registry = reg
    bad = w.ok({"type": "schedule_job", "task": "flaky"}, "job_scheduled")["job_id"]
    good = w.ok({"type": "schedule_job", "task": "fine"}, "job_scheduled")["job_id"]
    r = w.ok({"type": "execute_jobs"}, "jobs_executed")
    assert r["jobs"] == [bad, good] and r["failed"] == [bad]
    assert list(r) == ["type", "in_reply_to", "count", "jobs", "failed"]
    job = w.job(bad)
    assert (job["state"], job["attempts"], job["due_at"]) == ("retrying", 1, format_ms(T0 + 2000))
    assert job["last_error"] == "RuntimeError: smtp down"
    assert job["recent_runs"][0]["outcome"] == "failed"
    # The retry is not due yet; at +2 s it is, and its second failure doubles.
    assert w.ok({"type": "execute_jobs", "current_time": T0 + 1999}, "jobs_executed")["count"] == 0
    assert w.ok({"type": "execute_jobs", "current_time": T0 + 2000}, "jobs_executed")["failed"] == [
        bad
    ]
    assert w.job(bad)["due_at"] == format_ms(T0 + 2000 + 4000)
    w.ok({"type": "execute_jobs", "current_time": T0 + 6000}, "jobs_executed")
    assert w.job(bad)["state"] == "dead"
    w.err({"type": "schedule_job", "task": "unknown-task"}, 12)


def test_zero_backoff_retry_runs_once_per_execute_jobs() -> None:
    from jobsched.runner import TaskRegistry

    w = Wire()
    reg = TaskRegistry()
    reg.register("bad", lambda p: 1 / 0)
    w.ctx.engine.registry = reg
    jid = w.ok(
        {"type": "schedule_job", "task": "bad", "base_ms": 0, "max_attempts": 50}, "job_scheduled"
    )["job_id"]
    r = w.ok({"type": "execute_jobs"}, "jobs_executed")
    assert r["jobs"] == [jid] and w.job(jid)["attempts"] == 1


def test_recurring_final_failure_goes_on_to_the_next_occurrence(w: Wire) -> None:
    jid = w.ok(
        {"type": "schedule_job", "task": "a", "interval_ms": 10_000, "max_attempts": 2},
        "job_scheduled",
    )["job_id"]
    w.clock.ms = T0 + 25_000
    assert (
        w.ok({"type": "execute_job", "job_id": jid, "force_fail": True}, "job_failed")["backoff_ms"]
        == 2000
    )
    assert (
        w.ok({"type": "execute_job", "job_id": jid, "force_fail": True}, "job_failed")[
            "retry_scheduled"
        ]
        is False
    )
    job = w.job(jid)
    assert (job["state"], job["attempts"], job["due_at"]) == (
        "scheduled",
        0,
        format_ms(T0 + 30_000),
    )


def test_manual_run_does_not_move_a_recurring_schedule(w: Wire) -> None:
    jid = w.ok({"type": "schedule_job", "task": "a", "interval_ms": 10_000}, "job_scheduled")[
        "job_id"
    ]
    w.ok({"type": "execute_job", "job_id": jid}, "job_executed")
    job = w.job(jid)
    assert (job["due_at"], job["runs"], job["state"]) == (format_ms(T0 + 10_000), 1, "scheduled")


def test_paused_job_stays_paused_through_a_manual_run(w: Wire) -> None:
    jid = w.ok({"type": "schedule_job", "task": "a", "interval_ms": 10_000}, "job_scheduled")[
        "job_id"
    ]
    w.ok({"type": "pause_job", "job_id": jid}, "job_paused")
    w.ok({"type": "execute_job", "job_id": jid}, "job_executed")
    assert w.job(jid)["state"] == "paused"
    w.ok({"type": "execute_job", "job_id": jid, "force_fail": True}, "job_failed")
    assert w.job(jid)["state"] == "paused"
    # Paused jobs are not run by execute_jobs.
    assert (
        w.ok({"type": "execute_jobs", "current_time": T0 + 999_999}, "jobs_executed")["count"] == 0
    )


def test_pause_resume_skips_missed_occurrences(w: Wire) -> None:
    jid = w.ok({"type": "schedule_job", "task": "a", "interval_ms": 1000}, "job_scheduled")[
        "job_id"
    ]
    w.ok({"type": "pause_job", "job_id": jid}, "job_paused")
    w.err({"type": "pause_job", "job_id": jid}, 22)
    w.clock.ms = T0 + 5500
    r = w.ok({"type": "resume_job", "job_id": jid}, "job_resumed")
    assert r == {
        "type": "job_resumed",
        "in_reply_to": r["in_reply_to"],
        "job_id": jid,
        "next_run": format_ms(T0 + 6000),
    }
    w.err({"type": "resume_job", "job_id": jid}, 22)


def test_resume_one_time_job_answers_scheduled_at(w: Wire) -> None:
    jid = w.ok({"type": "schedule_job", "task": "a", "delay_ms": 500}, "job_scheduled")["job_id"]
    w.ok({"type": "pause_job", "job_id": jid}, "job_paused")
    assert w.job(jid)["state"] == "paused"
    r = w.ok({"type": "resume_job", "job_id": jid}, "job_resumed")
    assert list(r) == ["type", "in_reply_to", "job_id", "scheduled_at"]
    assert r["scheduled_at"] == format_ms(T0 + 500)
    assert w.job(jid)["state"] == "scheduled"


def test_paused_retrying_job_resumes_to_retrying(w: Wire) -> None:
    jid = w.ok({"type": "schedule_job", "task": "a"}, "job_scheduled")["job_id"]
    w.ok({"type": "execute_job", "job_id": jid, "force_fail": True}, "job_failed")
    w.ok({"type": "pause_job", "job_id": jid}, "job_paused")
    w.ok({"type": "resume_job", "job_id": jid}, "job_resumed")
    job = w.job(jid)
    assert (job["state"], job["attempts"]) == ("retrying", 1)


def test_cancel_and_its_preconditions(w: Wire) -> None:
    jid = w.ok({"type": "schedule_job", "task": "a"}, "job_scheduled")["job_id"]
    assert w.ok({"type": "cancel_job", "job_id": jid}, "job_cancelled")["job_id"] == jid
    assert w.job(jid)["state"] == "cancelled" and w.job(jid)["due_at"] is None
    for kind in ("cancel_job", "execute_job", "pause_job", "resume_job", "retry_job"):
        w.err({"type": kind, "job_id": jid}, 22)
    assert w.ok({"type": "execute_jobs", "current_time": T0 + 10**9}, "jobs_executed")["count"] == 0


def test_completed_job_cannot_run_or_be_cancelled(w: Wire) -> None:
    jid = w.ok({"type": "schedule_job", "task": "a"}, "job_scheduled")["job_id"]
    w.ok({"type": "execute_job", "job_id": jid}, "job_executed")
    assert w.job(jid)["state"] == "completed"
    w.err({"type": "execute_job", "job_id": jid}, 22)
    w.err({"type": "cancel_job", "job_id": jid}, 22)


def test_retry_job_requeues_a_dead_job(w: Wire) -> None:
    jid = w.ok({"type": "schedule_job", "task": "a", "max_attempts": 1}, "job_scheduled")["job_id"]
    w.err({"type": "retry_job", "job_id": jid}, 22)
    w.ok({"type": "execute_job", "job_id": jid, "force_fail": True}, "job_failed")
    w.clock.ms = T0 + 777
    r = w.ok({"type": "retry_job", "job_id": jid}, "job_requeued")
    assert r == {
        "type": "job_requeued",
        "in_reply_to": r["in_reply_to"],
        "job_id": jid,
        "scheduled_at": format_ms(T0 + 777),
    }
    job = w.job(jid)
    assert (job["state"], job["attempts"]) == ("retrying", 0)
    assert w.ok({"type": "execute_jobs"}, "jobs_executed")["jobs"] == [jid]
    assert w.job(jid)["state"] == "completed"


def test_idempotent_schedule_with_caller_job_id(w: Wire) -> None:
    body = {
        "type": "schedule_job",
        "task": "a",
        "job_id": "report:2024-01",
        "delay_ms": 1000,
        "payload": {"x": 1},
    }
    first = w.ok(body, "job_scheduled")
    w.clock.ms += 5000
    again = w.ok({**body, "max_attempts": 3, "retry": {"base_ms": 1000}}, "job_scheduled")
    assert again["job_id"] == first["job_id"] == "report:2024-01"
    assert again["scheduled_at"] == first["scheduled_at"]
    w.err({**body, "payload": {"x": 2}}, 21)
    w.err({**body, "delay_ms": 2000}, 21)
    w.err({**body, "task": "b"}, 21)
    assert w.ok({"type": "stats"}, "stats")["total"] == 1


def test_a_resend_s_payload_may_list_its_keys_in_another_order(w: Wire) -> None:
    body = {
        "type": "schedule_job",
        "task": "a",
        "job_id": "k",
        "payload": {"b": [{"y": 1, "x": "é"}], "a": None},
    }
    first = w.ok(body, "job_scheduled")
    again = {**body, "payload": {"a": None, "b": [{"x": "é", "y": 1}]}}
    assert w.ok(again, "job_scheduled") == {**first, "in_reply_to": first["in_reply_to"] + 1}
    assert w.job("k")["payload"] == body["payload"]  # stored as sent, key order and all
    w.err({**body, "payload": {"a": None, "b": [{"x": "é", "y": 2}]}}, 21)
    w.err({**body, "payload": [{"a": None, "b": [{"x": "é", "y": 1}]}]}, 21)
    # Absent is {}; null is a payload of its own.
    w.ok({"type": "schedule_job", "task": "a", "job_id": "e"}, "job_scheduled")
    w.ok({"type": "schedule_job", "task": "a", "job_id": "e", "payload": {}}, "job_scheduled")
    w.err({"type": "schedule_job", "task": "a", "job_id": "e", "payload": None}, 21)


@pytest.mark.parametrize(
    "payload",
    [{}, {"n": 1}, {"a": "{"}, {"b": 1, "a": 2}, [{"b": 1, "a": 2}], {"é": 1}, {"x": [1, "ü"]},
     {"x": {"b": 1, "a": 2}}, [1, [2]], [], {"k": "\ud800"}],
)  # fmt: skip
def test_a_payload_s_idempotency_text_is_its_canonical_text(payload: object) -> None:
    # validate._payload_key skips making the canonical text when the payload's
    # own text is it already: it must never differ from the canonical text.
    from jobsched.jsonfast import dumps_canonical

    text = validate._payload_json(payload, 1 << 20)
    assert validate._payload_key(payload, text) == dumps_canonical(payload)


def test_a_job_keyed_before_payloads_were_compared_key_order_free_is_still_resent(
    w: Wire,
) -> None:
    # Jobs stored by earlier versions carry a spec_key made of the payload as
    # sent (validate's legacy_key); a re-send of the same request must still match.
    body = {"type": "schedule_job", "task": "a", "job_id": "old", "payload": {"b": 1, "a": "é"}}
    first = w.ok(body, "job_scheduled")
    spec = validate.schedule_spec(body)
    assert spec.legacy_key is not None and spec.legacy_key != spec.spec_key
    stored = w.store.get("old")
    assert stored is not None
    w.store.replace(stored.evolve(spec_key=spec.legacy_key), stored.state)
    assert w.ok(body, "job_scheduled")["scheduled_at"] == first["scheduled_at"]
    w.err({**body, "payload": {"b": 2, "a": "é"}}, 21)


def test_a_resend_with_a_unique_key_finds_its_own_job_not_a_duplicate(w: Wire) -> None:
    body = {"type": "schedule_job", "task": "a", "job_id": "sync-1", "unique_key": "sync"}
    first = w.ok(body, "job_scheduled")
    again = w.ok(body, "job_scheduled")
    assert again["job_id"] == first["job_id"] == "sync-1" and "duplicate" not in again
    other = w.ok({**body, "job_id": "sync-2"}, "job_scheduled")
    assert (other["job_id"], other["duplicate"]) == ("sync-1", True)
    assert w.ok({"type": "stats"}, "stats")["total"] == 1


def test_generated_ids_are_uuid7_and_distinct(w: Wire) -> None:
    import uuid

    ids = [
        w.ok({"type": "schedule_job", "task": "a"}, "job_scheduled")["job_id"] for _ in range(200)
    ]
    assert len(set(ids)) == 200
    assert all(uuid.UUID(i).version == 7 for i in ids)


def test_get_job_object_fields_in_order(w: Wire) -> None:
    jid = w.ok(
        {"type": "schedule_job", "task": "send", "payload": {"to": "u@x"}, "delay_ms": 10},
        "job_scheduled",
    )["job_id"]
    job = w.job(jid)
    assert list(job)[:16] == [
        "job_id",
        "task",
        "payload",
        "state",
        "schedule",
        "due_at",
        "attempts",
        "max_attempts",
        "base_ms",
        "max_backoff_ms",
        "jitter",
        "runs",
        "last_run_at",
        "last_error",
        "created_at",
        "updated_at",
    ]
    assert job["payload"] == {"to": "u@x"} and job["schedule"] == {"kind": "once"}
    assert (job["max_attempts"], job["base_ms"], job["max_backoff_ms"], job["jitter"]) == (
        3,
        1000,
        None,
        False,
    )
    assert job["created_at"] == ISO and job["due_at"] == format_ms(T0 + 10)


def test_list_jobs_filters_and_pages(w: Wire) -> None:
    ids = [
        w.ok({"type": "schedule_job", "task": "t" if i % 2 else "u"}, "job_scheduled")["job_id"]
        for i in range(7)
    ]
    w.ok({"type": "cancel_job", "job_id": ids[0]}, "job_cancelled")
    page = w.ok({"type": "list_jobs", "limit": 3}, "jobs_listed")
    assert [j["job_id"] for j in page["jobs"]] == ids[:3] and page["next"] == ids[2]
    page = w.ok({"type": "list_jobs", "limit": 3, "after": page["next"]}, "jobs_listed")
    assert [j["job_id"] for j in page["jobs"]] == ids[3:6]
    page = w.ok({"type": "list_jobs", "limit": 3, "after": page["next"]}, "jobs_listed")
    assert [j["job_id"] for j in page["jobs"]] == ids[6:] and page["next"] is None
    assert [
        j["job_id"] for j in w.ok({"type": "list_jobs", "task": "t"}, "jobs_listed")["jobs"]
    ] == ids[1::2]
    assert [
        j["job_id"]
        for j in w.ok({"type": "list_jobs", "state": "cancelled"}, "jobs_listed")["jobs"]
    ] == ids[:1]
    assert w.ok({"type": "list_jobs", "limit": 7}, "jobs_listed")["next"] is None
    w.err({"type": "list_jobs", "limit": 1001}, 12)
    w.err({"type": "list_jobs", "limit": 0}, 12)
    w.err({"type": "list_jobs", "state": "bogus"}, 12)


def test_stats_counts_every_state(w: Wire) -> None:
    a = w.ok({"type": "schedule_job", "task": "a"}, "job_scheduled")["job_id"]
    w.ok({"type": "schedule_job", "task": "a"}, "job_scheduled")
    w.ok({"type": "cancel_job", "job_id": a}, "job_cancelled")
    r = w.ok({"type": "stats"}, "stats")
    assert list(r) == ["type", "in_reply_to", "jobs", "total"]
    assert r["jobs"] == {
        "scheduled": 1,
        "running": 0,
        "retrying": 0,
        "paused": 0,
        "completed": 0,
        "dead": 0,
        "cancelled": 1,
    }
    assert r["total"] == 2


def test_unknown_and_ill_formed_job_ids(w: Wire) -> None:
    for kind in ("get_job", "execute_job", "cancel_job", "pause_job", "resume_job", "retry_job"):
        assert "does not exist" in w.err({"type": kind, "job_id": "no-such-job"}, 20)
        assert "job_id" in w.err({"type": kind}, 12)
        w.err({"type": kind, "job_id": 42}, 12)
        w.err({"type": kind, "job_id": "has space"}, 12)
        w.err({"type": kind, "job_id": "x" * 201}, 12)


def test_missed_occurrences_merged_by_execute_jobs_are_counted_as_skipped(w: Wire) -> None:
    jid = w.ok({"type": "schedule_job", "task": "a", "interval_ms": 1000}, "job_scheduled")[
        "job_id"
    ]
    # Due at +1 s; run at +5.5 s: the occurrences at +2, +3, +4 and +5 s merge into this run.
    assert w.ok({"type": "execute_jobs", "current_time": T0 + 5500}, "jobs_executed")["jobs"] == [
        jid
    ]
    job = w.job(jid)
    assert (job["runs"], job["skipped"], job["due_at"]) == (1, 4, format_ms(T0 + 6000))
    # On time: nothing merged.
    w.ok({"type": "execute_jobs", "current_time": T0 + 6000}, "jobs_executed")
    assert w.job(jid)["skipped"] == 4


def test_cron_missed_occurrences_are_counted_too(w: Wire) -> None:
    jid = w.ok({"type": "schedule_job", "task": "a", "cron": "0 * * * *"}, "job_scheduled")[
        "job_id"
    ]
    # Due 10:00; run at 13:30: 11:00, 12:00 and 13:00 were merged.
    w.ok({"type": "execute_jobs", "current_time": "2024-01-15T13:30:00Z"}, "jobs_executed")
    job = w.job(jid)
    assert (job["skipped"], job["due_at"]) == (3, "2024-01-15T14:00:00.000Z")


def test_times_before_year_1000_keep_four_digit_years(w: Wire) -> None:
    for when in ("0001-01-01T00:00:00.000Z", "0999-05-01T01:02:03.004Z"):
        r = w.ok({"type": "schedule_job", "task": "a", "current_time": when}, "job_scheduled")
        assert r["scheduled_at"] == when
        assert w.job(r["job_id"])["created_at"] == when


def test_format_ms_never_raises_and_prints_the_nearest_end_of_the_range() -> None:
    from jobsched.timefmt import MAX_MS, MIN_MS

    for value, expected in [
        (MAX_MS + 1, "9999-12-31T23:59:59.999Z"),
        (10**400, "9999-12-31T23:59:59.999Z"),
        (MIN_MS - 1, "0001-01-01T00:00:00.000Z"),
        (-(10**400), "0001-01-01T00:00:00.000Z"),
    ]:
        assert format_ms(value) == expected
        assert parse_timestamp(expected, "t") in (MAX_MS, MIN_MS)
