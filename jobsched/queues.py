"""Queues: their settings and the rule of how many runs a claim may start. Pure.

A queue is a name every job carries (``default`` unless its spec names one).
Its settings live in the store (a ``queues`` table; a dict in memory) and hold
for the whole cluster:

- ``concurrency``: the most runs of the queue in flight (state ``running``)
  across all nodes;
- ``rate_limit``: the most run starts per ``per_ms`` window across all nodes;
- ``paused``: nothing is claimed from it (its jobs stay, nothing is lost).

A queue without settings (or with neither limit) is unlimited. The rules and
guarantees are in docs/queues.md.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from jobsched.jobs import JobState


@dataclass(frozen=True, slots=True)
class QueueSettings:
    name: str
    concurrency: int | None = None
    rate_max: int | None = None
    rate_per_ms: int | None = None
    paused: bool = False

    @property
    def limited(self) -> bool:
        """Whether a claim must count this queue's runs or starts."""
        return self.concurrency is not None or self.rate_max is not None

    def to_json(self) -> dict[str, Any]:
        rate = None
        if self.rate_max is not None:
            rate = {"max": self.rate_max, "per_ms": self.rate_per_ms}
        return {
            "queue": self.name,
            "concurrency": self.concurrency,
            "rate_limit": rate,
            "paused": self.paused,
        }


@dataclass(frozen=True, slots=True)
class QueueChange:
    """What a ``configure_queue`` sets: ``None`` leaves a field as it is;
    ``clear_*`` removes a limit (the request sent ``null``)."""

    concurrency: int | None = None
    clear_concurrency: bool = False
    rate_max: int | None = None
    rate_per_ms: int | None = None
    clear_rate: bool = False
    paused: bool | None = None

    def apply(self, old: QueueSettings) -> QueueSettings:
        concurrency = None if self.clear_concurrency else old.concurrency
        if self.concurrency is not None:
            concurrency = self.concurrency
        rate_max, per_ms = (None, None) if self.clear_rate else (old.rate_max, old.rate_per_ms)
        if self.rate_max is not None:
            rate_max, per_ms = self.rate_max, self.rate_per_ms
        paused = old.paused if self.paused is None else self.paused
        return QueueSettings(old.name, concurrency, rate_max, per_ms, paused)


def free_slots(settings: QueueSettings, running: int, recent_starts: int) -> int | None:
    """How many runs of the queue a claim may start now: None for no bound.

    ``running``: its runs in flight on every node; ``recent_starts``: its run
    starts in the current window (``now - per_ms``, now]."""
    if settings.paused:
        return 0
    bound: int | None = None
    if settings.concurrency is not None:
        bound = max(settings.concurrency - running, 0)
    if settings.rate_max is not None:
        left = max(settings.rate_max - recent_starts, 0)
        bound = left if bound is None else min(bound, left)
    return bound


@dataclass(frozen=True, slots=True)
class QueueReport:
    """One queue as ``list_queues`` shows it."""

    settings: QueueSettings
    counts: dict[JobState, int]

    def to_json(self) -> dict[str, Any]:
        out = self.settings.to_json()
        out["jobs"] = {state.value: self.counts.get(state, 0) for state in JobState}
        out["running"] = self.counts.get(JobState.RUNNING, 0)
        return out
