"""Run history and retention of the in-memory store.

Memory is not durable history: each job keeps a short tail of its latest runs
(``RUNS_KEPT``). Pruning (promise 7 of ``stores.base``) never scans: final
jobs sit in a heap by the store-clock time they became final, run records in
a heap of ``(stamp, number, job_id)``; an entry that no longer matches (the job
left the final state, the record was pushed out of its tail) is stale and
dropped when met, and the run heap is rebuilt when stale entries outnumber
live ones. Every write here logs its undo (``memory_undo``) while a block is
open.
"""

from __future__ import annotations

import heapq
import itertools
import threading
from collections import deque
from typing import Any

from jobsched.jobs import Job, JobState
from jobsched.stores.base import RECENT_RUNS, RunRecord
from jobsched.stores.memory_compact import Item
from jobsched.stores.memory_undo import Undo

RUNS_KEPT = max(RECENT_RUNS, 10)
_RunItem = tuple[int, int, RunRecord]  # (number, stamp, record)


class MemoryRuns:
    """Mixed into MemoryStore: its lock is held by every caller of these."""

    _jobs: dict[str, Item]
    _by_seq: list[Item | None]
    _counts: dict[JobState, int]
    _lock: threading.RLock
    _marks: list[int]
    _undo: list[tuple[Undo, Any, Any, Any]]
    clock: Any

    def _init_runs(self) -> None:
        # Retention: final jobs by the store-clock time they became final.
        self._final_at: dict[str, int] = {}
        self._final_heap: list[tuple[int, str]] = []
        # Run records: (number, stamp, record) per job; a heap of (stamp, number, job_id).
        self._runs: dict[str, deque[_RunItem]] = {}
        self._run_heap: list[tuple[int, int, str]] = []
        self._live_runs = 0
        self._run_numbers = itertools.count()

    def record_run(self, run: RunRecord) -> None:
        with self._lock:
            runs = self._runs.get(run.job_id)
            if runs is None:
                runs = self._runs[run.job_id] = deque(maxlen=RUNS_KEPT)
            number, stamp = next(self._run_numbers), self.clock()
            full = len(runs) == RUNS_KEPT  # appending drops the oldest
            if self._marks:
                self._undo.append((MemoryRuns._undo_run, run.job_id, runs[0] if full else None, 0))
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
            assert isinstance(job, Job)  # final jobs are never compact records
            del self._final_at[job_id]
            self._by_seq[job.seq - 1] = None
            self._counts[job.state] -= 1
            runs = self._runs.pop(job_id, None)
            if self._marks:
                self._undo.append((MemoryRuns._undo_prune, job, stamp, runs))
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
                self._undo.append((MemoryRuns._restore_run, job_id, runs[at], at))
            del runs[at]
            self._live_runs -= 1
            gone += 1
            if not runs:
                del self._runs[job_id]
        return gone

    # -- undo ---------------------------------------------------------------

    def _undo_run(self, job_id: str, dropped: _RunItem | None, _: object) -> None:
        """Take back a record_run (and put back what it pushed out of a full tail)."""
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
