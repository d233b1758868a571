"""The values ``jobsched.Client`` hands out and takes, with Python types.

Every value is read from a protocol reply (docs/protocol.md), whatever the
client's target: a store reached directly and a service reached over HTTP
answer with the same reply bodies, so they give the same values. Timestamps
are aware ``datetime`` objects in UTC; a job's state is a ``JobState``
(a ``str`` enum: ``JobState.SCHEDULED == "scheduled"``).

Errors are the classes of ``jobsched.errors``, chosen by the reply's code
(``Malformed`` for 12, ``JobNotFound`` for 20, ...), carrying the reply's text
and ``code``; a code with no class of its own is a plain ``JobschedError``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

from jobsched.errors import (
    JobExists,
    JobNotFound,
    JobschedError,
    Malformed,
    NotSupported,
    PreconditionFailed,
    Unavailable,
)
from jobsched.jobs import JobState

__all__ = [
    "InvalidArgument",
    "Job",
    "JobPage",
    "JobSchedule",
    "JobSpec",
    "JobState",
    "NodeInfo",
    "QueueConfig",
    "QueueInfo",
    "RateLimit",
    "Run",
    "ScheduledJob",
    "Stats",
    "WrongConnection",
    "error_from_reply",
]


class InvalidArgument(Malformed, ValueError):
    """An argument the client refuses before sending anything (code 12)."""


class WrongConnection(Malformed, TypeError):
    """A ``connection=`` this client cannot write through (code 12)."""


@dataclass(frozen=True, slots=True)
class JobSpec:
    """One job of ``Client.schedule_many``: the arguments of ``Client.schedule``."""

    task: str
    payload: Any = None
    delay_ms: int | None = None
    run_at: datetime | int | str | None = None
    cron: str | None = None
    interval_ms: int | None = None
    timezone: str | None = None
    job_id: str | None = None
    max_attempts: int | None = None
    base_ms: int | None = None
    max_backoff_ms: int | None = None
    jitter: bool | None = None
    timeout_ms: int | None = None
    overlap: str | None = None
    misfire: str | None = None
    catchup_window_ms: int | None = None
    queue: str | None = None
    priority: int | None = None
    unique_key: str | None = None
    unique_for_ms: int | None = None

    def to_body(self) -> dict[str, Any]:
        """The schedule_job fields of this spec (``None`` ones left out)."""
        # Not dataclasses.asdict: it deep-copies the payload, for nothing.
        return dict(spec_body({name: getattr(self, name) for name in SPEC_FIELDS}))


#: The fields of a JobSpec: a schedule_job spec's, as the client writes them.
SPEC_FIELDS = tuple(f.name for f in fields(JobSpec))


def spec_body(spec: Mapping[str, Any]) -> Mapping[str, Any]:
    """A spec's protocol fields: ``None`` left out, ``run_at`` as epoch ms."""
    if (
        type(spec) is dict
        and None not in spec.values()
        and not isinstance(spec.get("run_at"), datetime)
    ):
        return spec  # already protocol fields: the common case of a batch, not copied
    body = {key: value for key, value in spec.items() if value is not None}
    if isinstance(body.get("run_at"), datetime):
        body["run_at"] = epoch_ms(body["run_at"], "run_at")
    return body


def epoch_ms(when: datetime, name: str) -> int:
    if when.tzinfo is None or when.utcoffset() is None:
        raise InvalidArgument(
            name,
            f"{when.isoformat()} is a naive datetime (no time zone), which names no "
            "instant: give it a tzinfo, e.g. datetime(..., tzinfo=timezone.utc)",
        )
    delta = when - _EPOCH
    return delta.days * 86_400_000 + delta.seconds * 1000 + delta.microseconds // 1000


@dataclass(frozen=True, slots=True)
class ScheduledJob:
    """What scheduling (or resuming, or retrying) a job answers: its id and when
    it is due (``scheduled_at`` of a one-time job, ``next_run`` of a recurring
    one; None when a recurring job has no occurrence left)."""

    job_id: str
    due_at: datetime | None
    recurring: bool
    #: True when a live (or windowed) job held the spec's unique_key: ``job_id``
    #: is that job's, and nothing new was scheduled (docs/queues.md).
    duplicate: bool = False

    @classmethod
    def from_reply(cls, fields: Mapping[str, Any]) -> ScheduledJob:
        return cls.from_replies((fields,))[0]

    @classmethod
    def from_replies(cls, replies: Iterable[Mapping[str, Any]]) -> list[ScheduledJob]:
        """``from_reply`` of each (a batch's replies: one call, not one per job)."""
        out = []
        for reply in replies:
            recurring = "next_run" in reply
            due = reply["next_run"] if recurring else reply.get("scheduled_at")
            job_id, duplicate = str(reply["job_id"]), bool(reply.get("duplicate"))
            out.append(
                cls(job_id, None if due is None else _required_time(due), recurring, duplicate)
            )
        return out


@dataclass(frozen=True, slots=True)
class JobSchedule:
    kind: str  # once | cron | interval
    cron: str | None = None
    timezone: str | None = None
    interval_ms: int | None = None


@dataclass(frozen=True, slots=True)
class Run:
    started_at: datetime
    finished_at: datetime
    outcome: str  # succeeded | failed | skipped | lost
    error: str | None
    node: str | None


@dataclass(frozen=True, slots=True)
class Job:
    """A job as ``get`` and ``list`` show it (the protocol's job object)."""

    job_id: str
    task: str
    payload: Any
    state: JobState
    schedule: JobSchedule
    due_at: datetime | None
    attempts: int
    max_attempts: int
    base_ms: int
    max_backoff_ms: int | None
    jitter: bool
    runs: int
    last_run_at: datetime | None
    last_error: str | None
    created_at: datetime
    updated_at: datetime
    timeout_ms: int | None
    overlap: str
    misfire: str
    skipped: int
    locked_by: str | None
    #: The latest runs, newest first: from ``get`` only (None from ``list``).
    recent_runs: tuple[Run, ...] | None = None
    queue: str = "default"
    priority: int = 0
    unique_key: str | None = None
    unique_for_ms: int | None = None

    @classmethod
    def from_reply(cls, obj: Mapping[str, Any]) -> Job:
        runs = obj.get("recent_runs")
        times = ("due_at", "last_run_at", "created_at", "updated_at")
        fields = {name: obj[name] for name in cls.__dataclass_fields__ if name in obj}
        fields.update({name: _time(obj[name]) for name in times})
        fields["state"] = JobState(obj["state"])
        fields["schedule"] = JobSchedule(**obj["schedule"])
        fields["recent_runs"] = None if runs is None else tuple(_run(r) for r in runs)
        return cls(**fields)


@dataclass(frozen=True, slots=True)
class JobPage:
    """One page of ``list``: its jobs, and the cursor of the next page (None
    at the last one), to pass as ``after``."""

    jobs: tuple[Job, ...]
    next: str | None


@dataclass(frozen=True, slots=True)
class NodeInfo:
    node_id: str
    last_seen: datetime
    jobs_held: int


@dataclass(frozen=True, slots=True)
class Stats:
    """How many jobs are in each state (every state listed); on a PostgreSQL
    store, ``nodes``: the nodes seen in the last minute (None elsewhere)."""

    counts: Mapping[JobState, int]
    total: int
    nodes: tuple[NodeInfo, ...] | None = field(default=None)

    @classmethod
    def from_reply(cls, fields: Mapping[str, Any]) -> Stats:
        nodes = fields.get("nodes")
        return cls(
            counts={JobState(state): int(n) for state, n in fields["jobs"].items()},
            total=int(fields["total"]),
            nodes=None
            if nodes is None
            else tuple(
                NodeInfo(n["node_id"], _required_time(n["last_seen"]), n["jobs_held"])
                for n in nodes
            ),
        )


@dataclass(frozen=True, slots=True)
class RateLimit:
    """At most ``max`` run starts of a queue in any window of ``per_ms`` ms."""

    max: int
    per_ms: int


@dataclass(frozen=True, slots=True)
class QueueConfig:
    """A queue's settings, as ``configure_queue`` answers them (None: no limit)."""

    name: str
    concurrency: int | None
    rate_limit: RateLimit | None
    paused: bool

    @classmethod
    def from_reply(cls, fields: Mapping[str, Any]) -> QueueConfig:
        rate = fields.get("rate_limit")
        limit = None if rate is None else RateLimit(int(rate["max"]), int(rate["per_ms"]))
        return cls(str(fields["queue"]), fields.get("concurrency"), limit, bool(fields["paused"]))


@dataclass(frozen=True, slots=True)
class QueueInfo:
    """One queue of ``list_queues``: its settings, its jobs by state (every
    state listed) and its runs in flight on all nodes."""

    config: QueueConfig
    counts: Mapping[JobState, int]
    running: int

    @property
    def name(self) -> str:
        return self.config.name

    @classmethod
    def from_reply(cls, fields: Mapping[str, Any]) -> QueueInfo:
        counts = {JobState(state): int(n) for state, n in fields["jobs"].items()}
        return cls(QueueConfig.from_reply(fields), counts, int(fields["running"]))


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_CLASSES: dict[int, type[JobschedError]] = {
    cls.code: cls
    for cls in (NotSupported, Unavailable, Malformed, JobNotFound, JobExists, PreconditionFailed)
}
_NAMED = re.compile(r"job '([A-Za-z0-9._:-]+)'")


def error_from_reply(code: int, text: str) -> JobschedError:
    """The exception for an error reply: its code's class, with the reply's text
    (and what the class carries beside it: ``field``, ``job_id``)."""
    cls = _CLASSES.get(code, JobschedError)
    exc = cls.__new__(cls)
    JobschedError.__init__(exc, text)
    exc.code = code
    if isinstance(exc, Malformed):
        field_name, _, problem = text.partition(": ")
        exc.field, exc.problem = (field_name, problem) if problem else ("", text)
    elif isinstance(exc, JobNotFound | JobExists | PreconditionFailed):
        named = _NAMED.match(text)
        exc.job_id = named.group(1) if named else ""
    return exc


def _time(text: str | None) -> datetime | None:
    return None if text is None else _required_time(text)


@lru_cache(maxsize=4096)
def _required_time(text: str) -> datetime:
    # The protocol writes 2024-01-15T09:00:00.000Z, which fromisoformat reads
    # (3.11+). Cached: the jobs of a batch mostly share a few due times.
    return datetime.fromisoformat(text)


def _run(obj: Mapping[str, Any]) -> Run:
    return Run(
        _required_time(obj["started_at"]),
        _required_time(obj["finished_at"]),
        obj["outcome"],
        obj.get("error"),
        obj.get("node"),
    )
