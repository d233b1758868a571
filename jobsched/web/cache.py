"""Values that cost a table scan, computed for every viewer together.

Counting a million jobs by state takes ~0.1-0.3 s. A ``Cached`` value is
computed by one thread of its own, never by the request that asks: fresh
values (younger than the time to live) are served as they are; a stale one
(younger than ``stale_s``) is served at once while the thread computes the
next, so a watched dashboard never waits; with none, or one too old to
show, the request waits for the thread. The time to live grows with the
cost, to at least ten times the last computation, so a slow count costs at
most a tenth of one core however many people watch. Two values asked for
together (``Cached.ask`` on each, then ``get``) compute in parallel.

``Cheapest`` computes a value the fastest of several ways, as measured here.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

from jobsched.errors import Unavailable

log = logging.getLogger("jobsched.web")

T = TypeVar("T")
STALE_S = 30.0  # older than this, a value is not shown: the request waits for a new one
WAIT_S = 30.0


class Cached(Generic[T]):
    def __init__(self, ttl_s: float, compute: Callable[[], T], stale_s: float = STALE_S) -> None:
        self.ttl_s, self.compute, self.stale_s = ttl_s, compute, stale_s
        self._cond = threading.Condition()
        self._value: tuple[float, T] | None = None  # (when, value)
        self._error: Exception | None = None
        self._wanted = False
        self._cost = 0.0
        self._thread: threading.Thread | None = None

    def _age(self) -> float | None:
        return None if self._value is None else time.monotonic() - self._value[0]

    def ask(self) -> bool:
        """See that a value is there or coming; True when ``get`` must wait
        for it (there is none, or it is too old to show)."""
        with self._cond:
            age = self._age()
            if age is not None and age < max(self.ttl_s, 10 * self._cost):
                return False
            if not self._wanted:
                self._wanted = True
                if self._thread is None:
                    self._thread = threading.Thread(
                        target=self._loop, name="jobsched-web-cache", daemon=True
                    )
                    self._thread.start()
                self._cond.notify_all()
            return age is None or age >= self.stale_s

    def get(self, wait: bool) -> tuple[T, float]:
        """The value and its age in seconds; with ``wait``, the one being computed.
        Raises what the computation raised when there is nothing to show."""
        with self._cond:
            if wait and not self._cond.wait_for(lambda: not self._wanted, WAIT_S):
                raise Unavailable(f"no answer from the store within {WAIT_S:g} s")
            age = self._age()
            if self._value is None or age is None or (wait and self._error and age >= self.stale_s):
                raise self._error or Unavailable("nothing computed yet")
            return self._value[1], age

    def value(self) -> tuple[T, float]:
        """``ask`` then ``get``: the value, computed now only if it must be."""
        return self.get(self.ask())

    def forget(self) -> None:
        """Drop the value: the next ``value`` computes a new one and waits (benchmarks)."""
        with self._cond:
            self._value = None

    def _loop(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._wanted)
            start = time.monotonic()
            try:
                value, error = self.compute(), None
            except Exception as exc:  # kept for the waiting request; the last value stays
                value, error = None, exc
                log.debug("dashboard query failed: %s", exc)
            with self._cond:
                if error is None:
                    self._value = (time.monotonic(), value)  # type: ignore[assignment]
                    self._cost = time.monotonic() - start
                self._error, self._wanted = error, False
                self._cond.notify_all()


class Cheapest(Generic[T]):
    """Of several ways to compute the same value, the one measured fastest
    lately. Each is tried once (in the order given), then the fastest is
    used, and every ``remeasure``-th call the one measured longest ago runs
    instead: what is fastest changes with the data (an index-only count
    loses to a table scan while the visibility map is stale). Called by one
    thread at a time (a ``Cached``'s)."""

    def __init__(self, ways: dict[str, Callable[[], T]], remeasure: int = 10) -> None:
        self.ways, self.remeasure = ways, remeasure
        self.cost: dict[str, float] = {}
        self._when: dict[str, int] = {}  # name -> the call that last measured it
        self._calls = 0

    def __call__(self) -> T:
        self._calls += 1
        untried = [name for name in self.ways if name not in self.cost]
        if untried:
            name = untried[0]
        elif self._calls % self.remeasure == 0:
            name = min(self.ways, key=lambda n: self._when[n])
        else:
            name = min(self.ways, key=lambda n: self.cost[n])
        start = time.monotonic()
        value = self.ways[name]()
        self.cost[name], self._when[name] = time.monotonic() - start, self._calls
        return value
