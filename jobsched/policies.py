"""Overlap and misfire policies of recurring jobs under the real-time dispatcher.

Pure functions from (job, times) to the job's next value; the engine's
execution pipeline (``jobsched.execution``) writes the results. ``execute_jobs``
claims with ``misfire="coalesce"`` whatever the job's option: the contract's
rule under a logical clock.

Words: an *occurrence* is a time the schedule names. The dispatcher claims a
job when its ``due_at`` (an occurrence, or a retry's time) has come. *Late* is
how long after its occurrence a claim happens.

misfire (applied when an occurrence is claimed):

- ``coalesce`` (default): run once now, however many occurrences were missed;
  next due is the first occurrence after now. The missed ones, merged into
  this run, are counted as skipped.
- ``skip``: an occurrence later than ``catchup_window_ms`` (default 1000 ms)
  does not run at all: it and the ones missed after it are skipped, and the
  job waits for its first occurrence after now.
- ``all``: every missed occurrence runs, oldest first, back to back (each is
  its own claim and run). Occurrences older than ``catchup_window_ms`` before
  now are skipped; without a window none is.

overlap (applied when a run ends; a job is one row that one runner holds, so
two runs of one job never run at the same time):

- ``skip`` (default): occurrences that came due while the run was running
  are skipped and counted; next due is the first occurrence after the end.
- ``allow``: they are kept: the job is due at once when the run ends, and the
  misfire policy above decides how they run (coalesce: once).

A retry (a claim of a job whose failure count is above 0) is not an
occurrence: misfire does not apply to it, and after it the job is due at its
first occurrence after now, as in ``transitions.on_claim``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from jobsched.jobs import CronSchedule, IntervalSchedule, Job
from jobsched.transitions import unclaim

log = logging.getLogger("jobsched.policies")

# misfire=skip: how late an occurrence may still run when catchup_window_ms is absent.
SKIP_GRACE_MS = 1000


@dataclass(frozen=True, slots=True)
class Claim:
    """What to do with a claimed job: write ``job``; run it when ``run``.

    ``due`` is the occurrence (or retry time) this run stands for; ``skipped``
    how many occurrences this decision skipped (already added to job.skipped).
    """

    job: Job
    run: bool
    due: int
    skipped: int = 0
    reason: str = ""


def count_between(job: Job, after: int, upto: int) -> int:
    """How many occurrences lie in (after, upto], in constant time per call
    (intervals by arithmetic, cron by ``CronExpr.count_between``)."""
    if upto <= after:
        return 0
    schedule = job.schedule
    if isinstance(schedule, IntervalSchedule):
        lo = max(after, schedule.anchor_ms - 1)
        if upto < schedule.anchor_ms:
            return 0
        return (upto - schedule.anchor_ms) // schedule.interval_ms - (
            (lo - schedule.anchor_ms) // schedule.interval_ms
        )
    if isinstance(schedule, CronSchedule):
        # Exact, at a cost that does not grow with the count (jobsched/cron/count.py):
        # a minutely job a year late is one call, not 525,600 steps.
        return schedule.expr.count_between(after, upto)
    return 0  # a one-time job has no occurrence after its own


def on_claim(job: Job, now: int, misfire: str | None = None) -> Claim:
    """The claimed ``job`` (state running, ``due_at`` the claimed time) at ``now``.

    ``misfire`` overrides the job's own policy: ``execute_jobs`` claims with
    ``coalesce``, the protocol's rule for a logical clock.
    """
    due = job.due_at if job.due_at is not None else now
    if not job.recurring:
        return Claim(job, True, due)
    if job.attempts > 0:  # a retry: not an occurrence
        return Claim(job.evolve(due_at=job.next_occurrence(now), updated_at=now), True, due)
    misfire = misfire or job.options.misfire
    if misfire == "all":
        return _catch_up(job, due, now)
    missed = count_between(job, due, now)  # occurrences after the claimed one
    nxt = job.next_occurrence(now)
    if misfire == "skip":
        window = job.options.catchup_window_ms
        if now - due > (SKIP_GRACE_MS if window is None else window):
            n = 1 + missed
            back = unclaim(job, now, due_at=nxt, skipped=job.skipped + n)
            return Claim(back, False, due, n, f"misfire=skip, {now - due} ms late")
    changes = {"due_at": nxt, "updated_at": now}
    if missed:
        changes["skipped"] = job.skipped + missed
    reason = f"misfire={misfire}, merged into one run" if missed else ""
    return Claim(job.evolve(**changes), True, due, missed, reason)


def _catch_up(job: Job, due: int, now: int) -> Claim:
    window = job.options.catchup_window_ms
    skipped, run_at = 0, due
    if window is not None and due < now - window:
        # Skip the occurrences older than the window; run the oldest inside it.
        first = job.next_occurrence(now - window - 1)
        skipped = count_between(job, due - 1, now - window - 1)
        if first is None or first > now:
            back = unclaim(job, now, due_at=first, skipped=job.skipped + skipped)
            return Claim(back, False, due, skipped, f"misfire=all, older than {window} ms")
        run_at = first
    advanced = job.evolve(
        due_at=job.next_occurrence(run_at), updated_at=now, skipped=job.skipped + skipped
    )
    reason = f"misfire=all, older than {window} ms" if skipped else ""
    return Claim(advanced, True, run_at, skipped, reason)


def after_run(job: Job, started: int, now: int) -> tuple[Job, int]:
    """Apply overlap to a running recurring job whose run (started at
    ``started``) ends at ``now``; return the job to finish and how many
    occurrences were skipped."""
    due = job.due_at
    if not job.recurring or due is None or job.options.overlap != "skip":
        return job, 0
    if not started < due <= now:
        return job, 0  # nothing came due during the run (or a catch-up is pending)
    n = 1 + count_between(job, due, now)
    nxt = job.next_occurrence(now)
    return job.evolve(due_at=nxt, skipped=job.skipped + n), n
