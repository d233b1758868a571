"""``jobsched.Client``: schedule and manage jobs from Python application code.

::

    from jobsched import Client

    with Client("jobs.db") as client:          # or postgresql://..., or http://host:8080
        job = client.schedule("send-email", {"to": "a@example.com"}, delay_ms=60_000)
        print(client.get(job.job_id).state)

The target is a SQLite file (``*.db`` or ``sqlite:///path``) or a
``postgresql://`` URL, written directly through the engine (no service
needed: running nodes see the jobs), or the ``http(s)://`` URL of a running
``jobsched serve``. Every method sends the protocol's message (see
docs/protocol.md) and reads its reply, so a store target and a service give
the same results. ``connection=`` writes inside the application's own open
transaction (store targets only). See docs/client.md.
"""

from __future__ import annotations

import builtins
import enum
import os
from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime
from types import TracebackType
from typing import Any, Final, Literal

from jobsched.client_json import a_type, batch_json_problem, json_problem
from jobsched.client_transports import Body, Transport, open_transport
from jobsched.client_types import (
    InvalidArgument,
    Job,
    JobPage,
    JobSpec,
    JobState,
    QueueConfig,
    QueueInfo,
    RateLimit,
    ScheduledJob,
    Stats,
    spec_body,
)

__all__ = ["KEEP", "Client"]


class _Keep(enum.Enum):
    KEEP = "keep"


#: The default of ``configure_queue``'s limits: leave the setting as it is
#: (``None`` is meaningful there: it removes the limit).
KEEP: Final = _Keep.KEEP


class Client:
    """A connection to jobsched for application code (see the module docstring).

    Safe to share between threads. Errors are ``jobsched.errors`` classes
    carrying the protocol's ``code`` and text (``Malformed`` 12,
    ``JobNotFound`` 20, ``JobExists`` 21, ``PreconditionFailed`` 22,
    ``Unavailable`` 11), all ``JobschedError``."""

    def __init__(
        self, target: str | os.PathLike[str], *, token: str | None = None, timeout: float = 30.0
    ) -> None:
        self._transport: Transport = open_transport(target, token, timeout)
        self.target = self._transport.target

    # -- scheduling -----------------------------------------------------------

    def schedule(
        self,
        task: str,
        payload: Any = None,
        *,
        delay_ms: int | None = None,
        run_at: datetime | int | str | None = None,
        cron: str | None = None,
        interval_ms: int | None = None,
        timezone: str | None = None,
        job_id: str | None = None,
        max_attempts: int | None = None,
        base_ms: int | None = None,
        max_backoff_ms: int | None = None,
        jitter: bool | None = None,
        timeout_ms: int | None = None,
        overlap: str | None = None,
        misfire: str | None = None,
        catchup_window_ms: int | None = None,
        queue: str | None = None,
        priority: int | None = None,
        unique_key: str | None = None,
        unique_for_ms: int | None = None,
        connection: object | None = None,
    ) -> ScheduledJob:
        """Schedule one job (the ``schedule_job`` message; ``None`` means "not
        given"). ``run_at`` takes an aware ``datetime``, epoch ms or ISO text.
        With ``connection=`` (a ``sqlite3.Connection`` or ``psycopg.Connection``
        to the target's database, with a transaction open), the job is written
        in that transaction: it exists once the application commits."""
        spec = JobSpec(
            task=task, payload=payload, delay_ms=delay_ms, run_at=run_at, cron=cron,
            interval_ms=interval_ms, timezone=timezone, job_id=job_id,
            max_attempts=max_attempts, base_ms=base_ms, max_backoff_ms=max_backoff_ms,
            jitter=jitter, timeout_ms=timeout_ms, overlap=overlap, misfire=misfire,
            catchup_window_ms=catchup_window_ms, queue=queue, priority=priority,
            unique_key=unique_key, unique_for_ms=unique_for_ms,
        )  # fmt: skip
        reply = self._call({"type": "schedule_job", **spec.to_body()}, connection)
        return ScheduledJob.from_reply(reply)

    def schedule_many(
        self, specs: Iterable[Mapping[str, Any] | JobSpec], *, connection: object | None = None
    ) -> builtins.list[ScheduledJob]:
        """Schedule a batch, all or nothing (the ``schedule_jobs`` message): a
        ``JobSpec`` or a mapping of schedule_job fields per job; at most 10,000.
        An error names the spec by its index (``jobs[7].delay_ms: ...``)."""
        jobs: builtins.list[Mapping[str, Any]] = []
        add = jobs.append
        try:
            for spec in specs:
                add(spec_body(spec) if type(spec) is dict else _spec_fields(spec))
        except InvalidArgument as exc:
            # The specs before the bad one are in jobs: its index is their count.
            where = f"jobs[{len(jobs)}].{exc.field}".rstrip(".")
            raise InvalidArgument(where, exc.problem) from None
        refused = batch_json_problem(jobs)
        if refused is not None:
            raise refused
        reply = self._call({"type": "schedule_jobs", "jobs": jobs}, connection)
        return ScheduledJob.from_replies(reply["jobs"])

    # -- reading --------------------------------------------------------------

    def get(self, job_id: str) -> Job:
        """The job, with its latest runs (``JobNotFound`` if there is none)."""
        return Job.from_reply(self._call({"type": "get_job", "job_id": job_id})["job"])

    def list(
        self,
        state: JobState | str | None = None,
        task: str | None = None,
        limit: int = 100,
        after: str | None = None,
        *,
        queue: str | None = None,
    ) -> JobPage:
        """One page of jobs in scheduling order (``limit`` 1 to 1000), of one
        ``state``, ``task`` and ``queue`` if given; pass the page's ``next`` as
        ``after`` for the following one, or use ``iter_jobs``."""
        body: Body = {"type": "list_jobs", "limit": limit}
        for name, value in (("state", state), ("task", task), ("after", after), ("queue", queue)):
            if value is not None:
                body[name] = value  # as given: the protocol names a wrong type
        reply = self._call(body)
        return JobPage(tuple(Job.from_reply(j) for j in reply["jobs"]), reply["next"])

    def iter_jobs(
        self,
        state: JobState | str | None = None,
        task: str | None = None,
        page_size: int = 100,
        *,
        queue: str | None = None,
    ) -> Iterator[Job]:
        """Every job matching, in scheduling order, a page at a time."""
        after: str | None = None
        while True:
            page = self.list(state, task, page_size, after, queue=queue)
            yield from page.jobs
            if page.next is None:
                return
            after = page.next

    def stats(self) -> Stats:
        return Stats.from_reply(self._call({"type": "stats"}))

    def list_queues(self) -> builtins.list[QueueInfo]:
        """Every queue with settings or jobs, by name (``list_queues``)."""
        return [QueueInfo.from_reply(q) for q in self._call({"type": "list_queues"})["queues"]]

    # -- changes --------------------------------------------------------------

    def configure_queue(
        self,
        name: str,
        *,
        concurrency: int | Literal[_Keep.KEEP] | None = KEEP,
        rate_limit: RateLimit
        | tuple[int, int]
        | Mapping[str, int]
        | Literal[_Keep.KEEP]
        | None = KEEP,
        paused: bool | None = None,
    ) -> QueueConfig:
        """Set a queue's limits for the whole cluster (``configure_queue``): an
        argument left out keeps its setting, ``None`` removes a limit;
        ``rate_limit`` is a ``RateLimit(max, per_ms)``, a ``(max, per_ms)``
        tuple or a ``{"max": ..., "per_ms": ...}`` mapping."""
        body: Body = {"type": "configure_queue", "queue": name}
        if concurrency is not KEEP:
            body["concurrency"] = concurrency
        if rate_limit is not KEEP:
            body["rate_limit"] = _rate_limit(rate_limit)
        if paused is not None:
            body["paused"] = paused
        return QueueConfig.from_reply(self._call(body)["queue"])

    def cancel(self, job_id: str) -> None:
        self._call({"type": "cancel_job", "job_id": job_id})

    def pause(self, job_id: str) -> None:
        self._call({"type": "pause_job", "job_id": job_id})

    def resume(self, job_id: str) -> ScheduledJob:
        """Resume a paused job; when it is due now."""
        return ScheduledJob.from_reply(self._call({"type": "resume_job", "job_id": job_id}))

    def retry(self, job_id: str) -> ScheduledJob:
        """Run a dead job again (``retry_job``); it is due at once."""
        return ScheduledJob.from_reply(self._call({"type": "retry_job", "job_id": job_id}))

    # -- plumbing -------------------------------------------------------------

    def _call(self, body: Body, connection: object | None = None) -> Body:
        try:
            return self._transport.call(body, connection)
        except Exception:
            # A value JSON cannot carry (NaN, a set, ...) fails on each target
            # its own way: the service's encoder raises, a store answers its own
            # text, or another error it met first. Every target answers the same
            # for it: json_problem's. Looked for only now, so a call that
            # succeeds pays nothing for it.
            refused = json_problem(body)
            if refused is None:
                raise
            raise refused from None

    def close(self) -> None:
        """Close the client's connections (the store's, or the HTTP ones)."""
        self._transport.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Client({self.target!r})"


def _rate_limit(value: object) -> dict[str, Any] | None:
    """configure_queue's ``rate_limit`` as the protocol's ``{max, per_ms}``
    (``None``: no limit); the protocol checks the numbers."""
    if value is None:
        return None
    if isinstance(value, RateLimit):
        return {"max": value.max, "per_ms": value.per_ms}
    if isinstance(value, tuple) and len(value) == 2:
        return {"max": value[0], "per_ms": value[1]}
    if isinstance(value, Mapping) and value.keys() == {"max", "per_ms"}:
        return {"max": value["max"], "per_ms": value["per_ms"]}
    if isinstance(value, tuple):
        given = f"a tuple of {len(value)}"
    elif isinstance(value, Mapping):
        given = f"a mapping of {', '.join(sorted(repr(str(k)) for k in value)) or 'no keys'}"
    else:  # the type only: the repr of some values fails (an int too long to write)
        given = a_type(value)
    raise InvalidArgument(
        "rate_limit",
        "must be a RateLimit(max, per_ms), a (max, per_ms) tuple, a mapping "
        f"{{'max': ..., 'per_ms': ...}} or None, not {given}",
    )


def _spec_fields(spec: object) -> Mapping[str, Any]:
    """The schedule_job fields of a spec of schedule_many that is not a dict."""
    if isinstance(spec, Mapping):
        return spec_body(spec)
    if isinstance(spec, JobSpec):
        return spec.to_body()
    raise InvalidArgument("", f"must be a JobSpec or a mapping, not {type(spec).__name__}")
