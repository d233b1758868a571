"""An example task module: ``jobsched serve --tasks jobsched.examples.tasks``.

A handler takes the job's payload (any JSON value) and returns nothing. It
succeeds by returning and fails by raising; a failure goes through the job's
retry rules and its text is kept in the run history (``recent_runs``). Plain
functions run on the worker threads (``--workers``), ``async def`` ones on
the service's event loop. Keep handlers idempotent: a run cut by a shutdown
past ``--grace`` runs again, and one lost to a crash runs again while the
job has attempts left (docs/design.md, "The crash rule").
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from jobsched import task

log = logging.getLogger("jobsched.examples.tasks")


@task("hello")
def hello(payload: Any) -> None:
    """Logs a greeting: the smallest possible handler."""
    name = payload.get("name", "world") if isinstance(payload, dict) else "world"
    log.warning("hello, %s", name)


@task("send-email")
def send_email(payload: dict[str, Any]) -> None:
    """Stands in for a real mail call; fails when the payload has no address."""
    to = payload.get("to")
    if not to:
        raise ValueError("payload.to is required")
    log.warning("would send an email to %s: %s", to, payload.get("subject", "(no subject)"))


@task("wait")
async def wait(payload: dict[str, Any]) -> None:
    """An async handler: waits ``payload.ms`` milliseconds without holding a worker
    thread. Give the job a ``timeout_ms`` to see a timeout fail it."""
    await asyncio.sleep(int(payload.get("ms", 100)) / 1000)


@task("fail")
def fail(payload: Any) -> None:
    """Always raises: watch the retries and backoff in ``GET /v1/jobs/{id}``."""
    raise RuntimeError(f"failing on purpose with {payload!r}")
