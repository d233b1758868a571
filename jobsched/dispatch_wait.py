"""When the dispatcher looks at the store again, and how it sleeps until then.

Between rounds the dispatcher sleeps until the earliest of its times (the
next due job, a run's deadline, its lease renewal, maintenance) or a wake-up,
and at most ``poll_ms`` (1 s by default: another process sharing the store
may add jobs it is not told of). Wake-ups (``Sleeper``):

- its own: a job scheduled through this process, a run ended on its workers
  (the slot is free once the outcome is written), shutdown;
- the store's (``WakeupListener``): on PostgreSQL a NOTIFY when a commit
  makes a job due sooner than every other, or when a run of a queue with a
  concurrency limit ends (a slot is free); on SQLite any commit of another
  connection (``PRAGMA data_version``).

**Blocked**: due jobs are left that a claim could not take (a full, paused or
rate-limited queue, or one outside ``--queues``). The dispatcher does not poll
for them: it sleeps until a wake-up above, or until a rate-limit window opens
(``QueueLimits``), and otherwise at most ``poll_ms``, the fallback for what
nobody announces (a slot freed by a dead node's lease running out, a queue
unpaused by another process on a SQLite file, a run ending on a store
without notifications). docs/queues.md has the user's side of this.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable

from jobsched.errors import JobschedError
from jobsched.jobs import Job
from jobsched.queues import QueueSettings
from jobsched.stores.base import WakeupListener
from jobsched.timefmt import now_ms

log = logging.getLogger("jobsched.dispatcher")

# How often a blocked dispatcher reads the queues' settings again (the rate
# limits and their windows): a settings change is seen within this.
SETTINGS_MS = 60_000
# Starts this node made in queues not known to be rate-limited, kept for a
# limit read later.
OTHERS = 1024


class Sleeper:
    """The dispatcher's sleep: on a plain Event, or on the store's listener
    (which also ends on the Event's ``wake``)."""

    def __init__(self, listener: WakeupListener | None) -> None:
        self.event = threading.Event()
        self._listener = listener

    def start(self) -> None:
        if self._listener is not None:
            # LISTEN before the first next_due read: no wake-up is missed.
            self._listener.wait_for_wakeup(0)

    def wake(self) -> None:
        self.event.set()
        if self._listener is not None:
            self._listener.wake()

    def sleep(self, timeout_s: float) -> None:
        if self._listener is None or self.event.is_set():
            self.event.wait(timeout_s)
        else:
            self._listener.wait_for_wakeup(timeout_s)


def timeout_s(at: int | None, clock: Callable[[], int], poll_ms: int, grace: float | None) -> float:
    """How long to sleep for a look at ``at`` (ms on ``clock``): at most
    ``poll_ms``, and not past the shutdown grace (``grace``, monotonic s)."""
    limit = poll_ms / 1000
    if grace is not None:
        limit = min(limit, max(grace - time.monotonic(), 0.0) + 0.001)
    if at is None:
        return limit
    # The wall clock in float ms wakes us on the due millisecond, not up to 1 ms later.
    now = time.time() * 1000 if clock is now_ms else clock()
    return min(max((at - now) / 1000, 0.0), limit)


class QueueLimits:
    """What this node knows of the queues' rate limits: when its rate-limited
    queues open a window again (``opens_at``).

    A window of ``max`` starts per ``per_ms`` opens when its oldest start
    leaves it. A node knows only its own starts (those it claimed), so it
    looks again when its oldest start in the window leaves; the starts of
    other nodes can only be older, and each of those nodes looks when its own
    leaves. So every window opening is seen by the node whose start made
    room, without anyone polling.

    The rate limits come from the store's queue settings (one small table):
    read only while blocked, and at most every SETTINGS_MS, so a limit set
    meanwhile is first left to the poll.
    Starts in queues not known to be limited are kept (the latest OTHERS) so
    that a limit read later knows the starts already made.
    """

    def __init__(self, read: Callable[[], list[QueueSettings]]) -> None:
        self._read = read
        self._rated: dict[str, QueueSettings] = {}
        self._read_at: float | None = None  # monotonic s of the last read
        self._starts: dict[str, deque[int]] = {}  # of rated queues, at most max each
        self._others: deque[tuple[int, str]] = deque(maxlen=OTHERS)

    def claimed(self, jobs: list[Job], now: int) -> None:
        """This node claimed ``jobs`` at ``now`` (the time the store counts their starts at)."""
        for job in jobs:
            self._add(job.queue, now)

    def opens_at(self, now: int) -> int | None:
        """The earliest time one of this node's windows opens (None: none
        known). Called when blocked: reads the settings if they are old."""
        self._refresh()
        best: int | None = None
        for name, starts in self._starts.items():
            per_ms = self._rated[name].rate_per_ms or 0
            while starts and starts[0] <= now - per_ms:
                starts.popleft()
            if starts:
                at = starts[0] + per_ms
                best = at if best is None else min(best, at)
        return best

    def _refresh(self) -> None:
        mono = time.monotonic()
        if self._read_at is not None and (mono - self._read_at) * 1000 < SETTINGS_MS:
            return
        self._read_at = mono
        try:
            settings = self._read()
        except JobschedError as exc:  # the store is down: the poll holds
            log.info("cannot read the queue settings: %s", exc.text)
            return
        self._rated = {q.name: q for q in settings if q.rate_max}
        known = [(at, name) for name, starts in self._starts.items() for at in starts]
        self._starts, others = {}, self._others
        self._others = deque(maxlen=OTHERS)
        for at, name in sorted([*known, *others]):
            self._add(name, at)

    def _add(self, queue: str, at: int) -> None:
        q = self._rated.get(queue)
        if q is None:
            self._others.append((at, queue))
        else:
            self._starts.setdefault(queue, deque(maxlen=q.rate_max)).append(at)
