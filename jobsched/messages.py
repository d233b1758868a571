"""Message types: each reads its fields, calls the engine, and answers a body.

A handler returns ``(reply_type, fields)``; the wire layer puts ``type`` and
``in_reply_to`` in front, so every reply keeps the documented key order.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from jobsched import validate as v
from jobsched.engine import Engine
from jobsched.errors import Malformed
from jobsched.jobs import Job
from jobsched.stores.base import RunRecord
from jobsched.timefmt import format_ms, format_opt, now_ms, parse_timestamp

Fields = dict[str, Any]
Reply = tuple[str, Fields]
# JOBSCHED_FAST_PATH=0 sends every request through the general path: the tests
# run real nodes both ways, and whoever suspects the fast path can rule it out.
_FAST_PATH = os.environ.get("JOBSCHED_FAST_PATH", "1") != "0"


@dataclass
class Context:
    """What handlers share: the engine, the clock and the node's settings."""

    engine: Engine
    clock: Callable[[], int] = now_ms
    max_payload: int = v.DEFAULT_MAX_PAYLOAD
    node_id: str | None = None
    # Whether the hot messages take their fast path (wire.fast).
    fast_path: bool = field(default_factory=lambda: _FAST_PATH)

    def now(self, body: Fields) -> int:
        value = body.get("current_time")
        return self.clock() if value is None else parse_timestamp(value, "current_time")


def job_json(job: Job, runs: list[RunRecord] | None = None) -> Fields:
    """The job object of the protocol, in its documented key order."""
    out: Fields = {
        "job_id": job.job_id,
        "task": job.task,
        "payload": json.loads(job.payload_json),
        "state": job.state.value,
        "schedule": job.schedule.to_json(),
        "due_at": format_opt(job.due_at),
        "attempts": job.attempts,
        "max_attempts": job.retry.max_attempts,
        "base_ms": job.retry.base_ms,
        "max_backoff_ms": job.retry.max_backoff_ms,
        "jitter": job.retry.jitter,
        "runs": job.runs,
        "last_run_at": format_opt(job.last_run_at),
        "last_error": job.last_error,
        "created_at": format_ms(job.created_at),
        "updated_at": format_ms(job.updated_at),
        # Beyond the seed's object: the real-time options and policy counters.
        "timeout_ms": job.options.timeout_ms,
        "overlap": job.options.overlap,
        "misfire": job.options.misfire,
        "skipped": job.skipped,
        "locked_by": job.locked_by,
        # Queues (docs/queues.md): where it waits, in what order, and its uniqueness.
        "queue": job.queue,
        "priority": job.priority,
        "unique_key": job.unique_key,
        "unique_for_ms": job.unique_for_ms,
    }
    if runs is not None:
        out["recent_runs"] = [
            {
                "started_at": format_ms(r.started_at),
                "finished_at": format_ms(r.finished_at),
                "outcome": r.outcome,
                "error": r.error,
                "node": r.node,
            }
            for r in runs
        ]
    return out


def _due_field(job: Job, due: int | None) -> Fields:
    key = "next_run" if job.recurring else "scheduled_at"
    return {"job_id": job.job_id, key: format_opt(due)}


def schedule_job(ctx: Context, body: Fields) -> Reply:
    now = ctx.now(body)
    spec = v.schedule_spec(body, ctx.max_payload, now)
    job, duplicate = ctx.engine.place(spec, now)
    fields = _due_field(job, job.first_due)
    if duplicate:  # the job holding the spec's unique_key (docs/queues.md)
        fields["duplicate"] = True
    return "job_scheduled", fields


def schedule_once(ctx: Context, body: Fields) -> Job | None:
    """schedule_job's fast path: the commonest request (``validate.once_spec``:
    a one-time job, a fresh id, default settings) scheduled through the
    engine's own schedule path; its one write, the insert, comes last. None for
    any other request, which takes ``schedule_job``."""
    spec = v.once_spec(body, ctx.max_payload)
    if spec is None:
        return None
    return ctx.engine.place(spec, ctx.now(body))[0]


def schedule_batch(ctx: Context, body: Fields) -> tuple[list[Job], set[int]]:
    """The jobs of a schedule_jobs request, scheduled (all or none), and the
    indexes of those that are duplicates (``Engine.schedule_batch``)."""
    now = ctx.now(body)
    specs = v.batch_specs(body.get("jobs"), ctx.max_payload, now, ctx.fast_path)
    return ctx.engine.schedule_batch(specs, now)


def schedule_jobs(ctx: Context, body: Fields) -> Reply:
    """A batch of schedule_job specs, all scheduled or none (docs/protocol.md)."""
    jobs, duplicates = schedule_batch(ctx, body)
    return "jobs_scheduled", {"jobs": scheduled_entries(jobs, duplicates)}


def scheduled_entries(jobs: list[Job], duplicates: set[int]) -> list[Fields]:
    """jobs_scheduled's ``jobs``: each job's id and first due time, in order."""
    # The jobs of a batch mostly share a few due times: each is formatted once.
    texts: dict[int | None, str | None] = {}
    out = []
    for i, job in enumerate(jobs):
        due = job.first_due
        text = texts.get(due) if due in texts else texts.setdefault(due, format_opt(due))
        key = "next_run" if job.recurring else "scheduled_at"
        entry: Fields = {"job_id": job.job_id, key: text}
        if duplicates and i in duplicates:
            entry["duplicate"] = True
        out.append(entry)
    return out


def execute_jobs(ctx: Context, body: Fields) -> Reply:
    ran, failed = ctx.engine.execute_due(ctx.now(body))
    fields: Fields = {"count": len(ran), "jobs": ran}
    if failed:
        fields["failed"] = failed
    return "jobs_executed", fields


def execute_job(ctx: Context, body: Fields) -> Reply:
    jid = v.job_id(body)
    force = body.get("force_fail")
    force_fail = False if force is None else v.boolean(force, "force_fail")
    done = ctx.engine.execute_one(jid, force_fail, ctx.now(body))
    if done.ok:
        return "job_executed", {"job_id": jid}
    if done.retry_scheduled:
        return "job_failed", {"job_id": jid, "retry_scheduled": True, "backoff_ms": done.backoff_ms}
    return "job_failed", {"job_id": jid, "retry_scheduled": False}


def get_job(ctx: Context, body: Fields) -> Reply:
    job = ctx.engine.get(v.job_id(body))
    return "job_info", {"job": job_json(job, ctx.engine.store.recent_runs(job.job_id))}


def list_jobs(ctx: Context, body: Fields) -> Reply:
    state = v.state(body.get("state"))
    task = None if body.get("task") is None else v.text(body["task"], "task")
    limit = 100 if body.get("limit") is None else v.integer(body["limit"], "limit", 1, 1000)
    after = v.optional_job_id(body, "after")
    queue = None if body.get("queue") is None else v.queue_name(body["queue"])
    jobs, cursor = ctx.engine.list(state, task, after, limit, queue)
    return "jobs_listed", {"jobs": [job_json(j) for j in jobs], "next": cursor}


def cancel_job(ctx: Context, body: Fields) -> Reply:
    job = ctx.engine.cancel(v.job_id(body), ctx.now(body))
    return "job_cancelled", {"job_id": job.job_id}


def pause_job(ctx: Context, body: Fields) -> Reply:
    job = ctx.engine.pause(v.job_id(body), ctx.now(body))
    return "job_paused", {"job_id": job.job_id}


def resume_job(ctx: Context, body: Fields) -> Reply:
    job = ctx.engine.resume(v.job_id(body), ctx.now(body))
    return "job_resumed", _due_field(job, job.due_at)


def retry_job(ctx: Context, body: Fields) -> Reply:
    job = ctx.engine.requeue(v.job_id(body), ctx.now(body))
    return "job_requeued", {"job_id": job.job_id, "scheduled_at": format_opt(job.due_at)}


def stats(ctx: Context, body: Fields) -> Reply:
    counts = ctx.engine.stats()
    fields: Fields = {"jobs": counts, "total": sum(counts.values())}
    # Heartbeats are stamped on the cluster clock, never on a logical current_time.
    nodes = ctx.engine.nodes(ctx.clock())
    if nodes is not None:  # a shared (PostgreSQL) store: who is running jobs
        fields["nodes"] = [
            {"node_id": node, "last_seen": format_ms(last), "jobs_held": held}
            for node, last, held in nodes
        ]
    return "stats", fields


def configure_queue(ctx: Context, body: Fields) -> Reply:
    """Set a queue's concurrency, rate limit or pause (docs/queues.md); the
    reply holds the queue's settings now, as list_queues lists them."""
    name = v.queue_name(body.get("queue"))
    settings = ctx.engine.configure_queue(name, v.queue_change(body))
    return "queue_configured", {"queue": settings.to_json()}


def list_queues(ctx: Context, body: Fields) -> Reply:
    return "queues_listed", {"queues": [q.to_json() for q in ctx.engine.queues()]}


def init(ctx: Context, body: Fields) -> Reply:
    node_id = body.get("node_id")
    if node_id is not None and not isinstance(node_id, str):
        raise Malformed("node_id", "must be a string")
    ids = body.get("node_ids")
    if ids is not None and not (isinstance(ids, list) and all(isinstance(i, str) for i in ids)):
        raise Malformed("node_ids", "must be an array of strings")
    if node_id is not None:
        ctx.node_id = node_id
    return "init_ok", {}


HANDLERS: dict[str, Callable[[Context, Fields], Reply]] = {
    "init": init,
    "schedule_job": schedule_job,
    "schedule_jobs": schedule_jobs,
    "execute_jobs": execute_jobs,
    "execute_job": execute_job,
    "get_job": get_job,
    "list_jobs": list_jobs,
    "cancel_job": cancel_job,
    "pause_job": pause_job,
    "resume_job": resume_job,
    "retry_job": retry_job,
    "requeue_job": retry_job,
    "stats": stats,
    "configure_queue": configure_queue,
    "list_queues": list_queues,
}

# Messages that run users' handlers: a transport never wraps these in its own
# store transaction (the engine commits the claim, runs the handlers with no
# transaction open, then commits the outcomes).
RUNS_USER_CODE = frozenset({"execute_jobs", "execute_job"})

# Replies that report a change: under a durable store these wait for the commit.
READ_ONLY = frozenset({"init", "get_job", "list_jobs", "stats", "list_queues"})
