"""jobsched: a job scheduler node.

The public API for task modules is ``task``::

    from jobsched import task

    @task("send-email")
    def send_email(payload): ...

``@task`` handles schedule their own jobs once a default client is set
(``jobsched.configure(client)``; ``send_email.schedule({...})``); ``Service``
runs the dispatcher inside the application (``with Service("jobs.db", tasks=[mod])``);
and for application code that schedules jobs, ``Client`` (``AsyncClient`` for
asyncio) with the values it hands out (docs/client.md)::

    from jobsched import Client

    with Client("jobs.db") as client:
        client.schedule("send-email", {"to": "a@example.com"}, delay_ms=60_000)
"""

from typing import TYPE_CHECKING, Any

from jobsched.errors import JobschedError
from jobsched.handles import TaskContext, configure, set_default_client
from jobsched.runner import task
from jobsched.version import __version__

if TYPE_CHECKING:
    from jobsched.client import Client
    from jobsched.client_async import AsyncClient
    from jobsched.client_types import (
        Job,
        JobPage,
        JobSchedule,
        JobSpec,
        JobState,
        NodeInfo,
        QueueConfig,
        QueueInfo,
        RateLimit,
        Run,
        ScheduledJob,
        Stats,
    )
    from jobsched.embedded import Service

__all__ = [
    "AsyncClient",
    "Client",
    "Job",
    "JobPage",
    "JobSchedule",
    "JobSpec",
    "JobState",
    "JobschedError",
    "NodeInfo",
    "QueueConfig",
    "QueueInfo",
    "RateLimit",
    "Run",
    "ScheduledJob",
    "Service",
    "Stats",
    "TaskContext",
    "__version__",
    "configure",
    "set_default_client",
    "task",
]

# The client is imported at first use: task modules and the stdio node import
# this package and need none of it (nor asyncio, which the AsyncClient loads).
_LAZY = {
    "Client": "jobsched.client",
    "AsyncClient": "jobsched.client_async",
    **dict.fromkeys(
        ("Job", "JobPage", "JobSchedule", "JobSpec", "JobState", "NodeInfo", "Run"),
        "jobsched.client_types",
    ),
    **dict.fromkeys(
        ("QueueConfig", "QueueInfo", "RateLimit"),
        "jobsched.client_types",
    ),
    "ScheduledJob": "jobsched.client_types",
    "Stats": "jobsched.client_types",
    "Service": "jobsched.embedded",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'jobsched' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
