"""The runs a dispatcher has in flight: what it holds of each, their times on
its clock, and the ``run_event`` bodies it tells of them (docs/service.md)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from jobsched.jobs import Job
from jobsched.runner import Outcome
from jobsched.timefmt import format_ms

Event = dict[str, Any]


@dataclass(eq=False)
class Run:
    """One run in flight: the job to finish (as written at claim) and its occurrence."""

    job: Job
    due: int
    submitted: int  # on the dispatcher's clock
    deadline: int | None
    submitted_wall: float = field(default_factory=lambda: time.time() * 1000)  # wall ms
    started: float = 0.0  # on the dispatcher's clock
    finished: bool = False  # its outcome is decided (ended, or timed out)
    duration_ms: float | None = None  # the handler's run time, monotonic

    def began(self, started_wall: float) -> None:
        """The worker started the handler at ``started_wall`` (wall ms): carried
        onto the dispatcher's clock from the submission."""
        self.started = self.submitted + max(started_wall - self.submitted_wall, 0.0)

    def start_ms(self) -> int:
        """When the handler started, on the dispatcher's clock."""
        return int(self.started) if self.started else self.submitted

    def duration(self, ended: int) -> float:
        """The handler's own duration when the runner measured it (monotonic),
        else the time from its start to the outcome's collection."""
        if self.duration_ms is not None:
            return self.duration_ms
        return max(ended - (self.started or self.submitted), 0.0)


@dataclass
class State:
    active: set[Run] = field(default_factory=set)  # claimed and not yet finished
    busy: int = 0  # handler executions that have not ended (timed-out ones too)
    pending: list[tuple[Run, Outcome, int]] = field(default_factory=list)  # to write
    next_renew: int = 0


def run_event(event: str, job: Job, due: int | None, at: int, extra: dict[str, Any]) -> Event:
    """The body of a ``run_event``; ``extra`` fields that are None are left out."""
    body: Event = {
        "type": "run_event",
        "event": event,
        "job_id": job.job_id,
        "task": job.task,
        "due_at": None if due is None else format_ms(due),
        "at": format_ms(at),
    }
    body.update((k, v) for k, v in extra.items() if v is not None)
    return body
