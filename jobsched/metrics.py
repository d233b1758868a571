"""Counters of this process's real-time runs, read by ``/metrics``."""

from __future__ import annotations

import threading

# Dispatch lateness buckets, seconds (Prometheus histogram upper bounds).
LATENESS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    """Counters of this process's real-time runs, read by ``/metrics``."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.runs: dict[str, int] = {"succeeded": 0, "failed": 0, "timed_out": 0, "lost": 0}
        self.retries = 0
        self.skipped = 0
        self.buckets = [0] * len(LATENESS_BUCKETS)
        self.lateness_sum = 0.0
        self.lateness_count = 0

    def run(self, outcome: str, retry: bool = False) -> None:
        with self.lock:
            self.runs[outcome] = self.runs.get(outcome, 0) + 1
            self.retries += retry

    def skip(self, n: int) -> None:
        with self.lock:
            self.skipped += n

    def lateness(self, ms: float) -> None:
        seconds = max(ms, 0.0) / 1000
        with self.lock:
            self.lateness_sum += seconds
            self.lateness_count += 1
            for i, bound in enumerate(LATENESS_BUCKETS):
                if seconds <= bound:
                    self.buckets[i] += 1
                    break
