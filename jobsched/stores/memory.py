"""The in-memory store: a dict by id, a list by seq, and a heap by due time.

Executing k due jobs out of n pending costs O(k log n): the heap holds
``(due_at, seq, job_id)`` entries and is never scanned. Entries are not removed
when a job changes; a popped entry that no longer matches its job (another due
time, or a state that is not runnable) is stale and dropped. The heap is rebuilt
when stale entries outnumber live ones, so churn cannot grow it without bound.
"""

from __future__ import annotations

import heapq
import threading
from collections import deque
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager

from jobsched.errors import JobExists, JobNotFound
from jobsched.jobs import RUNNABLE_STATES, Job, JobState
from jobsched.stores.base import RECENT_RUNS, RunRecord, Store

_RUNNING = JobState.RUNNING


class MemoryStore(Store):
    durable = False

    def __init__(self) -> None:
        self._jobs: dict[str, Job] = {}
        self._by_seq: list[Job | None] = []  # index = seq - 1; None once pruned
        self._heap: list[tuple[int, int, str]] = []
        self._runnable = 0  # jobs in RUNNABLE_STATES, to know when the heap is mostly stale
        self._runs: dict[str, deque[RunRecord]] = {}
        # Real-time mode touches the store from the dispatcher thread too.
        self._lock = threading.RLock()

    @contextmanager
    def _txn(self) -> Iterator[None]:
        with self._lock:
            yield

    def transaction(self) -> AbstractContextManager[None]:
        return self._txn()

    def insert(self, job: Job) -> Job:
        with self._lock:
            if job.job_id in self._jobs:
                raise JobExists(job.job_id)
            job.seq = len(self._by_seq) + 1
            self._by_seq.append(job)
            self._jobs[job.job_id] = job
            self._track(None, job)
            return job

    def get(self, job_id: str) -> Job | None:
        return self._jobs.get(job_id)

    def replace(self, job: Job, expect_state: JobState, expect_owner: str | None = None) -> bool:
        with self._lock:
            old = self._jobs.get(job.job_id)
            if old is None or old.state is not expect_state:
                return False
            if expect_owner is not None and old.locked_by != expect_owner:
                return False
            job.seq = old.seq
            self._jobs[job.job_id] = job
            self._by_seq[job.seq - 1] = job
            self._track(old, job)
            return True

    def _track(self, old: Job | None, new: Job) -> None:
        """Keep the heap and the runnable count in step with one job's change."""
        was = old is not None and old.state in RUNNABLE_STATES and old.due_at is not None
        now = new.state in RUNNABLE_STATES and new.due_at is not None
        self._runnable += int(now) - int(was)
        if now and not (was and old is not None and old.due_at == new.due_at):
            assert new.due_at is not None
            heapq.heappush(self._heap, (new.due_at, new.seq, new.job_id))
            if len(self._heap) > 2 * self._runnable + 1024:
                self._rebuild()

    def _rebuild(self) -> None:
        self._heap = [
            (j.due_at, j.seq, j.job_id)
            for j in self._jobs.values()
            if j.state in RUNNABLE_STATES and j.due_at is not None
        ]
        heapq.heapify(self._heap)

    def _live(self, entry: tuple[int, int, str]) -> Job | None:
        job = self._jobs.get(entry[2])
        if job is None or job.state not in RUNNABLE_STATES or job.due_at != entry[0]:
            return None
        return job

    def claim_due(self, now: int, limit: int, owner: str, lease_until: int) -> list[Job]:
        claimed: list[Job] = []
        with self._lock:
            heap = self._heap
            while heap and len(claimed) < limit and heap[0][0] <= now:
                job = self._live(heapq.heappop(heap))
                if job is None:
                    continue
                taken = job.evolve(state=_RUNNING, locked_by=owner, locked_until=lease_until)
                self._jobs[job.job_id] = taken
                self._by_seq[job.seq - 1] = taken
                self._runnable -= 1
                claimed.append(taken)
        return claimed

    def next_due(self) -> int | None:
        with self._lock:
            heap = self._heap
            while heap:
                if self._live(heap[0]) is not None:
                    return heap[0][0]
                heapq.heappop(heap)
            return None

    def list_jobs(
        self, state: JobState | None, task: str | None, after: str | None, limit: int
    ) -> list[Job]:
        start = 0
        if after is not None:
            cursor = self._jobs.get(after)
            if cursor is None:
                raise JobNotFound(after)
            start = cursor.seq
        out: list[Job] = []
        for job in self._by_seq[start:]:
            if job is None or (state is not None and job.state is not state):
                continue
            if task is not None and job.task != task:
                continue
            out.append(job)
            if len(out) >= limit:
                break
        return out

    def counts(self) -> dict[JobState, int]:
        counts: dict[JobState, int] = {}
        for job in self._jobs.values():
            counts[job.state] = counts.get(job.state, 0) + 1
        return counts

    def extend_leases(self, owner: str, until: int) -> int:
        n = 0
        with self._lock:
            for job in list(self._jobs.values()):
                if job.state is _RUNNING and job.locked_by == owner:
                    self._jobs[job.job_id] = new = job.evolve(locked_until=until)
                    self._by_seq[job.seq - 1] = new
                    n += 1
        return n

    def expired_leases(self, now: int, limit: int) -> list[Job]:
        out = [
            j
            for j in self._jobs.values()
            if j.state is _RUNNING and j.locked_until is not None and j.locked_until < now
        ]
        return out[:limit]

    def record_run(self, run: RunRecord) -> None:
        with self._lock:
            runs = self._runs.get(run.job_id)
            if runs is None:
                # Memory is not durable history: keep a short tail per job.
                runs = self._runs[run.job_id] = deque(maxlen=max(RECENT_RUNS, 10))
            runs.append(run)

    def recent_runs(self, job_id: str, limit: int = RECENT_RUNS) -> list[RunRecord]:
        runs = self._runs.get(job_id)
        return [] if runs is None else list(reversed(runs))[:limit]

    def prune(self, finished_before: int, batch: int) -> int:
        gone = 0
        with self._lock:
            for job in list(self._jobs.values()):
                if gone >= batch:
                    break
                if job.state in (JobState.COMPLETED, JobState.DEAD, JobState.CANCELLED) and (
                    job.updated_at < finished_before
                ):
                    del self._jobs[job.job_id]
                    self._by_seq[job.seq - 1] = None
                    self._runs.pop(job.job_id, None)
                    gone += 1
        return gone
