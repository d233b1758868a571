"""Queue settings, claim budgets and unique keys of the in-memory store.

The memory store holds its lock around every call, so a claim's count of a
queue's free slots and a unique key's check-and-take are atomic by that lock
alone (the rules: docs/queues.md, ``jobsched.queues``).

Every write here logs its undo (``memory_undo``) while a block is open, as
the SQL stores' rows roll back with their transaction: a queue's settings, a
unique key's window, and the run starts a rate limit counts. A claim that is
undone gives its start back, and the starts it found expired (and let go) come
back too, so a rolled-back block leaves the rate limit exactly as it found it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from typing import Any, cast

from jobsched.jobs import FINAL_STATES, Job, JobState
from jobsched.queues import QueueChange, QueueReport, QueueSettings, free_slots
from jobsched.stores.base import DuplicateKey
from jobsched.stores.memory_compact import Item
from jobsched.stores.memory_undo import Undo


class MemoryQueues:
    """Mixed into MemoryStore: its lock is held by every caller of these."""

    _running: dict[str, None]
    _jobs: dict[str, Item]
    _marks: list[int]
    _undo: list[tuple[Undo, Any, Any, Any]]

    def _init_queues(self) -> None:
        self._settings: dict[str, QueueSettings] = {}
        self._starts: dict[str, deque[int]] = {}  # run starts of rate-limited queues
        self._keys_live: dict[str, str] = {}  # unique_key -> the job not final holding it
        self._keys_until: dict[str, tuple[str, int]] = {}  # key -> (job_id, window end)

    # -- settings -------------------------------------------------------------

    def _configure(self, name: str, change: QueueChange) -> QueueSettings:
        old = self._settings.get(name)
        new = change.apply(old or QueueSettings(name))
        if self._marks:
            self._undo.append((MemoryQueues._put_back, self._settings, name, old))
        self._settings[name] = new
        return new

    def _report(self, jobs: Iterable[tuple[str, JobState]]) -> list[QueueReport]:
        """The report, from every job's (queue, state)."""
        counts: dict[str, dict[JobState, int]] = {}
        for queue, state in jobs:
            per = counts.setdefault(queue, {})
            per[state] = per.get(state, 0) + 1
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
                jobs = self._jobs  # running jobs are Jobs, never compact records
                running = sum(1 for i in self._running if cast(Job, jobs[i]).queue == q.name)
            starts = self._starts.get(q.name)
            if starts is not None and q.rate_per_ms is not None:
                while starts and starts[0] <= now - q.rate_per_ms:
                    expired = starts.popleft()
                    if self._marks:
                        self._undo.append((MemoryQueues._unexpire, starts, expired, None))
            slots = free_slots(q, running, 0 if starts is None else len(starts))
            out[q.name] = 0 if slots is None else slots
        return out

    def _started(self, queue: str, now: int, budgets: dict[str, int]) -> None:
        """One run of ``queue`` taken: spend a slot, and count a rate-limited start."""
        if queue in budgets:
            budgets[queue] -= 1
            q = self._settings[queue]
            if q.rate_max is not None:
                starts = self._starts.setdefault(queue, deque())
                starts.append(now)
                if self._marks:
                    self._undo.append((MemoryQueues._unstart, starts, None, None))

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

    def _refuse_held_key(self, job: Job) -> None:
        """A final job made live again (retry_job) while another job that is
        not final holds its key: refused, as the SQL stores' index refuses it."""
        live = self._keys_live.get(cast(str, job.unique_key))
        if live is not None and live != job.job_id and job.state not in FINAL_STATES:
            raise DuplicateKey(live)

    def _take_window(self, key: str, job: Job) -> None:
        """The new job holds ``key`` for ``unique_for_ms`` past its creation."""
        if job.unique_for_ms is not None:
            if self._marks:
                self._undo.append(
                    (MemoryQueues._put_back, self._keys_until, key, self._keys_until.get(key))
                )
            self._keys_until[key] = (job.job_id, job.created_at + job.unique_for_ms)

    def _key_track(self, job_id: str, key: str, state: JobState | None) -> None:
        """Keep ``_keys_live`` in step with the job's state (None: it is gone)."""
        if state is not None and state not in FINAL_STATES:
            self._keys_live[key] = job_id
        elif self._keys_live.get(key) == job_id:
            del self._keys_live[key]

    # -- undo -----------------------------------------------------------------

    def _put_back(self, into: dict[str, Any], key: str, old: object) -> None:
        """Undo a write of ``into[key]`` (``old`` None: there was none)."""
        if old is None:
            into.pop(key, None)
        else:
            into[key] = old

    def _unstart(self, starts: deque[int], _: object, __: object) -> None:
        # Newest first: every later change to this deque was undone already,
        # so the start this claim appended is the last one.
        starts.pop()

    def _unexpire(self, starts: deque[int], expired: int, _: object) -> None:
        starts.appendleft(expired)
