"""What the dashboard's pages read beyond the protocol's messages: counts by
state, runs and failures per minute, dispatch lateness, upcoming runs, recent
failures, queues.

Bounded work whatever the number of jobs: counts by state are one
``count(*)`` per state (each an index-only range of ``jobs_state``, ~0.1 s
at a million jobs) or one ``GROUP BY`` scan, whichever is measured faster,
on a connection of their own, and runs per minute read the last hour of
``runs`` through its ``recorded_ms`` index, both computed off the request,
for every viewer together, at most once per ``COUNTS_TTL_S`` /
``RUNS_TTL_S`` (``cache``); queues' counts (by queue and state: the whole
table, or the jobs not completed, whichever is faster) the same way, only
while someone looks at them; upcoming runs walk
``jobs_due`` in due order and stop at the cap; failures read the newest
dead and retrying jobs through ``jobs_state`` backwards. SQL stores are read
on the dashboard's own connection (``sqlread``); the memory store through
its interface, and its runs per minute from this process's own events.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

from jobsched.engine import Engine
from jobsched.jobs import ALL_STATES, Job, JobState
from jobsched.queues import QueueReport, QueueSettings
from jobsched.stores.sql_queues import settings_from
from jobsched.stores.sqlite_schema import SELECT, job_from_row
from jobsched.timefmt import format_ms
from jobsched.web.cache import Cached, Cheapest
from jobsched.web.events import EventHub
from jobsched.web.sqlread import Reader

COUNTS_TTL_S = 2.0
RUNS_TTL_S = 5.0
QUEUES_TTL_S = 5.0
MINUTE_MS = 60_000
HOUR_MS = 3_600_000
MAX_UPCOMING = 1000
LATENESS_SAMPLES = 5000
MAX_ERROR_TEXT = 500
ENDED = frozenset({"succeeded", "failed", "timed_out", "lost", "released"})
FAILED = ("dead", "retrying")
PRIORITIES = range(10)  # job priorities, where the store has them (0-9)
# Counting by state, two ways (the faster one measured is used, ``Cheapest``).
# By index: one count per state, each its range of jobs_state read
# index-only, the plan pinned (PostgreSQL's planner would read the largest
# state, completed, from the heap: by a seq scan, or in parallel through
# jobs_final, 0.25-0.55 s at a million jobs); ~0.1 s at a million jobs, as it
# only counts index entries. By scan: one GROUP BY state, as the planner likes
# (a parallel seq scan, 0.2-0.3 s). The scan wins when the visibility map is
# stale (many rows changed since the last vacuum): an index-only scan then
# visits the table page by page, 0.6-1.2 s with every page changed.
COUNT_BY_INDEX = " UNION ALL ".join(
    f"SELECT '{s.value}', count(*) FROM jobs WHERE state = '{s.value}'" for s in ALL_STATES
)
INDEX_PLAN = ("SET LOCAL enable_seqscan = off", "SET LOCAL max_parallel_workers_per_gather = 0")
COUNT_BY_SCAN = "SELECT state, count(*) FROM jobs GROUP BY state"
# Counting by queue and state, two ways too (no index holds both). By scan:
# one GROUP BY (PostgreSQL ~0.4 s at a million jobs; SQLite 3-5 s, its rows
# sorted in a temporary b-tree). By index: each queue's total from jobs_queue
# and the states but completed from jobs_state; completed is the rest (SQLite
# ~1.2 s, PostgreSQL ~0.6 s: it reads the rows of every job not completed).
QueueCounts = dict[str, dict[JobState, int]]
QUEUES_BY_SCAN = "SELECT queue, state, count(*) FROM jobs GROUP BY queue, state"
_NOT_COMPLETED = ", ".join(f"'{s.value}'" for s in ALL_STATES if s is not JobState.COMPLETED)
QUEUES_BY_INDEX = {
    sqlite: f"SELECT queue, '', count(*) FROM jobs{by_queue} GROUP BY queue UNION ALL "
    f"SELECT queue, state, count(*) FROM jobs{by_state} WHERE state IN ({_NOT_COMPLETED}) "
    "GROUP BY queue, state"
    for sqlite, by_queue, by_state in (
        (True, " INDEXED BY jobs_queue", " INDEXED BY jobs_state"),
        (False, "", ""),
    )
}


class LocalRuns:
    """This process's runs from its event stream: lateness samples, and runs
    per minute for a store without a runs table to read."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.lateness: deque[tuple[int, int]] = deque(maxlen=LATENESS_SAMPLES)
        self.minutes: dict[int, list[int]] = {}

    def note(self, body: dict[str, Any]) -> None:
        if body.get("source") == "store":
            return
        now = int(time.time() * 1000)
        with self._lock:
            if body.get("event") == "started" and "lateness_ms" in body:
                self.lateness.append((now, int(body["lateness_ms"])))
            elif body.get("event") in ENDED:
                counts = self.minutes.setdefault(now // MINUTE_MS, [0, 0])
                counts[0] += 1
                counts[1] += body.get("event") != "succeeded"
                for old in [m for m in self.minutes if m < now // MINUTE_MS - 61]:
                    del self.minutes[old]

    def lateness_since(self, since: int) -> list[int]:
        with self._lock:
            return sorted(ms for at, ms in self.lateness if at >= since)


class Queries:
    """``reader`` serves the pages' reads; ``counter``, a second connection to
    the same database, the counts, so that they run in parallel with runs per
    minute and never hold up a page's read."""

    def __init__(
        self, engine: Engine, reader: Reader | None, hub: EventHub, counter: Reader | None = None
    ) -> None:
        self.engine = engine
        self.reader = reader
        self.counter = counter or reader
        self.local = LocalRuns()
        hub.listen(self.local.note)
        self.by_state = Cheapest({"index": self._count_by_index, "scan": self._count_by_scan})
        self.counts = Cached(COUNTS_TTL_S, self._counts)
        self.runs = Cached(RUNS_TTL_S, self._runs_per_minute)
        ways = {"scan": self._queues_by_scan, "index": self._queues_by_index}
        if counter is not None and counter.kind == "sqlite":  # the faster there: first
            ways = {"index": self._queues_by_index, "scan": self._queues_by_scan}
        self.by_queue = Cheapest(ways)
        self.queue_counts = Cached(QUEUES_TTL_S, self.by_queue)
        self._arms: list[tuple[str, tuple[Any, ...]]] | None = None

    def _counts(self) -> dict[str, Any]:
        nodes = self.engine.nodes(self.engine.wall_clock())
        if self.counter is None:
            return {"jobs": self.engine.stats(), "nodes": nodes}
        counts = self.by_state()
        return {"jobs": {s.value: int(counts.get(s.value, 0)) for s in ALL_STATES}, "nodes": nodes}

    def _count_by_index(self) -> dict[str, int]:
        assert self.counter is not None
        return dict(self.counter.rows(COUNT_BY_INDEX, (), INDEX_PLAN))

    def _count_by_scan(self) -> dict[str, int]:
        assert self.counter is not None
        return dict(self.counter.rows(COUNT_BY_SCAN))

    def overview(self) -> dict[str, Any]:
        # Both asked first: when they must be computed, they are in parallel.
        waits = (self.counts.ask(), self.runs.ask())
        counts, age = self.counts.get(waits[0])
        runs, _ = self.runs.get(waits[1])
        jobs: dict[str, int] = counts["jobs"]
        out: dict[str, Any] = {
            "jobs": jobs,
            "total": sum(jobs.values()),
            "counted_s_ago": round(age, 1),
            "runs_per_minute": runs,
            "runs_from": "this process" if self.reader is None else "the store",
            "lateness": self._lateness(),
            "nodes": None,
        }
        if counts["nodes"] is not None:
            out["nodes"] = [
                {"node_id": n, "last_seen": format_ms(last), "jobs_held": held}
                for n, last, held in counts["nodes"]
            ]
        return out

    def _lateness(self) -> dict[str, Any]:
        samples = self.local.lateness_since(int(time.time() * 1000) - HOUR_MS)
        if not samples:
            return {"count": 0}
        n = len(samples)
        return {
            "count": n,
            "p50_ms": samples[n // 2],
            "p95_ms": samples[min(n - 1, n * 95 // 100)],
            "max_ms": samples[-1],
        }

    def _runs_per_minute(self) -> list[dict[str, Any]]:
        """The last 60 whole minutes and the current one, oldest first."""
        this = int(time.time() * 1000) // MINUTE_MS
        first = this - 60
        counts: dict[int, tuple[int, int]]
        if self.reader is None:
            with self.local._lock:
                counts = {m: (c[0], c[1]) for m, c in self.local.minutes.items()}
        else:
            rows = self.reader.rows(
                "SELECT recorded_ms / 60000, count(*), "
                "sum(CASE WHEN outcome = 'succeeded' THEN 0 ELSE 1 END) FROM runs "
                "WHERE recorded_ms >= ? AND outcome <> 'skipped' GROUP BY recorded_ms / 60000",
                (first * MINUTE_MS,),
            )
            counts = {int(m): (int(n), int(f)) for m, n, f in rows}
        return [
            {"minute": format_ms(m * MINUTE_MS), "runs": counts.get(m, (0, 0))[0],
             "failures": counts.get(m, (0, 0))[1]}
            for m in range(first, this + 1)
        ]  # fmt: skip

    # -- queues -----------------------------------------------------------------

    def queues(self) -> dict[str, Any]:
        """Every queue with settings or jobs (as ``list_queues`` answers): the
        settings read now (a pause shows at once), the counts cached."""
        if self.reader is None:
            return {"queues": [q.to_json() for q in self.engine.queues()], "counted_s_ago": 0.0}
        counts, age = self.queue_counts.value()
        rows = self.reader.rows(
            "SELECT name, concurrency, rate_max, rate_per_ms, paused FROM queues"
        )
        settings = {q.name: q for q in map(settings_from, rows)}
        names = sorted(set(settings) | set(counts))
        reports = [QueueReport(settings.get(n, QueueSettings(n)), counts.get(n, {})) for n in names]
        return {"queues": [q.to_json() for q in reports], "counted_s_ago": round(age, 1)}

    def _queues_by_scan(self) -> QueueCounts:
        assert self.counter is not None
        counts: QueueCounts = {}
        for queue, state, n in self.counter.rows(QUEUES_BY_SCAN):
            counts.setdefault(str(queue), {})[JobState(state)] = int(n)
        return counts

    def _queues_by_index(self) -> QueueCounts:
        """Each queue's jobs (jobs_queue, index-only) and its jobs in every state
        but completed (jobs_state, then each row): completed is the rest. One
        statement, so one snapshot."""
        assert self.counter is not None
        hint = self.counter.kind == "sqlite"
        totals: dict[str, int] = {}
        counts: QueueCounts = {}
        for queue, state, n in self.counter.rows(QUEUES_BY_INDEX[hint]):
            if state == "":
                totals[str(queue)] = int(n)
            else:
                counts.setdefault(str(queue), {})[JobState(state)] = int(n)
        for queue, total in totals.items():
            mine = counts.setdefault(queue, {})
            mine[JobState.COMPLETED] = total - sum(mine.values())
        return counts

    # -- upcoming ---------------------------------------------------------------

    def upcoming(self, now: int, hours: float, limit: int) -> dict[str, Any]:
        """Every run due within ``hours``: due times of scheduled and retrying
        jobs, and the occurrences of recurring ones (running ones too) within
        the window, in time order, at most ``limit``."""
        limit = max(1, min(limit, MAX_UPCOMING))
        end = now + int(hours * HOUR_MS)
        due, running = self._due_jobs(end, limit + 1)
        runs = heapq.merge(
            *(_occurrences(job, job.due_at or now, end) for job in due),
            *(_occurrences(job, job.next_occurrence(now), end, "next") for job in running),
        )
        items = list(itertools.islice(runs, limit + 1))
        return {
            "from": format_ms(now),
            "until": format_ms(end),
            "runs": [
                {
                    "at": format_ms(at),
                    "job_id": job.job_id,
                    "task": job.task,
                    "kind": kind,
                    "state": job.state.value,
                }
                for at, _, kind, job in items[:limit]
            ],
            "capped": len(items) > limit,
            "limit": limit,
        }

    def _due_jobs(self, end: int, limit: int) -> tuple[list[Job], list[Job]]:
        if self.reader is None:
            store = self.engine.store
            due = [
                j
                for state in (JobState.SCHEDULED, JobState.RETRYING)
                for j in _all(store.list_jobs, state)
                if j.due_at is not None and j.due_at <= end
            ]
            due.sort(key=lambda j: (j.due_at or 0, j.seq))
            running = [j for j in _all(store.list_jobs, JobState.RUNNING) if j.recurring]
            return due[:limit], running
        rows = []
        for arm, args in self._due_arms():
            rows += self.reader.rows(arm, (*args, end, limit))
        rows.sort(key=lambda r: (r[5], r[0]))  # (due_at, seq)
        del rows[limit:]
        held = self.reader.rows(
            f"SELECT {SELECT} FROM jobs WHERE state = 'running' AND sched_kind <> 'once'"
        )
        return [job_from_row(r) for r in rows], [job_from_row(r) for r in held]

    def _due_arms(self) -> list[tuple[str, tuple[Any, ...]]]:
        """Statements that read runnable jobs in due order along ``jobs_due``:
        one, or one per priority when the index leads with a priority column
        (one due range per priority, as claims read it)."""
        if self._arms is None:
            assert self.reader is not None
            hint = " INDEXED BY jobs_due" if self.reader.kind == "sqlite" else ""
            base = f"SELECT {SELECT} FROM jobs{hint} WHERE state IN ('scheduled', 'retrying') "
            tail = "AND due_at <= ? ORDER BY due_at, seq LIMIT ?"
            if "priority" in self.reader.columns("jobs"):
                arm = f"{base}AND priority = ? {tail}"
                self._arms = [(arm, (p,)) for p in PRIORITIES]
            else:
                self._arms = [(base + tail, ())]
        return self._arms

    # -- failures ---------------------------------------------------------------

    def failures(self, limit: int) -> list[dict[str, Any]]:
        """The newest dead and retrying jobs (by scheduling order, through the
        index), newest failure first."""
        limit = max(1, min(limit, 500))
        jobs: list[Job] = []
        for state in FAILED:
            if self.reader is None:
                jobs += list(deque(_all(self.engine.store.list_jobs, JobState(state)), limit))
            else:
                rows = self.reader.rows(
                    f"SELECT {SELECT} FROM jobs WHERE state = ? ORDER BY seq DESC LIMIT ?",
                    (state, limit),
                )
                jobs += [job_from_row(r) for r in rows]
        jobs.sort(key=lambda j: (j.updated_at, j.seq), reverse=True)
        return [_failure(j) for j in jobs[:limit]]


def _occurrences(
    job: Job, first: int | None, end: int, kind: str | None = None
) -> Iterator[tuple[int, int, str, Job]]:
    """(time, seq, kind, job) for the job's runs from ``first`` up to ``end``."""
    t = first
    label = kind or ("retry" if job.state is JobState.RETRYING else job.schedule.kind)
    while t is not None and t <= end:
        yield t, job.seq, label, job
        if not job.recurring:
            return
        t, label = job.next_occurrence(t), job.schedule.kind


def _all(list_jobs: Callable[..., list[Job]], state: JobState) -> Iterator[Job]:
    after: str | None = None
    while True:
        page = list_jobs(state, None, after, 1000)
        yield from page
        if len(page) < 1000:
            return
        after = page[-1].job_id


def _failure(job: Job) -> dict[str, Any]:
    error = job.last_error
    if error is not None and len(error) > MAX_ERROR_TEXT:
        error = error[:MAX_ERROR_TEXT] + "..."
    return {
        "job_id": job.job_id,
        "task": job.task,
        "state": job.state.value,
        "attempts": job.attempts,
        "max_attempts": job.retry.max_attempts,
        "last_error": error,
        "updated_at": format_ms(job.updated_at),
        "due_at": None if job.due_at is None else format_ms(job.due_at),
    }
