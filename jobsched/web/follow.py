"""Follow the runs of every process that shares the store, for the event stream.

A dispatcher tells only its own process about its runs. To show the runs of
other nodes on the same PostgreSQL database (or other processes on the same
SQLite file), and runs made through the API (``POST /v1/jobs/{id}/run``),
the service reads the store's tables every ``POLL_S``:

- ``runs`` rows with a higher id than the last seen become ``succeeded``,
  ``failed``, ``lost`` or ``skipped`` events (with ``node`` and
  ``"source": "store"``). PostgreSQL hands out ids before commit, so a
  transaction can commit a lower id after a higher one was read: ids skipped
  over are asked for again for ``HOLE_S`` seconds (a rolled-back insert never
  comes).
- jobs that turned ``running`` since the last poll become ``started`` events
  (a run shorter than a poll may show only its end), but for the jobs this
  process's own dispatcher holds (``own``): it reports their starts itself,
  with the occurrence each run stands for, which the table no longer shows
  (a claimed recurring job is due at its next occurrence already), so a key
  made from the table's could never match its report of the same start.

A row the dispatcher of this process reports too is published once: the
hub drops the second copy by key (job, time). A row is held for one poll
before it is published, so that this process's dispatcher, which publishes
right after its commit, is the one heard (its events carry due times and
lateness). Latency for other nodes' runs: one to two polls (0.5-1 s).
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from jobsched.errors import JobschedError
from jobsched.timefmt import format_ms
from jobsched.web.events import EventHub
from jobsched.web.sqlread import Reader, Row

log = logging.getLogger("jobsched.web")

POLL_S = 0.5
HOLE_S = 10.0
MAX_HOLES = 1000
BATCH = 1000

_RUNS = (
    "SELECT r.id, r.job_id, r.started_at, r.finished_at, r.outcome, r.error, r.node, j.task "
    "FROM runs r LEFT JOIN jobs j ON j.job_id = r.job_id WHERE r.id > ?{holes} "
    "ORDER BY r.id LIMIT ?"
)
_RUNNING = "SELECT job_id, task, due_at, locked_by, touched_ms FROM jobs WHERE state = 'running'"


# The run record's outcome for each event a dispatcher reports.
_RECORDED_AS = {"timed_out": "failed", "released": "lost"}


def run_key(body: dict[str, Any]) -> tuple[str, str, str]:
    """What makes a run event the same whoever reports it (the dispatcher, or
    the store's tables): the job, the outcome as recorded, and the time (a
    start's due time: the follower cannot know when it was claimed exactly)."""
    event = str(body.get("event"))
    at = body.get("due_at") if event == "started" else body.get("at")
    return (str(body.get("job_id")), _RECORDED_AS.get(event, event), str(at))


class RunFollower:
    """A thread that polls the store's tables and publishes what it finds."""

    def __init__(
        self, reader: Reader, hub: EventHub, poll_s: float = POLL_S, own: str | None = None
    ) -> None:
        self.reader = reader
        self.hub = hub
        self.poll_s = poll_s
        self.own = own  # the owner this process's dispatcher claims as
        self._last_id: int | None = None
        self._holes: dict[int, float] = {}  # id -> until when it is asked for
        self._held: list[tuple[tuple[str, str, str], dict[str, Any]]] = []
        self._running: set[tuple[str, Any]] = set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="jobsched-follow", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5.0)
        self.reader.close()

    def _loop(self) -> None:
        failing = False
        while not self._stop.wait(self.poll_s):
            try:
                self.poll(time.monotonic())
                failing = False
            except JobschedError as exc:
                if not failing:  # one line per outage, not one per poll
                    log.warning("following runs in the store: %s", exc.text)
                failing = True
            except Exception:
                log.exception("following runs in the store failed")

    def poll(self, now: float) -> None:
        """Publish what the last poll held, then read what is new and hold it."""
        for key, body in self._held:
            self.hub.publish(body, key)
        self._held = []
        if self._last_id is None:  # the first poll: runs from now on, not history
            row = self.reader.rows("SELECT max(id) FROM runs")[0]
            self._last_id = int(row[0] or 0)
            self._running = {(r[0], r[2]) for r in self.reader.rows(_RUNNING)}
            return
        self._poll_runs(now)
        self._poll_running()

    def _poll_runs(self, now: float) -> None:
        self._holes = {i: t for i, t in self._holes.items() if t > now}
        holes = sorted(self._holes)
        marks = f" OR r.id IN ({', '.join('?' * len(holes))})" if holes else ""
        rows = self.reader.rows(_RUNS.format(holes=marks), (self._last_id, *holes, BATCH))
        last = self._last_id or 0
        for row in rows:
            run_id = int(row[0])
            self._holes.pop(run_id, None)
            if run_id > last:
                for gap in range(last + 1, min(run_id, last + 1 + MAX_HOLES)):
                    self._holes[gap] = now + HOLE_S
                last = run_id
            self._hold(_ended(row))
        self._last_id = last
        if len(self._holes) > MAX_HOLES:
            for gap in sorted(self._holes)[: len(self._holes) - MAX_HOLES]:
                del self._holes[gap]

    def _poll_running(self) -> None:
        rows = self.reader.rows(_RUNNING)
        seen = {(r[0], r[2]) for r in rows}
        for row in rows:
            if (row[0], row[2]) not in self._running and row[3] != self.own:
                self._hold(_started(row))
        self._running = seen

    def _hold(self, body: dict[str, Any]) -> None:
        self._held.append((run_key(body), body))


def _ended(row: Row) -> dict[str, Any]:
    _, job_id, started, finished, outcome, error, node, task = row
    body: dict[str, Any] = {
        "type": "run_event",
        "event": outcome,
        "job_id": job_id,
        "task": task,
        "due_at": None,
        "at": format_ms(int(finished)),
        "duration_ms": max(int(finished) - int(started), 0),
    }
    if error is not None:
        body["error"] = error
    body.update(node=node, source="store")
    return body


def _started(row: Row) -> dict[str, Any]:
    job_id, task, due, holder, touched = row
    return {
        "type": "run_event",
        "event": "started",
        "job_id": job_id,
        "task": task,
        "due_at": None if due is None else format_ms(int(due)),
        "at": format_ms(int(touched)),
        "node": holder,
        "source": "store",
    }
