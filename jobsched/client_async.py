"""``jobsched.AsyncClient``: the ``Client`` for asyncio applications.

Each method runs the same method of a ``Client`` in a worker thread
(``asyncio.to_thread``), so the event loop never waits on a database or a
socket; the methods, arguments, results and errors are the ``Client``'s::

    async with AsyncClient("http://127.0.0.1:8080", token=TOKEN) as client:
        job = await client.schedule("send-email", {"to": "a@example.com"}, delay_ms=60_000)

``connection=`` (``schedule``, ``schedule_many``) writes the jobs inside the
application's open transaction, as the ``Client``'s does:

- a ``psycopg.AsyncConnection`` (PostgreSQL targets): the ``Client`` call still
  runs in the worker thread, with the store's own SQL, and each of its
  statements is run on that connection by this event loop
  (``client_async_pg``), so the loop goes on serving other tasks meanwhile.
  Rolled back, there is no job; committed, the job exists and the NOTIFY sent
  at the commit wakes running nodes. A cancelled call first ends (its
  statements never reach the connection after the ``CancelledError``): roll
  back, as ``async with conn.transaction()`` does, to be sure of no job;
- what the ``Client`` takes, used from the worker thread: a
  ``psycopg.Connection``, or a ``sqlite3.Connection`` made with
  ``check_same_thread=False`` (aiosqlite connections are not supported).

An ``AsyncConnection`` given to the ``Client``, or with a SQLite or HTTP
target, is refused with ``WrongConnection`` (code 12).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable, Coroutine
from types import TracebackType
from typing import TYPE_CHECKING, Any, Concatenate, ParamSpec, TypeVar, cast

from jobsched.client import Client
from jobsched.client_transports import is_async_psycopg
from jobsched.client_types import Job, JobState

if TYPE_CHECKING:
    import psycopg

__all__ = ["AsyncClient"]

P = ParamSpec("P")
R = TypeVar("R")


def _in_thread(
    method: Callable[Concatenate[Client, P], R],
) -> Callable[Concatenate[AsyncClient, P], Coroutine[Any, Any, R]]:
    """``Client.method`` as a coroutine method of AsyncClient, run in a thread."""

    async def call(self: AsyncClient, /, *args: P.args, **kwargs: P.kwargs) -> R:
        if is_async_psycopg(kwargs.get("connection")):
            return await _on_async_connection(method, self.sync, *args, **kwargs)
        return await asyncio.to_thread(method, self.sync, *args, **kwargs)

    call.__name__, call.__doc__ = method.__name__, method.__doc__
    return call


async def _on_async_connection(
    method: Callable[Concatenate[Client, P], R],
    client: Client,
    /,
    *args: P.args,
    **kwargs: P.kwargs,
) -> R:
    """``method`` in a worker thread, its statements run on the application's
    ``psycopg.AsyncConnection`` on this loop (``client_async_pg``).

    Cancelled, it still waits for the worker's call to end before the
    ``CancelledError`` goes on: a statement of ours must never reach the
    connection after the await is over (after the application's rollback it
    would start a transaction of its own there)."""
    from jobsched.client_async_pg import LoopConnection

    aconn = cast("psycopg.AsyncConnection[Any]", kwargs["connection"])
    kwargs["connection"] = LoopConnection(aconn, asyncio.get_running_loop())
    work = asyncio.ensure_future(asyncio.to_thread(method, client, *args, **kwargs))
    try:
        return await asyncio.shield(work)
    except asyncio.CancelledError:
        await asyncio.wait({work})
        raise


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
        self,
        state: JobState | str | None = None,
        task: str | None = None,
        page_size: int = 100,
        *,
        queue: str | None = None,
    ) -> AsyncIterator[Job]:
        """Every job matching, in scheduling order, a page at a time."""
        after: str | None = None
        while True:
            page = await asyncio.to_thread(
                self.sync.list, state, task, page_size, after, queue=queue
            )
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
