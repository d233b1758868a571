"""What ``@task`` hands back, and what a handler may be given besides its payload.

``@task("send-email")`` returns a ``TaskHandle``: still callable like the
function, plus ``.schedule(payload, ...)`` and ``.schedule_many(...)``, which
go through the default client set with ``jobsched.configure(client)``. The
client is any object with ``schedule`` and ``schedule_many`` (``Client`` has
them); this module must not import the client, which ranks above it.

A handler registered with ``pass_context=True`` is called ``handler(payload, ctx)``
with a ``TaskContext``: the job's id, attempt, due time and a logger that
names the job.
"""

from __future__ import annotations

import functools
import inspect
import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from jobsched.errors import JobschedError

if TYPE_CHECKING:
    from jobsched.jobs import Job

H = TypeVar("H", bound=Callable[..., Any])
_task_log = logging.getLogger("jobsched.task")


class _JobLogger(logging.LoggerAdapter[logging.Logger]):
    """Prefixes each line with the task and job, so a handler's logs say which run wrote them."""

    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        extra = self.extra or {}
        return f"[{extra.get('task')} {extra.get('job_id')}] {msg}", kwargs


@dataclass(frozen=True, slots=True)
class TaskContext:
    """The run a handler is called for. Fields are None when the caller ran the
    handler outside a job (``TaskRegistry.run`` with no context)."""

    job_id: str | None
    task: str
    attempt: int | None  # 1 for the first run, 2 for the first retry, ...
    due_at: int | None  # epoch ms the run was due
    logger: logging.LoggerAdapter[logging.Logger]


def make_context(
    task: str, job_id: str | None = None, attempt: int | None = None, due_at: int | None = None
) -> TaskContext:
    logger = _JobLogger(_task_log, {"task": task, "job_id": job_id})
    return TaskContext(job_id, task, attempt, due_at, logger)


def context_for(job: Job, due_at: int | None = None) -> TaskContext:
    """The context of a run of ``job`` (``due_at``: the occurrence claimed, else the job's)."""
    due = job.due_at if due_at is None else due_at
    return make_context(job.task, job.job_id, job.attempts + 1, due)


def bind_context(handler: Callable[..., Any], ctx: TaskContext) -> Callable[[Any], Any]:
    """``handler(payload, ctx)`` as a one-argument handler; a coroutine stays one."""
    if inspect.iscoroutinefunction(handler):

        async def bound_async(payload: Any) -> Any:
            return await handler(payload, ctx)

        return bound_async
    return functools.partial(_call_with, handler, ctx)


def _call_with(handler: Callable[..., Any], ctx: TaskContext, payload: Any) -> Any:
    return handler(payload, ctx)


# -- scheduling from a handle ------------------------------------------------------


class SchedulingClient(Protocol):
    """What ``TaskHandle.schedule`` needs of a client (``jobsched.Client`` fits)."""

    def schedule(self, task: str, payload: Any = None, **options: Any) -> Any: ...

    def schedule_many(self, specs: Iterable[Mapping[str, Any]], **options: Any) -> Any: ...


class NotConfigured(JobschedError):
    """``.schedule()`` on a task handle before ``jobsched.configure(client)``."""

    def __init__(self) -> None:
        super().__init__("no default client: call jobsched.configure(Client(...)) first")


_default: list[SchedulingClient] = []
_lock = threading.Lock()


def configure(client: SchedulingClient | None) -> None:
    """Set (or with None, clear) the client task handles schedule through."""
    with _lock:
        _default[:] = [] if client is None else [client]


set_default_client = configure


def default_client() -> SchedulingClient:
    with _lock:
        if not _default:
            raise NotConfigured()
        return _default[0]


class TaskHandle(Generic[H]):
    """A registered handler: call it like the function, or schedule a job of it."""

    def __init__(self, name: str, fn: H) -> None:
        self.name = name
        self.fn = fn
        functools.update_wrapper(self, fn)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.fn(*args, **kwargs)

    def schedule(
        self, payload: Any = None, *, client: SchedulingClient | None = None, **options: Any
    ) -> Any:
        """``client.schedule(name, payload, **options)``: a ``ScheduledJob`` with ``Client``."""
        return (client or default_client()).schedule(self.name, payload, **options)

    def schedule_many(
        self,
        payloads: Iterable[Any],
        *,
        client: SchedulingClient | None = None,
        connection: object | None = None,
        **options: Any,
    ) -> Any:
        """One job per payload, all or nothing (``schedule_jobs``), each with ``options``;
        ``connection=`` as for ``Client.schedule_many`` (the application's transaction)."""
        specs = [{**options, "task": self.name, "payload": p} for p in payloads]
        extra = {} if connection is None else {"connection": connection}
        return (client or default_client()).schedule_many(specs, **extra)

    def __repr__(self) -> str:
        return f"<task {self.name!r} {self.fn!r}>"
