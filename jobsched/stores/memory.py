"""The in-memory store: a dict by id, a list by seq, and heaps by time.

Executing k due jobs out of n pending costs O(k log n): the due heap holds
``(due_at, seq, job_id)`` entries and is never scanned. Entries are not removed
when a job changes; a popped entry that no longer matches its job (another due
time, or a state that is not runnable) is stale and dropped. A heap is rebuilt
when stale entries outnumber live ones, so churn cannot grow it without bound.
Pruning works the same way on a heap of final jobs and one of run records, and
counts per state and the set of running jobs are kept up to date, so no call on
the hot path scans every job.

Transactions (promise 1 of ``base``): a block holds the store's lock, and while
one is open every write appends how to undo itself to an undo log (the job
value it replaced, the run record it pushed out, the job it pruned). A block
that raises undoes the log back to the mark it took on entry, newest first; a
block that exits normally leaves its entries to the enclosing block, which may
still raise; the outermost exit empties the log. Outside any block nothing is
logged: each call is a transaction of its own. Heap entries are never undone:
they are lazy, and every undone change pushes an entry for the value it
restores (a duplicate is dropped like any stale entry).
"""

from __future__ import annotations

import heapq
import itertools
import threading
from collections import deque
from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import Any

from jobsched.errors import JobExists, JobNotFound
from jobsched.jobs import FINAL_STATES, MAX_PRIORITY, RUNNABLE_STATES, Job, JobState
from jobsched.queues import QueueChange, QueueReport, QueueSettings
from jobsched.stores.base import RECENT_RUNS, DuplicateKey, RunRecord, Store
from jobsched.stores.memory_queues import MemoryQueues

_RUNNING = JobState.RUNNING
# Memory is not durable history: keep a short tail of runs per job.
RUNS_KEPT = max(RECENT_RUNS, 10)

# Undo log entries, told apart by their first item:
_JOB = 0  # (_JOB, old job (None: inserted), new job, old's final stamp or None)
_RUN = 1  # (_RUN, job_id, the item a full tail pushed out or None, None): record_run
_UNRUN = 2  # (_UNRUN, job_id, the pruned (number, stamp, record), its index in the tail)
_GONE = 3  # (_GONE, the pruned job, its final stamp, its run tail or None)
_KEY = 4  # (_KEY, unique_key, its previous (job_id, window end) or None, None)
_RunItem = tuple[int, int, RunRecord]  # (number, stamp, record)


def _due(job: Job) -> bool:
    """Whether the due heap must hold an entry for this job value."""
    return job.state in RUNNABLE_STATES and job.due_at is not None


class MemoryStore(Store, MemoryQueues):
    def __init__(self) -> None:
        self._jobs: dict[str, Job] = {}
        self._by_seq: list[Job | None] = []  # index = seq - 1; None once pruned
        # One due heap per priority: a claim walks them in priority order.
        self._heaps: list[list[tuple[int, int, str]]] = [[] for _ in range(MAX_PRIORITY + 1)]
        self._init_queues()
        self._runnable = 0  # jobs in RUNNABLE_STATES, to know when the heap is mostly stale
        self._counts: dict[JobState, int] = {}
        self._running: dict[str, None] = {}  # ids of running jobs, for the lease calls
        # Retention: final jobs by the store-clock time they became final.
        self._final_at: dict[str, int] = {}
        self._final_heap: list[tuple[int, str]] = []
        # Run records: (number, stamp, record) per job; a heap of (stamp, number, job_id).
        self._runs: dict[str, deque[_RunItem]] = {}
        self._run_heap: list[tuple[int, int, str]] = []
        self._live_runs = 0
        self._run_numbers = itertools.count()
        # Real-time mode touches the store from the dispatcher thread too.
        self._lock = threading.RLock()
        # Open blocks and their undo log: touched only by the thread holding
        # _lock, which a block holds from its entry to its exit.
        self._marks: list[int] = []  # where each open block's undo entries start
        self._undo: list[tuple[int, Any, Any, Any]] = []
        self._blocks = _Blocks(self)

    def transaction(self) -> AbstractContextManager[None]:
        return self._blocks

    def insert(self, job: Job) -> Job:
        with self._lock:
            if job.job_id in self._jobs:
                raise JobExists(job.job_id)
            if job.unique_key is not None:
                self._take_key(job, job.unique_key)
            job.seq = len(self._by_seq) + 1
            self._by_seq.append(job)
            self._jobs[job.job_id] = job
            self._track(None, job)
            return job

    def _take_key(self, job: Job, key: str) -> None:
        holder = self._key_holder(job, key)
        if holder is not None:
            raise DuplicateKey(holder)
        if job.unique_for_ms is not None:
            if self._marks:
                self._undo.append((_KEY, key, self._keys_until.get(key), None))
            self._keys_until[key] = (job.job_id, job.created_at + job.unique_for_ms)

    def insert_many(self, jobs: Sequence[Job]) -> list[Job]:
        # One block: a taken id undoes the inserts before it (the undo log).
        with self._blocks:
            for job in jobs:
                self.insert(job)
        return list(jobs)

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
        """Keep heaps, counts and the running set in step with one job's change,
        and log its undo when a block is open."""
        counts, stamp = self._counts, None
        if old is not None:
            counts[old.state] -= 1
            if old.state is _RUNNING:
                del self._running[old.job_id]
        counts[new.state] = counts.get(new.state, 0) + 1
        if new.state is _RUNNING:
            self._running[new.job_id] = None
        if new.state in FINAL_STATES:
            stamp = self._final_at.get(new.job_id)  # set when old was final too
            now = self._final_at[new.job_id] = self.clock()
            heapq.heappush(self._final_heap, (now, new.job_id))
        elif old is not None and old.state in FINAL_STATES:
            stamp = self._final_at.pop(new.job_id)  # retry_job brought a dead job back
        if self._marks:
            self._undo.append((_JOB, old, new, stamp))
        if new.unique_key is not None:
            self._key_track(new.job_id, new.unique_key, new)
        was = old is not None and old.state in RUNNABLE_STATES and old.due_at is not None
        now_due = new.state in RUNNABLE_STATES and new.due_at is not None
        self._runnable += int(now_due) - int(was)
        if now_due and not (was and old is not None and old.due_at == new.due_at):
            assert new.due_at is not None
            heap = self._heaps[new.priority]
            heapq.heappush(heap, (new.due_at, new.seq, new.job_id))
            if len(heap) > 2 * self._runnable + 1024:
                self._rebuild()

    def _rebuild(self) -> None:
        self._heaps = [[] for _ in range(MAX_PRIORITY + 1)]
        for j in self._jobs.values():
            if j.state in RUNNABLE_STATES and j.due_at is not None:
                self._heaps[j.priority].append((j.due_at, j.seq, j.job_id))
        for heap in self._heaps:
            heapq.heapify(heap)

    def _live(self, entry: tuple[int, int, str]) -> Job | None:
        job = self._jobs.get(entry[2])
        if job is None or job.state not in RUNNABLE_STATES or job.due_at != entry[0]:
            return None
        return job

    def claim_due(
        self,
        now: int,
        limit: int,
        owner: str,
        lease_until: int,
        queues: frozenset[str] | None = None,
        limits: bool = True,
    ) -> list[Job]:
        claimed: list[Job] = []
        with self._lock:
            budgets = self._budgets(now, limits)
            aside: list[tuple[int, tuple[int, int, str]]] = []  # due, but not ours to take
            for priority, heap in enumerate(self._heaps):
                while heap and len(claimed) < limit and heap[0][0] <= now:
                    entry = heapq.heappop(heap)
                    job = self._live(entry)
                    if job is None:
                        continue
                    if budgets.get(job.queue, 1) <= 0 or (
                        queues is not None and job.queue not in queues
                    ):
                        aside.append((priority, entry))
                        continue
                    taken = job.evolve(state=_RUNNING, locked_by=owner, locked_until=lease_until)
                    self._put(taken)
                    self._track(job, taken)
                    self._started(job.queue, now, budgets)
                    claimed.append(taken)
            for priority, entry in aside:
                heapq.heappush(self._heaps[priority], entry)
        return claimed

    def next_due(self) -> int | None:
        with self._lock:
            found: int | None = None
            for heap in self._heaps:
                while heap and self._live(heap[0]) is None:
                    heapq.heappop(heap)
                if heap and (found is None or heap[0][0] < found):
                    found = heap[0][0]
            return found

    def configure_queue(self, name: str, change: QueueChange) -> QueueSettings:
        with self._lock:
            return self._configure(name, change)

    def queue_report(self) -> list[QueueReport]:
        with self._lock:
            return self._report(list(self._jobs.values()))

    def list_jobs(
        self,
        state: JobState | None,
        task: str | None,
        after: str | None,
        limit: int,
        queue: str | None = None,
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
            if (task is not None and job.task != task) or (
                queue is not None and job.queue != queue
            ):
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
                    if self._marks:
                        self._undo.append((_JOB, job, self._jobs[job_id], None))
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
            full = len(runs) == RUNS_KEPT  # appending drops the oldest
            if self._marks:
                self._undo.append((_RUN, run.job_id, runs[0] if full else None, None))
            self._live_runs += not full
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
            if self._marks:
                self._undo.append((_GONE, job, stamp, runs))
            self._live_runs -= 0 if runs is None else len(runs)
            gone += 1 + (0 if runs is None else len(runs))
        return gone

    def _prune_runs(self, before: int, batch: int) -> int:
        gone, heap = 0, self._run_heap
        while heap and gone < batch and heap[0][0] < before:
            _, number, job_id = heapq.heappop(heap)
            runs = self._runs.get(job_id)
            at = (
                None
                if runs is None
                else next((i for i, item in enumerate(runs) if item[0] == number), None)
            )
            if runs is None or at is None:
                continue  # stale: dropped from its job's short tail, or pruned with its job
            if self._marks:
                self._undo.append((_UNRUN, job_id, runs[at], at))
            del runs[at]
            self._live_runs -= 1
            gone += 1
            if not runs:
                del self._runs[job_id]
        return gone

    # -- undo ---------------------------------------------------------------

    def _undo_to(self, mark: int) -> None:
        """Undo the log's entries after ``mark``, newest first, and drop them."""
        log = self._undo
        while len(log) > mark:
            kind, a, b, c = log.pop()
            if kind == _JOB:
                self._undo_job(a, b, c)
            elif kind == _RUN:
                self._undo_run(a, b)
            elif kind == _UNRUN:
                self._restore_run(a, b, c)
            elif kind == _KEY:
                self._keys_until.pop(a, None) if b is None else self._keys_until.update({a: b})
            else:
                self._undo_prune(a, b, c)

    def _undo_job(self, old: Job | None, new: Job, stamp: int | None) -> None:
        """Put ``old`` back in place of ``new`` (take ``new`` away if it was inserted)."""
        job_id, counts = new.job_id, self._counts
        if old is None:
            del self._jobs[job_id]
            self._by_seq.pop()  # the newest seq: later inserts were undone first
        else:
            self._put(old)
            counts[old.state] = counts.get(old.state, 0) + 1
        counts[new.state] -= 1
        if new.state is _RUNNING:
            del self._running[job_id]
        if old is not None and old.state is _RUNNING:
            self._running[job_id] = None
        if new.state in FINAL_STATES:
            del self._final_at[job_id]
        if stamp is not None:
            self._final_at[job_id] = stamp
            heapq.heappush(self._final_heap, (stamp, job_id))
        self._runnable += (old is not None and _due(old)) - _due(new)
        if new.unique_key is not None:
            self._key_track(job_id, new.unique_key, old)
        if old is not None and _due(old):
            assert old.due_at is not None
            heapq.heappush(self._heaps[old.priority], (old.due_at, old.seq, job_id))

    def _undo_run(self, job_id: str, dropped: _RunItem | None) -> None:
        runs = self._runs[job_id]
        runs.pop()
        if dropped is None:
            self._live_runs -= 1
            if not runs:  # the record created this tail (tails are never empty)
                del self._runs[job_id]
        else:
            runs.appendleft(dropped)
            heapq.heappush(self._run_heap, (dropped[1], dropped[0], job_id))

    def _restore_run(self, job_id: str, item: _RunItem, at: int) -> None:
        runs = self._runs.get(job_id)
        if runs is None:
            runs = self._runs[job_id] = deque(maxlen=RUNS_KEPT)
        runs.insert(at, item)
        self._live_runs += 1
        heapq.heappush(self._run_heap, (item[1], item[0], job_id))

    def _undo_prune(self, job: Job, stamp: int, runs: deque[_RunItem] | None) -> None:
        self._jobs[job.job_id] = job
        self._by_seq[job.seq - 1] = job
        self._counts[job.state] += 1
        self._final_at[job.job_id] = stamp
        heapq.heappush(self._final_heap, (stamp, job.job_id))
        if runs is not None:
            self._runs[job.job_id] = runs
            self._live_runs += len(runs)
            for number, at, _ in runs:
                heapq.heappush(self._run_heap, (at, number, job.job_id))


class _Blocks:
    """The transaction() blocks of one store. One object serves them all (their
    marks are a stack): the stdio node opens a block per request. A block holds
    the store's lock, and undoes its writes if it raises."""

    __slots__ = ("lock", "marks", "store", "undo")

    def __init__(self, store: MemoryStore) -> None:
        self.store, self.lock = store, store._lock
        self.marks, self.undo = store._marks, store._undo

    def __enter__(self) -> None:
        self.lock.acquire()
        self.marks.append(len(self.undo))

    def __exit__(self, kind: type[BaseException] | None, exc: object, tb: object) -> None:
        mark = self.marks.pop()
        try:
            if kind is not None:
                self.store._undo_to(mark)
        finally:
            if not self.marks:
                self.undo.clear()
            self.lock.release()
