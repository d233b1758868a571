"""The in-memory store: a dict by id, a list by seq, and heaps by time.

Executing k due jobs out of n pending costs O(k log n): the due heap holds
``(due_at, seq, job_id)`` entries and is never scanned. Entries are not removed
when a job changes; a popped entry that no longer matches its job (another due
time, or a state that is not runnable) is stale and dropped. A heap is rebuilt
when stale entries outnumber live ones, so churn cannot grow it without bound.
Pruning works the same way on a heap of final jobs and one of run records, and
counts per state and the set of running jobs are kept up to date, so no call on
the hot path scans every job.

Not transactional: writes apply as they happen and a failing block undoes
nothing (``rollback = False``, see the contract in ``base``).
"""

from __future__ import annotations

import heapq
import itertools
import threading
from collections import deque
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager

from jobsched.errors import JobExists, JobNotFound
from jobsched.jobs import FINAL_STATES, RUNNABLE_STATES, Job, JobState
from jobsched.stores.base import RECENT_RUNS, RunRecord, Store

_RUNNING = JobState.RUNNING
# Memory is not durable history: keep a short tail of runs per job.
RUNS_KEPT = max(RECENT_RUNS, 10)


class MemoryStore(Store):
    rollback = False

    def __init__(self) -> None:
        self._jobs: dict[str, Job] = {}
        self._by_seq: list[Job | None] = []  # index = seq - 1; None once pruned
        self._heap: list[tuple[int, int, str]] = []
        self._runnable = 0  # jobs in RUNNABLE_STATES, to know when the heap is mostly stale
        self._counts: dict[JobState, int] = {}
        self._running: dict[str, None] = {}  # ids of running jobs, for the lease calls
        # Retention: final jobs by the store-clock time they became final.
        self._final_at: dict[str, int] = {}
        self._final_heap: list[tuple[int, str]] = []
        # Run records: (number, stamp, record) per job; a heap of (stamp, number, job_id).
        self._runs: dict[str, deque[tuple[int, int, RunRecord]]] = {}
        self._run_heap: list[tuple[int, int, str]] = []
        self._live_runs = 0
        self._run_numbers = itertools.count()
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
            self._put(job)
            self._track(old, job)
            return True

    def _put(self, job: Job) -> None:
        self._jobs[job.job_id] = job
        self._by_seq[job.seq - 1] = job

    def _track(self, old: Job | None, new: Job) -> None:
        """Keep heaps, counts and the running set in step with one job's change."""
        counts = self._counts
        if old is not None:
            counts[old.state] -= 1
            if old.state is _RUNNING:
                del self._running[old.job_id]
        counts[new.state] = counts.get(new.state, 0) + 1
        if new.state is _RUNNING:
            self._running[new.job_id] = None
        if new.state in FINAL_STATES:
            stamp = self._final_at[new.job_id] = self.clock()
            heapq.heappush(self._final_heap, (stamp, new.job_id))
        elif old is not None and old.state in FINAL_STATES:
            del self._final_at[new.job_id]  # retry_job brought a dead job back
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
                self._put(taken)
                self._track(job, taken)
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
        for job in itertools.islice(self._by_seq, start, None):
            if job is None or (state is not None and job.state is not state):
                continue
            if task is not None and job.task != task:
                continue
            out.append(job)
            if len(out) >= limit:
                break
        return out

    def counts(self) -> dict[JobState, int]:
        with self._lock:
            return {s: n for s, n in self._counts.items() if n}

    def extend_leases(self, owner: str, until: int) -> int:
        n = 0
        with self._lock:
            for job_id in self._running:
                job = self._jobs[job_id]
                if job.locked_by == owner:
                    self._put(job.evolve(locked_until=until))
                    n += 1
        return n

    def expired_leases(self, now: int, limit: int) -> list[Job]:
        with self._lock:
            jobs = [self._jobs[i] for i in self._running]
        out = [j for j in jobs if j.locked_until is not None and j.locked_until < now]
        out.sort(key=lambda j: (j.locked_until or 0, j.seq))
        return out[:limit]

    # -- run history --------------------------------------------------------

    def record_run(self, run: RunRecord) -> None:
        with self._lock:
            runs = self._runs.get(run.job_id)
            if runs is None:
                runs = self._runs[run.job_id] = deque(maxlen=RUNS_KEPT)
            number, stamp = next(self._run_numbers), self.clock()
            self._live_runs += len(runs) < RUNS_KEPT  # a full deque drops its oldest
            runs.append((number, stamp, run))
            heapq.heappush(self._run_heap, (stamp, number, run.job_id))
            if len(self._run_heap) > 2 * self._live_runs + 1024:
                self._run_heap = [(t, k, r.job_id) for q in self._runs.values() for k, t, r in q]
                heapq.heapify(self._run_heap)

    def recent_runs(self, job_id: str, limit: int = RECENT_RUNS) -> list[RunRecord]:
        with self._lock:
            runs = self._runs.get(job_id)
            return [] if runs is None else [r for _, _, r in reversed(runs)][:limit]

    def prune(self, finished_before: int, batch: int) -> int:
        with self._lock:
            return self._prune_jobs(finished_before, batch) + self._prune_runs(
                finished_before, batch
            )

    def _prune_jobs(self, before: int, batch: int) -> int:
        gone, heap = 0, self._final_heap
        while heap and gone < batch and heap[0][0] < before:
            stamp, job_id = heapq.heappop(heap)
            if self._final_at.get(job_id) != stamp:
                continue  # stale: the job left the final state or became final again
            job = self._jobs.pop(job_id)
            del self._final_at[job_id]
            self._by_seq[job.seq - 1] = None
            self._counts[job.state] -= 1
            runs = self._runs.pop(job_id, None)
            self._live_runs -= 0 if runs is None else len(runs)
            gone += 1 + (0 if runs is None else len(runs))
        return gone

    def _prune_runs(self, before: int, batch: int) -> int:
        gone, heap = 0, self._run_heap
        while heap and gone < batch and heap[0][0] < before:
            _, number, job_id = heapq.heappop(heap)
            runs = self._runs.get(job_id)
            found = next((item for item in runs or () if item[0] == number), None)
            if runs is None or found is None:
                continue  # stale: dropped from its job's short tail, or pruned with its job
            runs.remove(found)
            self._live_runs -= 1
            gone += 1
            if not runs:
                del self._runs[job_id]
        return gone
