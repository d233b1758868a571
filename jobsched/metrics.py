"""Counters of this process's real-time runs, by queue, read by ``/metrics``.

Every run counter carries a ``queue`` label. Queue names are the users' (any
job may name a new queue), so the labels are bounded: a process labels at
most ``MAX_QUEUE_LABELS`` queues by name, the first it counts runs of (and
``default`` from the start); the runs of any further queue are counted under
``queue=""`` (OVERFLOW: no queue name is empty). docs/queues.md says the same.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from jobsched.jobs import DEFAULT_QUEUE

# Dispatch lateness buckets, seconds (Prometheus histogram upper bounds).
LATENESS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
OUTCOMES = ("succeeded", "failed", "timed_out", "lost")
MAX_QUEUE_LABELS = 50
OVERFLOW = ""


@dataclass
class QueueCounts:
    """One queue's counters (or the overflow's)."""

    runs: dict[str, int] = field(default_factory=lambda: dict.fromkeys(OUTCOMES, 0))
    retries: int = 0
    skipped: int = 0
    running: int = 0  # runs this process holds now: claimed, outcome not yet written
    buckets: list[int] = field(default_factory=lambda: [0] * len(LATENESS_BUCKETS))
    lateness_sum: float = 0.0
    lateness_count: int = 0


class Metrics:
    """Counters of this process's real-time runs, by queue. The totals
    (``runs``, ``retries``, ...) sum the queues."""

    def __init__(self) -> None:
        self.lock = threading.RLock()  # the totals' properties take it inside a caller's hold
        self.queues: dict[str, QueueCounts] = {DEFAULT_QUEUE: QueueCounts()}

    def _of(self, queue: str) -> QueueCounts:
        """The counters of ``queue``, or the overflow's once the labels are spent."""
        found = self.queues.get(queue)
        if found is None:
            named = len(self.queues) - (OVERFLOW in self.queues)
            key = queue if named < MAX_QUEUE_LABELS else OVERFLOW
            found = self.queues.setdefault(key, QueueCounts())
        return found

    def run(self, outcome: str, retry: bool = False, queue: str = DEFAULT_QUEUE) -> None:
        with self.lock:
            q = self._of(queue)
            q.runs[outcome] = q.runs.get(outcome, 0) + 1
            q.retries += retry

    def skip(self, n: int, queue: str = DEFAULT_QUEUE) -> None:
        with self.lock:
            self._of(queue).skipped += n

    def holding(self, queue: str, delta: int) -> None:
        """A run of ``queue`` was claimed (+1) or its outcome written or given back (-1)."""
        with self.lock:
            self._of(queue).running += delta

    def lateness(self, ms: float, queue: str = DEFAULT_QUEUE) -> None:
        seconds = max(ms, 0.0) / 1000
        with self.lock:
            q = self._of(queue)
            q.lateness_sum += seconds
            q.lateness_count += 1
            for i, bound in enumerate(LATENESS_BUCKETS):
                if seconds <= bound:
                    q.buckets[i] += 1
                    break

    # -- totals over the queues ------------------------------------------------

    @property
    def runs(self) -> dict[str, int]:
        with self.lock:
            out = dict.fromkeys(OUTCOMES, 0)
            for q in self.queues.values():
                for outcome, n in q.runs.items():
                    out[outcome] = out.get(outcome, 0) + n
            return out

    @property
    def retries(self) -> int:
        return int(self._sum("retries"))

    @property
    def skipped(self) -> int:
        return int(self._sum("skipped"))

    @property
    def lateness_count(self) -> int:
        return int(self._sum("lateness_count"))

    def _sum(self, attr: str) -> float:
        with self.lock:
            return float(sum(getattr(q, attr) for q in self.queues.values()))

    # -- the Prometheus text ---------------------------------------------------

    def render(self) -> str:
        """The run families in the Prometheus text format (0.0.4), a sample per queue."""
        with self.lock:
            snapshot = {
                name: QueueCounts(
                    dict(q.runs),
                    q.retries,
                    q.skipped,
                    q.running,
                    list(q.buckets),
                    q.lateness_sum,
                    q.lateness_count,
                )
                for name, q in sorted(self.queues.items())
            }
        out: list[str] = []
        for name, kind, help_text, samples in _FAMILIES:
            out.append(f"# HELP {name} {help_text}")
            out.append(f"# TYPE {name} {kind}")
            for queue, counts in snapshot.items():
                label = f'queue="{_escape(queue)}"'
                out.extend(samples(name, label, counts))
        return "\n".join(out) + "\n"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _runs(name: str, label: str, q: QueueCounts) -> list[str]:
    return [f'{name}{{outcome="{k}",{label}}} {v}' for k, v in sorted(q.runs.items())]


def _failures(name: str, label: str, q: QueueCounts) -> list[str]:
    return [f"{name}{{{label}}} {sum(v for k, v in q.runs.items() if k != 'succeeded')}"]


def _lateness(name: str, label: str, q: QueueCounts) -> list[str]:
    out, cumulative = [], 0
    for bound, n in zip(LATENESS_BUCKETS, q.buckets, strict=True):
        cumulative += n
        out.append(f'{name}_bucket{{le="{bound}",{label}}} {cumulative}')
    out.append(f'{name}_bucket{{le="+Inf",{label}}} {q.lateness_count}')
    out.append(f"{name}_sum{{{label}}} {q.lateness_sum}")
    out.append(f"{name}_count{{{label}}} {q.lateness_count}")
    return out


Samples = Callable[[str, str, QueueCounts], list[str]]


def _one(attr: str) -> Samples:
    def samples(name: str, label: str, q: QueueCounts) -> list[str]:
        return [f"{name}{{{label}}} {getattr(q, attr)}"]

    return samples


_FAMILIES: tuple[tuple[str, str, str, Samples], ...] = (
    ("jobsched_runs_total", "counter", "Real-time runs of this process, by outcome.", _runs),
    (
        "jobsched_run_failures_total",
        "counter",
        "Real-time runs that failed (any cause).",
        _failures,
    ),
    ("jobsched_retries_total", "counter", "Failed runs that scheduled a retry.", _one("retries")),
    (
        "jobsched_skipped_occurrences_total",
        "counter",
        "Occurrences skipped by overlap/misfire.",
        _one("skipped"),
    ),
    (
        "jobsched_running",
        "gauge",
        "Runs this process holds now (claimed, outcome not yet written).",
        _one("running"),
    ),
    (
        "jobsched_dispatch_lateness_seconds",
        "histogram",
        "Handler start minus due time, real-time runs.",
        _lateness,
    ),
)
