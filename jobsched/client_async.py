"""``jobsched.AsyncClient``: the ``Client`` for asyncio applications.

Each method runs the same method of a ``Client`` in a worker thread
(``asyncio.to_thread``), so the event loop never waits on a database or a
socket; the methods, arguments, results and errors are the ``Client``'s::

    async with AsyncClient("http://127.0.0.1:8080", token=TOKEN) as client:
        job = await client.schedule("send-email", {"to": "a@example.com"}, delay_ms=60_000)

``connection=`` takes what the ``Client`` takes, used from the worker thread:
a ``psycopg.Connection`` (not an ``AsyncConnection``), or a
``sqlite3.Connection`` made with ``check_same_thread=False``.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable, Coroutine
from types import TracebackType
from typing import Any, Concatenate, ParamSpec, TypeVar

from jobsched.client import Client
from jobsched.client_types import Job, JobState

__all__ = ["AsyncClient"]

P = ParamSpec("P")
R = TypeVar("R")


def _in_thread(
    method: Callable[Concatenate[Client, P], R],
) -> Callable[Concatenate[AsyncClient, P], Coroutine[Any, Any, R]]:
    """``Client.method`` as a coroutine method of AsyncClient, run in a thread."""

    async def call(self: AsyncClient, /, *args: P.args, **kwargs: P.kwargs) -> R:
        return await asyncio.to_thread(method, self.sync, *args, **kwargs)

    call.__name__, call.__doc__ = method.__name__, method.__doc__
    return call


class AsyncClient:
    """The asyncio face of ``Client`` (see the module docstring); ``sync`` is
    the ``Client`` underneath."""

    def __init__(
        self, target: str | os.PathLike[str], *, token: str | None = None, timeout: float = 30.0
    ) -> None:
        self.sync = Client(target, token=token, timeout=timeout)

    schedule = _in_thread(Client.schedule)
    schedule_many = _in_thread(Client.schedule_many)
    get = _in_thread(Client.get)
    list = _in_thread(Client.list)
    stats = _in_thread(Client.stats)
    cancel = _in_thread(Client.cancel)
    pause = _in_thread(Client.pause)
    resume = _in_thread(Client.resume)
    retry = _in_thread(Client.retry)
    configure_queue = _in_thread(Client.configure_queue)
    list_queues = _in_thread(Client.list_queues)
    close = _in_thread(Client.close)

    async def iter_jobs(
        self, state: JobState | str | None = None, task: str | None = None, page_size: int = 100
    ) -> AsyncIterator[Job]:
        """Every job matching, in scheduling order, a page at a time."""
        after: str | None = None
        while True:
            page = await asyncio.to_thread(self.sync.list, state, task, page_size, after)
            for job in page.jobs:
                yield job
            if page.next is None:
                return
            after = page.next

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"AsyncClient({self.sync.target!r})"
