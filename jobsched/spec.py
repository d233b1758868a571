"""A validated ``schedule_job`` request, before it becomes a job. Pure domain."""

from __future__ import annotations

from dataclasses import dataclass

from jobsched.jobs import DEFAULT_OPTIONS, DEFAULT_QUEUE, DEFAULT_RETRY, JobOptions, RetryPolicy


# Not frozen: a frozen dataclass pays object.__setattr__ per field, and one of
# these is built per schedule_job on the hot path. Treat it as immutable.
@dataclass(slots=True)
class ScheduleSpec:
    task: str
    payload_json: str
    # Exactly one "when" (or none: due now). run_at is absolute ms.
    delay_ms: int | None = None
    run_at: int | None = None
    cron: str | None = None
    interval_ms: int | None = None
    timezone: str = "UTC"
    retry: RetryPolicy = DEFAULT_RETRY
    options: JobOptions = DEFAULT_OPTIONS
    job_id: str | None = None
    # Canonical text of everything but msg_id and current_time, for idempotency.
    spec_key: str | None = None
    # spec_key as versions before 2026-11 made it (the payload as sent, key
    # order and all), when it differs: what jobs stored then were keyed by.
    legacy_key: str | None = None
    queue: str = DEFAULT_QUEUE
    priority: int = 0
    unique_key: str | None = None
    unique_for_ms: int | None = None
