"""Streamed responses on the socket loop (Server-Sent Events): what a stream
is, and the loop's book of streaming connections.

A stream is a response body with no end known in advance. Serving one must
not cost a thread: the thread that answered the request hands the stream to
the loop and is free at once. From then on the loop asks the stream for more
(``pull``) whenever the stream said it has news (``wake``, from any thread)
and once a second (heartbeats), and only when the client has taken the last
part: a slow reader falls behind inside the stream, never in a buffer here.

Streams have their own bound (``--max-event-streams``): they are not counted
against ``--max-connections``, which protects requests from stalled clients,
and they are never closed to make room there; one past the bound gets 503.
A stream whose client takes nothing for the send timeout is closed (the
client reconnects and resumes from its last event id).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Generic, Protocol, TypeVar

log = logging.getLogger("jobsched.http")

PULL_EVERY_S = 1.0  # streams are asked for heartbeats this often, besides wake-ups


class Stream(Protocol):
    """A body that goes on after ``Response.body``."""

    def attach(self, wake: Callable[[], None]) -> None:
        """From now on call ``wake`` (from any thread) when there is more."""

    def pull(self, now: float) -> bytes | None:
        """What to send next (b"" for nothing yet); None ends the stream."""

    def close(self) -> None:
        """The connection is gone: let go of what the stream holds."""


class StreamConn(Protocol):
    """What the book needs of the loop's connection objects."""

    out: bytes  # not yet taken by the client
    deadline: float
    stream: Stream | None


C = TypeVar("C", bound=StreamConn)


class Streams(Generic[C]):
    """The streaming connections of one loop. Only the loop's thread calls
    these methods, except ``woken``."""

    def __init__(self, limit: int, send_timeout: float, wake_loop: Callable[[], None]) -> None:
        self.limit = limit
        self.send_timeout = send_timeout
        self._wake_loop = wake_loop
        self.conns: set[C] = set()
        self._news = False
        self._next_pull = 0.0

    def __len__(self) -> int:
        return len(self.conns)

    def woken(self) -> None:
        """A stream has news (called from any thread)."""
        self._news = True
        self._wake_loop()

    def full(self) -> bool:
        return len(self.conns) >= self.limit

    def adopt(self, conn: C, head: bytes, stream: Stream, now: float) -> None:
        """``head``: the status line, headers and first part, to write first."""
        self.conns.add(conn)
        conn.stream, conn.out, conn.deadline = stream, head, now + self.send_timeout
        stream.attach(self.woken)

    def due(self, now: float) -> bool:
        return self._news or now >= self._next_pull

    def pull(self, now: float) -> tuple[list[C], list[C]]:
        """Ask every stream whose client is caught up for more: (connections
        that now have something to write, connections whose stream ended)."""
        self._news = False
        self._next_pull = now + PULL_EVERY_S
        ready: list[C] = []
        ended: list[C] = []
        for conn in self.conns:
            if conn.out or conn.stream is None:
                continue  # the client has not taken the last part: more waits in the stream
            data = conn.stream.pull(now)
            if data is None:
                ended.append(conn)
            elif data:
                conn.out, conn.deadline = data, now + self.send_timeout
                ready.append(conn)
        return ready, ended

    def stalled(self, now: float) -> list[C]:
        """Streams whose client has not taken its last part within the timeout."""
        return [c for c in self.conns if c.out and now >= c.deadline]

    def discard(self, conn: C) -> None:
        """Forget the connection and end its stream (it may not be one of ours)."""
        self.conns.discard(conn)
        stream, conn.stream = conn.stream, None
        if stream is not None:
            stream.close()
