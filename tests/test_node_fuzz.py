"""Fuzz what parses input: no line, however malformed, stops the node or
changes a job it did not name."""

from __future__ import annotations

import json
import random
import threading
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.harness import NodeProcess, Wire

TYPES = [
    "schedule_job",
    "execute_jobs",
    "execute_job",
    "get_job",
    "list_jobs",
    "cancel_job",
    "pause_job",
    "resume_job",
    "retry_job",
    "stats",
    "init",
    "bogus",
]
FIELDS = [
    "task",
    "payload",
    "delay_ms",
    "run_at",
    "cron",
    "interval_ms",
    "timezone",
    "max_attempts",
    "base_ms",
    "max_backoff_ms",
    "jitter",
    "retry",
    "job_id",
    "current_time",
    "force_fail",
    "state",
    "limit",
    "after",
    "node_id",
    "timeout_ms",
    "overlap",
    "misfire",
]
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)
bodies = st.fixed_dictionaries(
    {"type": st.sampled_from(TYPES)},
    optional={name: json_values for name in FIELDS} | {"msg_id": st.integers()},
)


def _snapshot(w: Wire, ids: list[str]) -> list[dict[str, Any]]:
    return [w.job(i) for i in ids]


@settings(
    max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(body=bodies)
def test_random_bodies_always_get_one_reply(body: dict[str, Any]) -> None:
    w = _WIRE
    # Never name the sentinel jobs, so they must stay exactly as they are.
    if body.get("job_id") in _SENTINELS or body.get("after") in _SENTINELS:
        body["job_id"] = "other"
    line = json.dumps({"src": "c", "dest": "s", "body": body})
    reply = json.loads(w.raw(line))
    assert reply["body"]["type"] in {"error", *_REPLY_TYPES}
    if reply["body"]["type"] == "error":
        assert reply["body"]["code"] in (10, 12, 20, 21, 22)
        assert isinstance(reply["body"]["text"], str) and reply["body"]["text"]
    assert _snapshot(w, _SENTINELS) == _BEFORE


@settings(max_examples=500, deadline=None)
@given(line=st.text(max_size=200) | st.binary(max_size=200).map(lambda b: b.decode("latin-1")))
def test_random_text_lines_get_a_reply_or_none_if_blank(line: str) -> None:
    line = line.replace("\n", " ")
    from jobsched.wire import handle

    reply = handle(_WIRE.ctx, line)
    if line.strip():
        assert reply is not None
        json.loads(reply.encode())
    assert _snapshot(_WIRE, _SENTINELS) == _BEFORE


_REPLY_TYPES = {
    "job_scheduled",
    "jobs_executed",
    "job_executed",
    "job_failed",
    "job_info",
    "jobs_listed",
    "job_cancelled",
    "job_paused",
    "job_resumed",
    "job_requeued",
    "stats",
    "init_ok",
}
_WIRE = Wire()
_SENTINELS = [
    _WIRE.ok(
        {"type": "schedule_job", "task": "keep", "job_id": f"sentinel-{i}", "delay_ms": 10**12},
        "job_scheduled",
    )["job_id"]
    for i in range(3)
]
_BEFORE = _snapshot(_WIRE, _SENTINELS)


def _garbage(rng: random.Random) -> str:
    choice = rng.randrange(6)
    if choice == 0:
        return "".join(chr(rng.randrange(32, 0x2FF)) for _ in range(rng.randrange(1, 80)))
    if choice == 1:
        body: dict[str, Any] = {"type": rng.choice(TYPES), "msg_id": rng.randrange(10**6)}
        for name in rng.sample(FIELDS, rng.randrange(0, 6)):
            body[name] = rng.choice(
                [None, -1, 0, 1.5, "x", "", [], {}, True, 10**30, "2024-99-99", "* * *"]
            )
        return json.dumps({"src": "c", "dest": "s", "body": body})
    if choice == 2:
        good = json.dumps({"src": "c", "dest": "s", "body": {"type": "schedule_job", "task": "t"}})
        cut = rng.randrange(len(good))
        return good[:cut] + rng.choice(["", "}", "{", '"', "\\"]) + good[cut + 1 :]
    if choice == 3:
        return json.dumps(
            rng.choice([[], 1, "s", None, {"body": None}, {"type": None}, {"src": 1}])
        )
    if choice == 4:
        return json.dumps(
            {
                "type": "schedule_job",
                "task": "t",
                "cron": rng.choice(
                    ["61 * * * *", "L L L L L", "@never", "0 0 30 2 *", "*/0 * * * *"]
                ),
            }
        )
    return json.dumps(
        {
            "type": "execute_jobs",
            "current_time": rng.choice(["2024-01-15T09:00:00Z", 0, -(10**15), "x"]),
        }
    )


def test_thousands_of_malformed_lines_through_main_py() -> None:
    rng = random.Random(20261127)
    node = NodeProcess()
    try:
        keep = [
            node.send(
                {"type": "schedule_job", "task": "keep", "job_id": f"keep-{i}", "cron": "0 0 1 1 *"}
            )
            for i in range(3)
        ]
        before = [node.send({"type": "get_job", "job_id": k["job_id"]})["job"] for k in keep]
        lines = [_garbage(rng) for _ in range(3000)]
        assert node.proc.stdin is not None and node.proc.stdout is not None
        data = "".join(line.replace("\n", " ") + "\n" for line in lines).encode()
        stdin = node.proc.stdin
        # Write from a thread: the replies fill stdout's pipe while we write.
        writer = threading.Thread(target=lambda: (stdin.write(data), stdin.flush()))
        writer.start()
        answered = sum(1 for line in lines if line.strip())
        for _ in range(answered):
            reply = node.proc.stdout.readline()
            assert reply, f"node stopped answering; stderr: {node.stderr()}"
            json.loads(reply)
        writer.join()
        after = [node.send({"type": "get_job", "job_id": k["job_id"]})["job"] for k in keep]
        # execute_jobs in the garbage may have run them (they are due in the past
        # for current_time far ahead); only fields a run changes may differ.
        for b, a in zip(before, after, strict=True):
            for key in ("job_id", "task", "payload", "schedule", "max_attempts", "created_at"):
                assert a[key] == b[key]
        assert node.close() == 0
    finally:
        node.proc.kill()
