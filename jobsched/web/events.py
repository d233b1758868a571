"""Run events for everyone who watches: a hub with a ring of recent events,
and the Server-Sent Events stream that reads it (``GET /v1/events``).

The dispatcher's events (``Dispatcher.events``) and the runs the service
follows in the store's tables (``web.follow``) are published here; each gets
an id, ``<boot>-<n>``: ``n`` counts up within the process and ``boot`` names
the process (its start time), so a client that reconnects to a restarted
service is not taken to be ahead of it. The ring keeps the last ``size``
events for reconnections: a client that comes back with ``Last-Event-ID``
gets what it missed, or, when that fell out of the ring (or the service
restarted), a comment saying so and everything the ring still holds.

A subscriber never has a queue of its own: it is a position in the ring. The
socket loop pulls from it only when its client has taken the previous part,
so a slow client falls behind in the ring (and then hears that it missed
some), never makes anything grow. The same bodies as ``--events``, one
``data:`` line each (JSON escapes line breaks), so ``curl -N`` shows one JSON
object per event.
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable
from typing import Any

RING = 1000
HEARTBEAT_S = 15.0  # proxies close a connection that says nothing for about a minute
RETRY_MS = 2000
SEEN_KEYS = 4096  # events published under a key, remembered to drop a second copy


class EventHub:
    """Thread-safe: any thread publishes; the socket loop pulls."""

    def __init__(self, size: int = RING, heartbeat_s: float = HEARTBEAT_S) -> None:
        self.boot = format(int(time.time() * 1000), "x")
        self.heartbeat_s = heartbeat_s
        self._lock = threading.Lock()
        self._ring: deque[tuple[int, bytes]] = deque(maxlen=size)
        self._next = 1
        self._keys: deque[Hashable] = deque(maxlen=SEEN_KEYS)
        self._key_set: set[Hashable] = set()
        self._wakers: list[Callable[[], None]] = []
        self._listeners: list[Callable[[dict[str, Any]], None]] = []

    def publish(self, body: dict[str, Any], key: Hashable | None = None) -> bool:
        """Add an event; False (and nothing added) when one with the same key was
        already published: a run both the dispatcher and the store report."""
        data = json.dumps(body)
        with self._lock:
            if key is not None:
                if key in self._key_set:
                    return False
                if len(self._keys) == self._keys.maxlen:
                    self._key_set.discard(self._keys[0])
                self._keys.append(key)
                self._key_set.add(key)
            n = self._next
            self._next += 1
            self._ring.append((n, f"id: {self.boot}-{n}\ndata: {data}\n\n".encode()))
            wakers, listeners = list(self._wakers), list(self._listeners)
        for wake in wakers:
            wake()
        for listener in listeners:
            listener(body)
        return True

    def listen(self, listener: Callable[[dict[str, Any]], None]) -> None:
        """Call ``listener`` with every event published from now on (in the
        publisher's thread: it must be quick and must not raise)."""
        with self._lock:
            self._listeners.append(listener)

    def subscribe(self, last_event_id: str | None = None) -> Subscription:
        """A stream that starts after ``last_event_id`` (what the client saw
        last), or with the next event when it is None."""
        with self._lock:
            oldest = self._ring[0][0] if self._ring else self._next
            start, note = self._next, ""
            if last_event_id is not None:
                start, note = self._resume_at(last_event_id.strip(), oldest)
        return Subscription(self, start, note)

    def _resume_at(self, last: str, oldest: int) -> tuple[int, str]:
        boot, _, n = last.rpartition("-")
        if boot != self.boot or not n.isdigit():
            return oldest, "the service restarted since your last event; earlier events are lost"
        after = min(int(n) + 1, self._next)
        if after < oldest:
            return oldest, f"{oldest - after} event(s) since your last one are lost"
        return after, ""

    def _read(self, start: int) -> tuple[list[bytes], int, int]:
        """The frames from ``start`` on, the next position, how many were lost."""
        with self._lock:
            oldest = self._ring[0][0] if self._ring else self._next
            lost = max(oldest - start, 0)
            start = max(start, oldest)
            frames = [f for _, f in itertools.islice(self._ring, start - oldest, None)]
            return frames, self._next, lost

    def _attach(self, wake: Callable[[], None]) -> None:
        with self._lock:
            if wake not in self._wakers:
                self._wakers.append(wake)

    @property
    def last_id(self) -> int:
        with self._lock:
            return self._next - 1


class Subscription:
    """One client's place in the ring: a ``jobsched.http_stream.Stream``."""

    def __init__(self, hub: EventHub, start: int, note: str) -> None:
        self.hub = hub
        self.next = start
        self.closed = False
        self._last_sent = time.monotonic()
        # Sent first: how long to wait before reconnecting, and what was lost.
        first = f"retry: {RETRY_MS}\n: jobsched run events\n\n"
        if note:
            first += f": {note}\n\n"
        self.first = first.encode()

    def attach(self, wake: Callable[[], None]) -> None:
        self.hub._attach(wake)

    def pull(self, now: float) -> bytes | None:
        if self.closed:
            return None
        frames, self.next, lost = self.hub._read(self.next)
        if lost:
            frames.insert(
                0, f": {lost} event(s) were lost: this client read too slowly\n\n".encode()
            )
        if frames:
            self._last_sent = now
            return b"".join(frames)
        if now - self._last_sent >= self.hub.heartbeat_s:
            self._last_sent = now
            return b": keep-alive\n\n"
        return b""

    def close(self) -> None:
        self.closed = True
