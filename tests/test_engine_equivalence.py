"""Every backend gives the engine the same answers: seeded random request
sequences run through the wire on the memory store (the reference) and on the
backend under test, and every reply must be identical, byte for byte."""

from __future__ import annotations

import random
from typing import Any

import pytest

from jobsched.stores.memory import MemoryStore
from tests.conftest import StoreFactory
from tests.harness import T0, Clock, Wire

CRONS = ["*/5 * * * *", "0 9 * * MON-FRI", "30 2 * * *", "0 0 1 * *", "15 10 L * ?"]
ZONES = ["UTC", "America/New_York", "Europe/London"]


def _schedule(rng: random.Random, now: int, sent: dict[str, dict[str, Any]]) -> dict[str, Any]:
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


def _batch(rng: random.Random, now: int, sent: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """schedule_jobs of a few specs: new, re-sent, conflicting, sometimes one
    malformed or one named twice (then nothing of the batch is scheduled)."""
    jobs = []
    for _ in range(rng.randrange(1, 5)):
        spec = dict(_schedule(rng, now, sent))
        del spec["type"]
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


@pytest.mark.parametrize("seed", range(4))
def test_backend_answers_like_the_memory_store(make_store: StoreFactory, seed: int) -> None:
    rng = random.Random(seed)
    ref = Wire(MemoryStore(), Clock())
    clock = Clock()
    store = make_store()
    under_test = Wire(store, clock)
    try:
        now = T0
        sent: dict[str, dict[str, Any]] = {}
        for step in range(250):
            now += rng.choice([0, 1, 999, 30_000, 600_000])
            ref.clock.ms = clock.ms = now
            body = _request(rng, now, sent)
            with store.transaction():
                got = under_test.send(dict(body))
            want = ref.send(dict(body))
            if body["type"] == "stats" and "nodes" in got:
                # Only a shared store (PostgreSQL) lists its nodes; no node beats here.
                assert got.pop("nodes") == []
            assert got == want, f"seed {seed} step {step}: {body}"
    finally:
        store.close()
