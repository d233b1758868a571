"""The in-memory store: a dict by id, a list by seq, and heaps by time.

Executing k due jobs out of n pending costs O(k log n): each priority and
queue has a due heap that is never scanned (a claim leaves the heaps of the
queues it may not take from, paused or full, alone). A pending job is held as a compact record
(``memory_compact``: a short tuple whose first item, its key, orders it by
(due_at, seq)), and the heaps hold those keys (the very int objects: no
memory of their own). A key leads to its record by its seq; two keys never
compare beyond themselves, however alike their records (a job put back at the
same due time pushes the same key again). Entries are not removed when a job
changes: a popped key that is not the key of the job's current record in
that heap is stale and dropped. A heap is rebuilt when stale entries outnumber live ones,
so churn cannot grow it without bound. Counts per state and the set of running
jobs are kept up to date, so no call on the hot path scans every job.

The rest lives beside it: transactions and their undo log in
``memory_undo``, run history and retention in ``memory_runs``, queue limits
and unique keys in ``memory_queues``.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Sequence
from contextlib import AbstractContextManager

from jobsched.errors import JobExists, JobNotFound
from jobsched.jobs import FINAL_STATES, MAX_PRIORITY, Job, JobState
from jobsched.queues import QueueChange, QueueReport, QueueSettings
from jobsched.stores.base import DuplicateKey, Store
from jobsched.stores.memory_compact import (
    JOB_ID,
    KEY,
    PRIORITY,
    QUEUE,
    SEQ_BITS,
    SEQ_MASK,
    SHAPE,
    STATE,
    TASK,
    Item,
    Packer,
    Record,
    seq_of,
    state_of,
    unique_key_of,
    unpack,
)
from jobsched.stores.memory_queues import MemoryQueues
from jobsched.stores.memory_runs import RUNS_KEPT, MemoryRuns
from jobsched.stores.memory_undo import UndoLog

__all__ = ["RUNS_KEPT", "MemoryStore"]

_RUNNING, _SCHEDULED, _RETRYING = JobState.RUNNING, JobState.SCHEDULED, JobState.RETRYING


Heap = list[int]  # the keys of a queue's pending records, a heap


def _head(entry: tuple[str, Heap]) -> int:
    """A queue heap's first key (claims take the earliest)."""
    return entry[1][0]


class MemoryStore(MemoryRuns, MemoryQueues, UndoLog, Store):
    def __init__(self) -> None:
        self._jobs: dict[str, Item] = {}
        self._by_seq: list[Item | None] = []  # index = seq - 1; None once pruned
        # Due heaps of records by priority, then by queue: a claim walks the
        # priorities in order and, within one, takes the earliest head among
        # the queues it may take from; a paused or full queue's heap is not
        # touched (one heap per priority made every claim pop and push back
        # every due job of the queues it had to leave alone).
        self._heaps: list[dict[str, Heap]] = [{} for _ in range(MAX_PRIORITY + 1)]
        # By id of a heap with due records: next_due(after)'s last answer for it,
        # (bound, key) or (bound, None); forgotten when it is pushed to.
        self._after: dict[int, tuple[int, int | None]] = {}
        self._packer = Packer()
        # Pending records (scheduled, retrying): counted apart from the other
        # jobs' states, as an enum's hash is Python code and these are most calls.
        self._pending = [0, 0]
        self._counts: dict[JobState, int] = {}  # the jobs that are not records, by state
        self._running: dict[str, None] = {}  # ids of running jobs, for the lease calls
        self._init_runs()
        self._init_queues()
        self._init_undo()

    def transaction(self) -> AbstractContextManager[None]:
        return self._blocks

    def insert(self, job: Job) -> Job:
        with self._lock:
            job_id = job.job_id
            if job_id in self._jobs:
                raise JobExists(job_id)
            if job.unique_key is not None:
                holder = self._key_holder(job, job.unique_key)
                if holder is not None:
                    raise DuplicateKey(holder)
                self._take_window(job.unique_key, job)
            job.seq = len(self._by_seq) + 1
            item = self._packer.pack(job)
            self._by_seq.append(item)
            self._jobs[job_id] = item
            if not isinstance(item, tuple) or job.unique_key is not None:
                self._track(None, None, item, job)
                return job
            # The hot path, _track's for a new pending record.
            self._pending[job.state is _RETRYING] += 1
            heapq.heappush(self._heap(job.priority, job.queue), item[KEY])
            if self._marks:
                self._undo.append((MemoryStore._undo_job, None, item, None))
            return job

    def insert_many(self, jobs: Sequence[Job]) -> list[Job]:
        # One block: a taken id undoes the inserts before it (the undo log).
        with self._blocks:
            for job in jobs:
                self.insert(job)
        return list(jobs)

    def get(self, job_id: str) -> Job | None:
        item = self._jobs.get(job_id)
        return unpack(item) if isinstance(item, tuple) else item

    def replace(self, job: Job, expect_state: JobState, expect_owner: str | None = None) -> bool:
        with self._lock:
            old = self._jobs.get(job.job_id)
            if old is None or (old_state := state_of(old)) is not expect_state:
                return False
            if expect_owner is not None and _locked_by(old) != expect_owner:
                return False
            if job.unique_key is not None:
                self._refuse_held_key(job)
            seq = job.seq = seq_of(old)
            new = self._packer.pack(job)
            self._jobs[job.job_id] = self._by_seq[seq - 1] = new
            self._track(old, old_state, new, job)
            return True

    def _put(self, job_id: str, item: Item) -> None:
        self._jobs[job_id] = item
        self._by_seq[seq_of(item) - 1] = item

    def _track(self, old: Item | None, old_state: JobState | None, new: Item, job: Job) -> None:
        """Keep heaps, counts and the running set in step with one job's change
        (``old`` in ``old_state`` became ``new``, which stands for ``job``), and
        log its undo when a block is open."""
        job_id, state, stamp, was_final = job.job_id, job.state, None, False
        if isinstance(old, tuple):
            self._pending[old_state is _RETRYING] -= 1
        elif old_state is not None:
            self._counts[old_state] -= 1
            if old_state is _RUNNING:
                del self._running[job_id]
            else:
                was_final = old_state in FINAL_STATES
        if isinstance(new, tuple):
            self._pending[state is _RETRYING] += 1
            heap = self._heap(job.priority, job.queue)
            heapq.heappush(heap, new[KEY])
            if len(heap) > 2 * (self._pending[0] + self._pending[1]) + 1024:
                self._rebuild()
        else:
            self._counts[state] = self._counts.get(state, 0) + 1
            if state is _RUNNING:
                self._running[job_id] = None
            elif state in FINAL_STATES:
                stamp = self._final_at.get(job_id)  # set when old was final too
                now = self._final_at[job_id] = self.clock()
                heapq.heappush(self._final_heap, (now, job_id))
                was_final = False
        if was_final:
            stamp = self._final_at.pop(job_id)  # retry_job brought a dead job back
        if self._marks:
            self._undo.append((MemoryStore._undo_job, old, new, stamp))
        if job.unique_key is not None:
            self._key_track(job_id, job.unique_key, state)

    def _heap(self, priority: int, queue: str) -> Heap:
        """The heap to push a record of ``queue`` to (every push goes through here)."""
        heaps = self._heaps[priority]
        heap = heaps.get(queue)
        if heap is None:
            heap = heaps[queue] = []
        elif self._after:
            self._after.pop(id(heap), None)
        return heap

    def _rebuild(self) -> None:
        self._heaps = [{} for _ in range(MAX_PRIORITY + 1)]
        self._after = {}
        for item in self._jobs.values():
            if isinstance(item, tuple):
                self._heap(item[SHAPE][PRIORITY], item[SHAPE][QUEUE]).append(item[KEY])
        for heaps in self._heaps:
            for heap in heaps.values():
                heapq.heapify(heap)

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
            bound = (now + 1) << SEQ_BITS  # records due at or before now have smaller keys
            for heaps in self._heaps:
                if len(claimed) >= limit:
                    break
                open_ = [
                    (queue, heap)
                    for queue, heap in heaps.items()
                    if heap and budgets.get(queue, 1) > 0 and (queues is None or queue in queues)
                ]
                while open_ and len(claimed) < limit:
                    queue, heap = min(open_, key=_head) if len(open_) > 1 else open_[0]
                    if heap[0] >= bound:
                        break  # the earliest head of the queues open here is not due
                    rec = self._record(heapq.heappop(heap), heap)
                    if rec is not None:  # else stale: the job has changed
                        taken = unpack(rec, owner, lease_until)
                        self._put(taken.job_id, taken)
                        self._track(rec, rec[SHAPE][STATE], taken, taken)
                        self._started(queue, now, budgets)
                        claimed.append(taken)
                    if not heap or budgets.get(queue, 1) <= 0:
                        open_ = [entry for entry in open_ if entry[1] is not heap]
        return claimed

    def next_due(self, after: int | None = None) -> int | None:
        with self._lock:
            found: int | None = None
            bound = None if after is None else ((after + 1) << SEQ_BITS) - 1
            for heap in (h for heaps in self._heaps for h in heaps.values()):
                while heap and self._record(heap[0], heap) is None:
                    heapq.heappop(heap)
                if not heap:
                    continue
                key = heap[0] if bound is None or heap[0] > bound else self._after_key(heap, bound)
                if key is not None and (found is None or key < found):
                    found = key
            return None if found is None else found >> SEQ_BITS

    def _record(self, key: int, heap: Heap) -> Record | None:
        """The pending record ``key`` stands for in ``heap``, or None if the
        key is stale: its job has changed since (another due time, another
        state, another queue or priority, or its insert was undone)."""
        i = (key & SEQ_MASK) - 1
        rec = self._by_seq[i] if i < len(self._by_seq) else None
        if type(rec) is not tuple or rec[KEY] != key:
            return None
        shape = rec[SHAPE]
        return rec if self._heaps[shape[PRIORITY]].get(shape[QUEUE]) is heap else None

    def _after_key(self, heap: Heap, bound: int) -> int | None:
        """The smallest key above ``bound`` in ``heap``, whose head is due: a
        paused or full queue's backlog is walked once, not at every look of a
        blocked dispatcher, while nothing is pushed to it."""
        memo = self._after.get(id(heap))
        if memo is not None and memo[0] <= bound:
            key = memo[1]
            if key is None or (bound < key and self._record(key, heap) is not None):
                return key
        key = self._first_after(heap, bound)
        self._after[id(heap)] = (bound, key)
        return key

    def _first_after(self, heap: Heap, bound: int) -> int | None:
        """The live key of ``heap`` that is the smallest above ``bound``. A
        heap's subtree holds no key smaller than its root, so only the keys at
        or below ``bound`` (what is already due) are walked through, and stale
        ones."""
        todo, best = [0], None
        while todo:
            i = todo.pop()
            if i >= len(heap):
                continue
            key = heap[i]
            if best is not None and key >= best:
                continue
            if key > bound and self._record(key, heap) is not None:
                best = key
                continue
            todo += (2 * i + 1, 2 * i + 2)
        return best

    def configure_queue(self, name: str, change: QueueChange) -> QueueSettings:
        with self._lock:
            return self._configure(name, change)

    def queue_report(self) -> list[QueueReport]:
        with self._lock:
            return self._report(
                (i[SHAPE][QUEUE], i[SHAPE][STATE]) if isinstance(i, tuple) else (i.queue, i.state)
                for i in self._jobs.values()
            )

    def queue_settings(self) -> list[QueueSettings]:
        with self._lock:
            return [self._settings[n] for n in sorted(self._settings)]

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
            start = seq_of(cursor)
        out: list[Job] = []
        for item in itertools.islice(self._by_seq, start, None):
            if item is None:
                continue
            # Filter before building a Job: a page of a million jobs reads few.
            if isinstance(item, tuple):
                shape = item[SHAPE]
                their_state, their_task, their_queue = shape[STATE], shape[TASK], shape[QUEUE]
            else:
                their_state, their_task, their_queue = item.state, item.task, item.queue
            if (state is not None and their_state is not state) or (
                task is not None and their_task != task
            ):
                continue
            if queue is not None and their_queue != queue:
                continue
            out.append(unpack(item) if isinstance(item, tuple) else item)
            if len(out) >= limit:
                break
        return out

    def counts(self) -> dict[JobState, int]:
        with self._lock:
            out = {s: n for s, n in self._counts.items() if n}
            for state, n in zip((_SCHEDULED, _RETRYING), self._pending, strict=True):
                if n:
                    out[state] = out.get(state, 0) + n
            return out

    def extend_leases(self, owner: str, until: int) -> int:
        n = 0
        with self._lock:
            for job_id in self._running:
                job = self._jobs[job_id]
                assert isinstance(job, Job)  # running jobs are never compact records
                if job.locked_by == owner:
                    new = job.evolve(locked_until=until)
                    self._put(job_id, new)
                    if self._marks:
                        self._undo.append((MemoryStore._undo_job, job, new, None))
                    n += 1
        return n

    def expired_leases(self, now: int, limit: int) -> list[Job]:
        with self._lock:
            jobs = [self._jobs[i] for i in self._running]
        # Running jobs are never compact records.
        out = [j for j in jobs if isinstance(j, Job) and (j.locked_until or now) < now]
        out.sort(key=lambda j: (j.locked_until or 0, j.seq))
        return out[:limit]

    # -- undo ---------------------------------------------------------------

    def _undo_job(self, old: Item | None, new: Item, stamp: int | None) -> None:
        """Put ``old`` back in place of ``new`` (take ``new`` away if it was inserted)."""
        state = state_of(new)
        if isinstance(new, tuple):
            job_id = new[JOB_ID]
            self._pending[state is _RETRYING] -= 1
        else:
            job_id = new.job_id
            self._counts[state] -= 1
            if state is _RUNNING:
                del self._running[job_id]
            elif state in FINAL_STATES:
                del self._final_at[job_id]
        old_state = None if old is None else state_of(old)
        if old is None:
            del self._jobs[job_id]
            self._by_seq.pop()  # the newest seq: later inserts were undone first
        elif isinstance(old, tuple):
            self._put(job_id, old)
            self._pending[old_state is _RETRYING] += 1
            heapq.heappush(self._heap(old[SHAPE][PRIORITY], old[SHAPE][QUEUE]), old[KEY])
        else:
            self._put(job_id, old)
            self._counts[old.state] = self._counts.get(old.state, 0) + 1
            if old_state is _RUNNING:
                self._running[job_id] = None
        if stamp is not None:
            self._final_at[job_id] = stamp
            heapq.heappush(self._final_heap, (stamp, job_id))
        key = unique_key_of(new)
        if key is not None:
            self._key_track(job_id, key, old_state)


def _locked_by(item: Item) -> str | None:
    return item[SHAPE][8] if isinstance(item, tuple) else item.locked_by
