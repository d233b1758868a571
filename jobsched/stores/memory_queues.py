"""Queue settings, claim budgets and unique keys of the in-memory store.

The memory store holds its lock around every call, so a claim's count of a
queue's free slots and a unique key's check-and-take are atomic by that lock
alone (the rules: docs/queues.md, ``jobsched.queues``).
"""

from __future__ import annotations

from collections import deque

from jobsched.jobs import FINAL_STATES, Job, JobState
from jobsched.queues import QueueChange, QueueReport, QueueSettings, free_slots


class MemoryQueues:
    """Mixed into MemoryStore: its lock is held by every caller of these."""

    _running: dict[str, None]
    _jobs: dict[str, Job]

    def _init_queues(self) -> None:
        self._settings: dict[str, QueueSettings] = {}
        self._starts: dict[str, deque[int]] = {}  # run starts of rate-limited queues
        self._keys_live: dict[str, str] = {}  # unique_key -> the job not final holding it
        self._keys_until: dict[str, tuple[str, int]] = {}  # key -> (job_id, window end)

    # -- settings -------------------------------------------------------------

    def _configure(self, name: str, change: QueueChange) -> QueueSettings:
        new = change.apply(self._settings.get(name) or QueueSettings(name))
        self._settings[name] = new
        return new

    def _report(self, jobs: list[Job]) -> list[QueueReport]:
        counts: dict[str, dict[JobState, int]] = {}
        for job in jobs:
            per = counts.setdefault(job.queue, {})
            per[job.state] = per.get(job.state, 0) + 1
        names = sorted(set(self._settings) | set(counts))
        return [
            QueueReport(self._settings.get(n) or QueueSettings(n), counts.get(n, {})) for n in names
        ]

    # -- claims ---------------------------------------------------------------

    def _budgets(self, now: int, limits: bool) -> dict[str, int]:
        """Free slots of each paused (0) or, with ``limits``, limited queue."""
        out: dict[str, int] = {}
        for q in self._settings.values():
            if not (q.paused or (limits and q.limited)):
                continue
            running = 0
            if q.concurrency is not None:
                running = sum(1 for i in self._running if self._jobs[i].queue == q.name)
            starts = self._starts.get(q.name)
            if starts is not None and q.rate_per_ms is not None:
                while starts and starts[0] <= now - q.rate_per_ms:
                    starts.popleft()
            slots = free_slots(q, running, 0 if starts is None else len(starts))
            out[q.name] = 0 if slots is None else slots
        return out

    def _started(self, queue: str, now: int, budgets: dict[str, int]) -> None:
        """One run of ``queue`` taken: spend a slot, and count a rate-limited start."""
        if queue in budgets:
            budgets[queue] -= 1
            q = self._settings[queue]
            if q.rate_max is not None:
                self._starts.setdefault(queue, deque()).append(now)

    # -- unique keys ----------------------------------------------------------

    def _key_holder(self, job: Job, key: str) -> str | None:
        """Who holds ``key`` against this new job: a job not final, or one
        whose window is open at the new job's creation."""
        live = self._keys_live.get(key)
        if live is not None:
            return live
        held = self._keys_until.get(key)
        if held is not None and held[1] > job.created_at:
            return held[0]
        return None

    def _key_track(self, job_id: str, key: str, job: Job | None) -> None:
        """Keep ``_keys_live`` in step with the job's value (None: it is gone)."""
        if job is not None and job.state not in FINAL_STATES:
            self._keys_live[key] = job_id
        elif self._keys_live.get(key) == job_id:
            del self._keys_live[key]
