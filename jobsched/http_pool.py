"""The serving threads of the HTTP service: complete requests in, answers out.

The socket loop (``jobsched.http_server``) hands each complete request to one
of a fixed pool of threads, which calls the handler. The handler either
answers at once, or (a write, ``jobsched.server_commit``) takes a callback and
answers later from the thread that commits it; the thread is then free for the
next request at once. Either way the answer is rendered where it is made and
handed back to the loop, which alone writes to sockets: a client that has its
answer finds its connection idle (evictable) in the loop's books, never still
counted as being served.

Hand-backs wake the loop through a socket pair, once for any number of them:
a thread that finds a wake-up already pending leaves it at that.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections import deque
from collections.abc import Callable
from typing import Generic, Protocol, TypeVar

from jobsched.http_conn import Head, Limits, Response, error, render
from jobsched.http_stream import Stream

log = logging.getLogger("jobsched.http")

# Called once with the request's response, from whichever thread made it.
Answer = Callable[[Response], None]
# method, target, the Authorization header, body, every header (names in lower
# case), and where to answer later: a response now, or None and ``Answer`` later.
Handler = Callable[[str, str, str | None, bytes, dict[str, str], Answer], Response | None]


class PoolConn(Protocol):
    """What the pool needs of the loop's connection objects."""

    peer: str


C = TypeVar("C", bound=PoolConn)


class Pool(Generic[C]):
    """``limits.threads`` daemon threads. The loop calls ``put`` and ``take``;
    ``stopping`` says whether answers must close their connection."""

    def __init__(
        self,
        handler: Handler,
        limits: Limits,
        stopping: threading.Event,
        wake_loop: Callable[[], None],
    ) -> None:
        self.handler = handler
        self.limits = limits
        self._stopping = stopping
        self._wake_loop = wake_loop
        # (connection, rendered answer, keep the connection, stream) for the loop.
        self._done: deque[tuple[C, bytes, bool, Stream | None]] = deque()
        self._woken = False  # a wake-up is on its way to the loop
        self._jobs: queue.SimpleQueue[tuple[C, Head, bytes] | None] = queue.SimpleQueue()
        for i in range(limits.threads):
            threading.Thread(target=self._work, name=f"jobsched-http-{i}", daemon=True).start()

    def put(self, conn: C, head: Head, body: bytes) -> None:
        """A complete request for the threads (its connection is now theirs)."""
        self._jobs.put((conn, head, body))

    def take(self) -> list[tuple[C, bytes, bool, Stream | None]]:
        """The answers made since the last call (the loop's thread)."""
        self._woken = False  # before taking: an answer after this wakes the loop again
        done = self._done
        return [done.popleft() for _ in range(len(done))]

    def close(self) -> None:
        """Let the threads end once the requests queued are served."""
        for _ in range(self.limits.threads):
            self._jobs.put(None)

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            self._serve(*job)

    def _serve(self, conn: C, head: Head, body: bytes) -> None:
        answered = False

        def later(response: Response) -> None:
            nonlocal answered
            if not answered:  # exactly one answer per request, whatever a handler does
                answered = True
                self._answer(conn, head, response)

        try:
            auth = head.headers.get("authorization")
            response = self.handler(head.method, head.target, auth, body, head.headers, later)
        except Exception:  # the service answers its own errors; this is a bug
            log.exception("crash serving %s %s", head.method, head.target)
            response = error(500, 13, f"internal error serving {head.method}")
        if response is not None:
            later(response)

    def _answer(self, conn: C, head: Head, response: Response) -> None:
        keep = head.keep_alive and not self._stopping.is_set()
        data = render(response, head, keep, self.limits.idle_timeout)
        log.debug('%s "%s %s" %d', conn.peer, head.method, head.target, response.status)
        self._done.append((conn, data, keep, response.stream))
        if not self._woken:
            self._woken = True
            self._wake_loop()
