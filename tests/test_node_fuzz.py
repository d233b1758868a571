"""Fuzz what parses input: no line, however malformed, stops the node or
changes a job it did not name."""

from __future__ import annotations

import json
import random
import threading
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jobsched import engine as engine_module
from jobsched.wire import fast
from tests.harness import T0, Clock, NodeProcess, Wire

# The stores main.py runs on here: memory (both paths) and SQLite.
from tests.test_input_bounds import db  # noqa: F401

TYPES = [
    "schedule_job",
    "schedule_jobs",
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
    "jobs",
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
# schedule_jobs with specs made of every field (or of anything at all).
specs = st.fixed_dictionaries(
    {},
    optional={"task": st.sampled_from(["t", ""]) | json_values}
    | dict.fromkeys(FIELDS, json_values),
)
batches = st.fixed_dictionaries(
    {"type": st.just("schedule_jobs"), "jobs": st.lists(specs | json_values, max_size=4)},
    optional={"msg_id": st.integers(), "current_time": json_values},
)


def _snapshot(w: Wire, ids: list[str]) -> list[dict[str, Any]]:
    return [w.job(i) for i in ids]


@settings(
    max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(body=bodies)
def test_random_bodies_always_get_one_reply(body: dict[str, Any]) -> None:
    _one_reply_and_no_other_job_changed(body)


def _one_reply_and_no_other_job_changed(body: dict[str, Any]) -> None:
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


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(body=batches)
def test_random_batches_always_get_one_reply(body: dict[str, Any]) -> None:
    _one_reply_and_no_other_job_changed(body)


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
    "jobs_scheduled",
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


# -- hostile values through a real main.py -------------------------------------------
#
# Numbers JSON can write but a double cannot hold, integers of hundreds of
# digits, nesting past every limit and very long strings, in every field and in
# the envelope. None may stop the node, be answered 13, or leave a stored job
# that get_job or list_jobs cannot read back.

BIG = "1" + "0" * 400
NON_FINITE = ["1e400", "-1e400", "1E999", "-1.8e308", "2e308"]
NUMBERS = [BIG, "-" + BIG, "4" * 4000, "9" * 5000, "1e308", "-1e308", "-0.0", "1.5", "5.0"]
STRINGS = ['"' + "x" * 100_000 + '"', '"' + "\u00e9" * 50_000 + '"', '"' + "\\ud800" * 2000 + '"']
HOSTILE_FIELDS = [*FIELDS, "catchup_window_ms", "node_ids", "msg_id", "src", "dest"]
ALMOST_VALID = {
    "schedule_job": {"task": "t", "job_id": "f-1", "delay_ms": 5},
    "schedule_jobs": {"jobs": [{"task": "t", "job_id": "f-3", "delay_ms": 5}, {"task": "u"}]},
    "execute_jobs": {"current_time": "2024-01-15T09:00:00Z"},
    "list_jobs": {"limit": 5},
    "get_job": {"job_id": "f-1"},
    "execute_job": {"job_id": "f-2", "force_fail": True},
}


def _nest(depth: int) -> str:
    return "[" * depth + "1" + "]" * depth


def _hostile_value(rng: random.Random) -> str:
    pick = rng.randrange(4)
    if pick == 0:
        return rng.choice(NON_FINITE)
    if pick == 1:
        return rng.choice(NUMBERS)
    if pick == 2:
        return _nest(rng.choice([63, 64, 65, 300, 3000]))
    return rng.choice(STRINGS)


def _hostile_line(kind: str, values: dict[str, str], enveloped: bool) -> str:
    """A request of ``kind`` whose ``values`` are raw JSON texts: most cannot pass
    through json.dumps (non-finite), so they are spliced in as text."""
    body: dict[str, Any] = {
        "type": kind,
        "msg_id": 1,
        **json.loads(json.dumps(ALMOST_VALID.get(kind, {}))),
    }
    if kind == "schedule_job" and not enveloped:
        del body["job_id"]  # the fast path's shape (a generated id), unless a value names one
    outer: dict[str, Any] = {"src": "c", "dest": "s"}
    for i, name in enumerate(values):
        target = outer if name in ("src", "dest") and enveloped else body
        inner = body.get("jobs")
        if isinstance(inner, list) and name not in ("msg_id", "src", "dest", "jobs"):
            target = inner[i % 2]  # a spec's own field, inside the batch
        target[name] = f"@@{i}@@"
    line = json.dumps({**outer, "body": body} if enveloped else body)
    for i, raw in enumerate(values.values()):
        line = line.replace(f'"@@{i}@@"', raw)
    return line


def _seeded_hostile(rng: random.Random) -> str:
    kind = rng.choice([*ALMOST_VALID, "stats", "resume_job", "bogus"])
    names = rng.sample(HOSTILE_FIELDS, rng.randrange(1, 3))
    values = {name: _hostile_value(rng) for name in names}
    if rng.random() < 0.3:  # inside the retry object, one level down
        values["retry"] = '{"base_ms": ' + _hostile_value(rng) + "}"
    return _hostile_line(kind, values, rng.random() < 0.5)


hostile_values = st.sampled_from(NON_FINITE + NUMBERS) | st.builds(
    _nest, st.sampled_from([0, 1, 63, 64, 65, 900])
)
hostile_lines = st.builds(
    _hostile_line,
    st.sampled_from([*ALMOST_VALID, "stats"]),
    st.dictionaries(st.sampled_from(HOSTILE_FIELDS), hostile_values, min_size=1, max_size=3),
    st.booleans(),
)


def _answer(node: NodeProcess, line: str) -> dict[str, Any]:
    reply = json.loads(node.line(line))
    body: dict[str, Any] = reply.get("body", reply)
    assert body.get("code") != 13, (line[:200], body, node.stderr())
    return body


def _read_all(node: NodeProcess, keep: list[str]) -> list[dict[str, Any]]:
    """The sentinels by get_job, then every page of list_jobs: all readable."""
    jobs = [_answer(node, json.dumps({"type": "get_job", "job_id": k}))["job"] for k in keep]
    after = None
    while True:
        page = _answer(node, json.dumps({"type": "list_jobs", "limit": 1000, "after": after}))
        assert page["type"] == "jobs_listed", page
        if page["next"] is None:
            return jobs
        after = page["next"]


def test_hostile_values_in_every_field_through_main_py(db: list[str]) -> None:  # noqa: F811
    node = NodeProcess(*db)
    try:
        keep = [f"keep-{i}" for i in range(3)]
        for k in keep:
            _answer(node, json.dumps({"type": "schedule_job", "task": "k", "job_id": k}))
            _answer(node, json.dumps({"type": "pause_job", "job_id": k}))  # execute_jobs skips it
        before = _read_all(node, keep)

        @settings(max_examples=150, deadline=None, database=None)
        @given(line=hostile_lines)
        def one_at_a_time(line: str) -> None:
            _answer(node, line)

        one_at_a_time()
        _pipelined(node, [_seeded_hostile(random.Random(7 + i)) for i in range(800)])
        assert _read_all(node, keep) == before
        assert _answer(node, '{"type": "stats"}')["type"] == "stats"
        assert node.close() == 0, node.stderr()
    finally:
        node.proc.kill()
    if db:  # reopened, the file holds only what can be read back
        again = NodeProcess(*db)
        try:
            assert _read_all(again, keep) == before
        finally:
            again.proc.kill()


def _pipelined(node: NodeProcess, lines: list[str]) -> None:
    """All lines at once (so they arrive in batches), every one answered."""
    assert node.proc.stdin is not None and node.proc.stdout is not None
    data = "".join(line + "\n" for line in lines).encode()
    stdin = node.proc.stdin
    writer = threading.Thread(target=lambda: (stdin.write(data), stdin.flush()))
    writer.start()
    for line in lines:
        reply = node.proc.stdout.readline()
        assert reply, f"node stopped answering; stderr: {node.stderr()}"
        body = json.loads(reply)
        body = body.get("body", body)
        assert body.get("code") != 13, (line[:200], body, node.stderr())
    writer.join()


# -- the fast path against the general one ---------------------------------------------
#
# schedule_job bodies near the fast path's shape (wire.fast): every field it
# reads, with valid values, edge values and anything at all, and now and then
# a field that is not its business. Both paths must write the same reply,
# byte for byte, and store the same job.

edge_ints = st.sampled_from([0, 1, -1, 2.0, 2.5, -0.0, 10**20, 315_537_897_599_999, True])
once_bodies = st.fixed_dictionaries(
    {"type": st.just("schedule_job")},
    optional={
        "task": st.sampled_from(["t", "", "x" * 256, "a\x00", "\ud800", "é"]) | json_values,
        "payload": json_values,
        "delay_ms": edge_ints | json_values,
        "run_at": st.sampled_from(["2024-01-15T09:00:00Z", "9999-12-31T23:59:59.999Z", "x"])
        | edge_ints
        | json_values,
        "current_time": st.sampled_from([T0, "2024-01-15T09:00:00Z", "9999-12-31T23:59:59Z"])
        | json_values,
        "msg_id": json_values,
        "job_id": st.sampled_from(["given-1"]),
        "max_attempts": st.sampled_from([1, 0]),
    },
)


class _Counted:
    """Generated job ids from a counter, so that both paths' replies compare as text."""

    def __init__(self) -> None:
        self.made = 0

    def __call__(self) -> str:
        self.made += 1
        return f"01900000-0000-7000-8000-{self.made:012x}"


def _both(body: dict[str, Any], envelope: bool, tiny_payloads: bool) -> list[str]:
    out = []
    for on in (True, False):
        w = Wire(clock=Clock(T0))
        w.ctx.fast_path = on
        if tiny_payloads:
            w.ctx.max_payload = 8
        line = json.dumps({"src": "c", "dest": "s", "body": body} if envelope else body)
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(engine_module, "uuid7", _Counted())
            reply = w.raw(line)
        stored = w.raw(json.dumps({"type": "list_jobs", "limit": 10}))
        out.append(reply + "\n" + stored)
    return out


@settings(max_examples=600, deadline=None)
@given(body=once_bodies, envelope=st.booleans(), tiny_payloads=st.booleans())
def test_the_fast_path_answers_and_stores_as_the_general_path(
    body: dict[str, Any], envelope: bool, tiny_payloads: bool
) -> None:
    fast, general = _both(body, envelope, tiny_payloads)
    assert fast == general


def test_the_fast_path_takes_its_requests() -> None:
    """The comparison above is not between two general paths: the shape it
    is about is answered by wire.fast, anything else is left to dispatch."""
    ctx = Wire().ctx
    taken = fast(ctx, {"type": "schedule_job", "task": "t", "delay_ms": 5}, None)
    assert taken is not None and taken.text is not None and taken.reply_type == "job_scheduled"
    for other in ({"type": "schedule_job", "task": "t", "job_id": "j"}, {"type": "stats"}):
        assert fast(ctx, other, None) is None
    ctx.fast_path = False
    assert fast(ctx, {"type": "schedule_job", "task": "t"}, None) is None
