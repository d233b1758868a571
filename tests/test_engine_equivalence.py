"""Every backend and both paths give the same answers: seeded random request
sequences run through the wire on the memory store's general path (the
reference) and on the backend under test, through the fast path
(``wire.fast``) or the general one, and every reply must be identical, byte
for byte. Generated job ids come from a counter per side (the same sequence on
both), so that replies naming them can be compared as text too."""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from jobsched import engine as engine_module
from jobsched import validate, wire
from jobsched.spec import ScheduleSpec
from jobsched.stores.base import Store
from jobsched.stores.memory import MemoryStore
from tests.conftest import StoreFactory
from tests.harness import T0, Clock, Wire

CRONS = ["*/5 * * * *", "0 9 * * MON-FRI", "30 2 * * *", "0 0 1 * *", "15 10 L * ?"]
ZONES = ["UTC", "America/New_York", "Europe/London"]


def _schedule(rng: random.Random, now: int, sent: dict[str, dict[str, Any]]) -> dict[str, Any]:
    if rng.random() < 0.4:
        return _once(rng, now)
    if sent and rng.random() < 0.15:
        # Re-send an earlier request: the same spec (idempotent) or, with a
        # changed payload, a conflicting one (error 21).
        jid = rng.choice(list(sent))
        again = dict(sent[jid])
        if rng.random() < 0.5:
            again["payload"] = {"changed": True}
        return again
    jid = f"job-{len(sent)}"
    body: dict[str, Any] = {"type": "schedule_job", "task": rng.choice(["a", "b"]), "job_id": jid}
    kind = rng.randrange(5)
    if kind == 0:
        body["delay_ms"] = rng.randrange(0, 120_000)
    elif kind == 1:
        body["run_at"] = now + rng.randrange(-60_000, 600_000)
    elif kind == 2:
        body["cron"] = rng.choice(CRONS)
        body["timezone"] = rng.choice(ZONES)
    elif kind == 3:
        body["interval_ms"] = rng.randrange(1, 90_000)
    if rng.random() < 0.5:
        body["retry"] = {"max_attempts": rng.randrange(1, 5), "base_ms": rng.choice([0, 10, 1000])}
    if rng.random() < 0.3:
        body["payload"] = {"n": rng.randrange(100), "s": "é"}
    sent[jid] = body
    return body


def _once(rng: random.Random, now: int) -> dict[str, Any]:
    """The fast path's request (a one-time job with a generated id), now and
    then with a field it must leave to the general path: an invalid value, a
    setting beyond its shape, both delay_ms and run_at."""
    task = rng.choice(["a", "b"]) if rng.random() < 0.9 else rng.choice(["", 7, "a\x00"])
    body: dict[str, Any] = {"type": "schedule_job", "task": task}
    if rng.random() < 0.8:
        body["payload"] = rng.choice([{"to": "x@example.com"}, [1, "é"], None, "s", 3.5])
    roll, bad = rng.random(), rng.random() < 0.15
    if roll < 0.4:
        good = [0, 1, 60_000, 2.0]
        body["delay_ms"] = rng.choice([-1, 2.5, "5", True, 10**20] if bad else good)
    elif roll < 0.7:
        good = [now + 5, now - 60_000, "2024-01-15T09:00:00Z", "2024-01-15T09:00:00.123+01:00"]
        body["run_at"] = rng.choice(["2024-13-01T00:00:00Z", -(10**16), []] if bad else good)
    elif roll < 0.75:
        body["delay_ms"], body["run_at"] = 5, now
    elif roll < 0.8:
        body["max_attempts"] = 2  # not the fast path's shape
    if rng.random() < 0.1:
        body["current_time"] = rng.choice([now, "2024-01-15T09:00:00Z", "yesterday", 2**70])
    return body


def _batch(rng: random.Random, now: int, sent: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """schedule_jobs of a few specs: new, re-sent, conflicting, sometimes one
    malformed or one named twice (then nothing of the batch is scheduled)."""
    jobs = []
    for _ in range(rng.randrange(1, 5)):
        spec = dict(_schedule(rng, now, sent))
        del spec["type"]
        if rng.random() < 0.2:  # duplicates (the reply marks them) within and across batches
            spec["unique_key"] = rng.choice(["k1", "k2"])
        if "job_id" in spec and rng.random() < 0.1:  # an id the protocol refuses
            spec["job_id"] += rng.choice(['"q', "\\", "é", "\x7f", "\n"])
        jobs.append(spec)
    if rng.random() < 0.1:
        jobs.insert(rng.randrange(len(jobs) + 1), {"task": "a", "delay_ms": -1})
    if rng.random() < 0.1:
        jobs.append(dict(jobs[0]))
    return {"type": "schedule_jobs", "jobs": jobs}


def _request(rng: random.Random, now: int, sent: dict[str, dict[str, Any]]) -> dict[str, Any]:
    roll = rng.random()
    jid = rng.choice(list(sent)) if sent and rng.random() < 0.9 else "job-none"
    if roll < 0.08:
        return _batch(rng, now, sent)
    if roll < 0.3 or not sent:
        return _schedule(rng, now, sent)
    if roll < 0.45:
        return {"type": "execute_jobs"}
    if roll < 0.6:
        return {"type": "execute_job", "job_id": jid, "force_fail": rng.random() < 0.5}
    kind = rng.choice(
        ["cancel_job", "pause_job", "resume_job", "retry_job", "get_job", "list_jobs", "stats"]
    )
    if kind == "list_jobs":
        body: dict[str, Any] = {"type": kind, "limit": rng.randrange(1, 5)}
        if rng.random() < 0.3:
            body["state"] = rng.choice(["scheduled", "completed", "retrying", "paused", "dead"])
        if rng.random() < 0.3:
            body["after"] = jid
        return body
    return {"type": kind, "job_id": jid}


class Side:
    """A Wire whose generated job ids come from its own counter."""

    def __init__(self, store: Store, clock: Clock, fast: bool) -> None:
        self.wire = Wire(store, clock)
        self.wire.ctx.fast_path = fast
        self._made = 0

    def _uuid7(self) -> str:
        self._made += 1
        return f"01900000-0000-7000-8000-{self._made:012x}"

    def _uuid7_many(self, n: int) -> list[str]:
        return [self._uuid7() for _ in range(n)]

    def raw(self, body: dict[str, Any], msg_id: int) -> str:
        line = json.dumps({"src": "c", "dest": "s", "body": {"msg_id": msg_id, **body}})
        with _ids_from(self):
            return self.wire.raw(line)


@contextmanager
def _ids_from(side: Side) -> Iterator[None]:
    saved = engine_module.uuid7, engine_module.uuid7_many
    engine_module.uuid7, engine_module.uuid7_many = side._uuid7, side._uuid7_many
    try:
        yield
    finally:
        engine_module.uuid7, engine_module.uuid7_many = saved


def _same_answers(make_store: StoreFactory, seed: int, fast: bool, steps: int = 250) -> None:
    """Run one seeded sequence; AssertionError at the first reply that differs."""
    rng = random.Random(seed)
    ref = Side(MemoryStore(), Clock(), fast=False)
    clock = Clock()
    store = make_store()
    under_test = Side(store, clock, fast)
    try:
        now = T0
        sent: dict[str, dict[str, Any]] = {}
        for step in range(steps):
            now += rng.choice([0, 1, 999, 30_000, 600_000])
            ref.wire.clock.ms = clock.ms = now
            body = _request(rng, now, sent)
            with store.transaction():
                got = under_test.raw(dict(body), step)
            want = ref.raw(dict(body), step)
            if body["type"] == "stats" and '"nodes"' in got:
                # Only a shared store (PostgreSQL) lists its nodes; no node beats here.
                reply = json.loads(got)
                assert reply["body"].pop("nodes") == []
                got = json.dumps(reply)
            assert got == want, f"seed {seed} step {step}: {body}"
            reply_body = json.loads(want)["body"]
            if reply_body["type"] == "job_scheduled" and "job_id" not in body:
                sent.setdefault(reply_body["job_id"], body)  # later requests may name it
    finally:
        store.close()


@pytest.mark.parametrize("fast", [True, False], ids=["fast", "general"])
@pytest.mark.parametrize("seed", range(4))
def test_backend_answers_like_the_memory_store(
    make_store: StoreFactory, seed: int, fast: bool
) -> None:
    _same_answers(make_store, seed, fast)


def _planted(real: Callable[..., ScheduleSpec | None]) -> Callable[..., ScheduleSpec | None]:
    """once_spec with a drift planted: a delay one millisecond longer."""

    def drifted(body: dict[str, Any], max_payload: int) -> ScheduleSpec | None:
        spec = real(body, max_payload)
        if spec is not None and spec.delay_ms is not None:
            spec.delay_ms += 1
        return spec

    return drifted


def test_a_divergence_planted_in_the_fast_path_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    """The comparison above can fail: a fast path that drifts from the rules
    (here, a delay 1 ms longer; then a reply spelt with other spacing, the
    same JSON) is caught, while the general path under the same plant is not
    affected."""
    memory: StoreFactory = MemoryStore
    monkeypatch.setattr(validate, "once_spec", _planted(validate.once_spec))
    with pytest.raises(AssertionError, match="seed 0 step"):
        _same_answers(memory, 0, fast=True)
    _same_answers(memory, 0, fast=False)
    monkeypatch.undo()
    real = wire.fast

    def respaced(ctx: Any, body: Any, envelope: Any) -> Any:
        reply = real(ctx, body, envelope)
        if reply is not None and reply.text is not None:
            reply.text = reply.text.replace('", "', '","')
        return reply

    monkeypatch.setattr(wire, "fast", respaced)
    with pytest.raises(AssertionError, match="seed 0 step"):
        _same_answers(memory, 0, fast=True)


def test_a_resend_is_answered_with_its_job_even_if_its_task_is_now_refused() -> None:
    """Caller ids are inserted first and read only when taken: a re-send whose
    task a restarted service no longer has must still find its job (and a
    different spec still be error 21), as when the id was read first."""
    from jobsched.engine import Engine
    from jobsched.errors import JobExists
    from jobsched.runner import TaskRegistry

    store = MemoryStore()
    before = TaskRegistry()
    before.register("report", lambda payload: None)
    body = {"task": "report", "payload": {"m": 1}, "job_id": "r-1", "delay_ms": 5000}
    spec = validate.schedule_spec(body)
    first = Engine(store, before).schedule(spec, T0)
    after = TaskRegistry()
    after.strict = True  # as `jobsched serve` without that task
    again = Engine(store, after).schedule(spec, T0 + 10)
    assert (again.job_id, again.first_due) == ("r-1", first.first_due)
    other = validate.schedule_spec({**body, "payload": {"m": 2}})
    with pytest.raises(JobExists):
        Engine(store, after).schedule(other, T0 + 20)
