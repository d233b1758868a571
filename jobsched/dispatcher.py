"""The real-time loop: run due jobs at their time, with the user's handlers.

The dispatcher drives the engine's execution pipeline (``jobsched.execution``:
claim, finish, rescue, release) on the real clock; it never changes a job on
the store itself. One dispatcher thread makes every store call of real-time
running; handlers run on the ``Runner``'s workers and report back through a
queue. Each round (``step``) it:

1. collects the outcomes of ended runs, and fails runs that passed their
   ``timeout_ms`` (their worker may still be busy: Python cannot stop a
   thread; the slot frees when the function returns);
2. claims due jobs, as many as there are free workers, and starts them;
   the outcomes decided since the last claim are written first, in the
   claim's transaction (one commit for both: a durable store pays one
   fsync per round, not two, and a run's slot in a capped queue is free
   for the claim that follows it);
3. finishes the decided runs that no claim took along (all workers busy,
   or stopping), one transaction for the batch;
4. extends its leases while runs are in flight, every ``lease_ms / 3``;
5. runs the node's maintenance (``jobsched.maintenance``): rescue of jobs
   whose holder died, heartbeat, retention.

Then it sleeps until the next due time, a deadline, or a wake-up, and at
most ``poll_ms``; a node whose due jobs sit in full queues sleeps until a
slot frees or a rate-limit window opens (``jobsched.dispatch_wait``).

Shutdown: ``stop_claims()`` first (nothing more is claimed), then
``stop(grace_s)``: running handlers get ``grace_s`` seconds to end; jobs still
running after that are put back (due at the occurrence they were running)
with a ``lost`` run record, and run again after a restart: at least once,
never lost. The crash rule (a run lost to a crash counts as an attempt) is in
docs/design.md.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from jobsched import policies
from jobsched.dispatch_runs import Event, Run, State, run_event
from jobsched.dispatch_wait import QueueLimits, Sleeper, timeout_s
from jobsched.engine import Engine
from jobsched.errors import JobschedError
from jobsched.execution import LOST_SKIP, SHUTDOWN, Finished, Rescued
from jobsched.handles import context_for
from jobsched.jobs import Job
from jobsched.maintenance import Maintenance
from jobsched.runner import Metrics, Outcome, Runner, timeout_outcome
from jobsched.stores.base import ClusterClock, WakeupListener
from jobsched.timefmt import now_ms

log = logging.getLogger("jobsched.dispatcher")

ERROR_BACKOFF_S = 1.0


class Dispatcher:
    def __init__(
        self,
        engine: Engine,
        runner: Runner,
        *,
        clock: Callable[[], int] | None = None,
        poll_ms: int = 1000,
        owner: str | None = None,
        events: Callable[[Event], None] | None = None,
        metrics: Metrics | None = None,
        queues: frozenset[str] | None = None,
    ) -> None:
        self.engine = engine
        # --queues: claim only from these (None: from every queue).
        self.queues = queues
        self._blocked = False
        self.store = engine.store
        self.runner = runner
        # A shared store's own clock (PostgreSQL's db_now) is the cluster's clock.
        if clock is None:
            clock = self.store.db_now if isinstance(self.store, ClusterClock) else now_ms
        self.clock: Callable[[], int] = clock
        self.poll_ms = poll_ms
        # Unique per process: a restarted node never mistakes its predecessor's
        # leases for its own.
        self.owner = owner or engine.owner
        self.lease_ms = engine.config.lease_ms
        self.events = events
        self.metrics = metrics or Metrics()
        # Stores that can be woken by other processes' writes (PostgreSQL's
        # LISTEN/NOTIFY, SQLite's data_version) are slept on; others through a plain Event.
        self._sleeper = Sleeper(self.store if isinstance(self.store, WakeupListener) else None)
        self._limits = QueueLimits(engine.queue_settings)
        self.maintenance = Maintenance(engine, self.owner, self._on_rescued, heartbeat=True)
        self._s = State()
        self._done: queue.SimpleQueue[tuple[Run, Outcome, float, float]] = queue.SimpleQueue()
        self._stopping = False
        # Held around a claim: once stop_claims returns, no claim is in progress.
        self._claim_lock = threading.Lock()
        self._grace_until: float | None = None
        self._thread: threading.Thread | None = None

    # -- the thread -----------------------------------------------------------

    def start(self) -> None:
        self.runner.start()
        self._thread = threading.Thread(target=self._loop, name="jobsched-dispatcher", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        """Look at the store again now (a job may be due sooner than we knew)."""
        self._sleeper.wake()

    def stop_claims(self) -> None:
        """Claim nothing more from now on (the first step of a shutdown); runs
        in flight go on and their outcomes are still written."""
        with self._claim_lock:  # a claim in progress commits before this returns
            self._stopping = True
        self.wake()

    def stop(self, grace_s: float = 10.0) -> None:
        """Stop claiming; wait up to ``grace_s`` for running handlers; put back
        the jobs whose handlers did not end. Returns once the loop has exited."""
        self._grace_until = time.monotonic() + max(grace_s, 0.0)
        self._stopping = True
        self.wake()
        if self._thread is not None:
            self._thread.join()
        self.runner.stop()

    def _loop(self) -> None:
        # On the dispatcher's thread: a store's listener may watch through the
        # waiting thread's own connection (SQLite: not woken by its own commits).
        self._sleeper.start()
        while True:
            self._sleeper.event.clear()
            at: int | None = None
            try:
                at = self.step(self.clock())
            except JobschedError as exc:
                log.error("dispatcher: storage unavailable, retrying: %s", exc.text)
                time.sleep(ERROR_BACKOFF_S)
            except Exception:  # a bug must not stop real-time running silently
                log.exception("dispatcher round failed; retrying")
                time.sleep(ERROR_BACKOFF_S)
            if self._stopping and self._drained():
                return
            self._sleeper.sleep(timeout_s(at, self.clock, self.poll_ms, self._grace_until))

    def _drained(self) -> bool:
        """While stopping: True once nothing is left (or the grace is over and
        what was left has been put back)."""
        s = self._s
        if not s.active and not s.pending:
            return True
        if self._grace_until is not None and time.monotonic() >= self._grace_until:
            self._release_all(self.clock())
            return not s.pending
        return False

    # -- one round ------------------------------------------------------------

    def step(self, now: int) -> int | None:
        """Do everything due at ``now``; return when to look again (ms), or None."""
        self._collect(now)
        self._expire(now)
        # Claims first: they are what lateness is made of; the outcomes decided
        # so far are written in the claim's transaction (_claim).
        with self._claim_lock:
            full = not self._stopping and self._claim(now)
        self._flush(now)
        self._renew(now)
        if not self._stopping:
            self._maintain(now)
        return now if full else self._next_time(now)

    def run_until_idle(self, now: int, timeout_s: float = 10.0) -> None:
        """Step at a fixed ``now`` until no run is in flight and no handler is
        executing: an injected clock drives the policies (tests, tools); only
        the handlers take real time."""
        end = time.monotonic() + timeout_s
        while True:
            self._sleeper.event.clear()
            at = self.step(now)
            idle = not self._s.active and not self._s.pending and not self._s.busy
            if idle and (at is None or at > now):
                return
            if time.monotonic() > end:
                raise TimeoutError(f"{len(self._s.active)} run(s) still in flight")
            self._sleeper.event.wait(0.05)

    @property
    def in_flight(self) -> int:
        return len(self._s.active)

    @property
    def busy(self) -> int:
        return self._s.busy

    def _collect(self, now: int) -> None:
        s = self._s
        while True:
            try:
                run, outcome, started, duration_ms = self._done.get_nowait()
            except queue.Empty:
                return
            s.busy -= 1
            run.duration_ms = duration_ms
            run.began(started)
            self.metrics.lateness(started - run.due, run.job.queue)
            if run.finished:
                log.warning("job %s: handler ended after its timeout", run.job.job_id)
                continue
            run.finished = True
            s.pending.append((run, outcome, now))

    def _expire(self, now: int) -> None:
        for run in self._s.active:
            if not run.finished and run.deadline is not None and now >= run.deadline:
                run.finished = True
                run.started = run.started or run.submitted
                timeout = run.job.options.timeout_ms or 0
                self._s.pending.append((run, timeout_outcome(timeout), now))

    def _flush(self, now: int) -> None:
        """Write the decided outcomes in one transaction; on a storage fault keep
        them and try again next round (the jobs stay running under our lease)."""
        if self._s.pending:
            self._finished(self._finish(self._s.pending))

    def _finish(self, batch: list[tuple[Run, Outcome, int]]) -> list[Finished]:
        return self.engine.finish_all(
            [(run.job, outcome, ended, run.start_ms()) for run, outcome, ended in batch]
        )

    def _finished(self, results: list[Finished]) -> None:
        """The pending outcomes are written (``results``): report them."""
        s = self._s
        batch, s.pending = s.pending, []
        # Finished runs may have made jobs due (a retry, overlap=allow) or freed a
        # queue's slot: whatever blocked the last claim, look again at once.
        self._blocked = False
        for (run, outcome, ended), finished in zip(batch, results, strict=True):
            s.active.discard(run)
            self.metrics.holding(run.job.queue, -1)
            if finished.overlap_skipped:
                reason = "overlap=skip: came due while it ran"
                self._note_skip(finished.job, finished.overlap_skipped, reason, ended)
            self._report(run, outcome, ended, finished)

    def _report(self, run: Run, outcome: Outcome, ended: int, finished: Finished) -> None:
        job = run.job
        name = "succeeded" if outcome.ok else "timed_out" if outcome.timed_out else "failed"
        self.metrics.run(name, finished.retry, job.queue)
        if not outcome.ok:
            log.info("job %s (%s) failed: %s", job.job_id, job.task, outcome.error)
        self._emit(
            name,
            job,
            run.due,
            ended,
            duration_ms=round(run.duration(ended), 3),
            error=outcome.error,
            retry_scheduled=finished.retry if not outcome.ok else None,
        )

    def _renew(self, now: int) -> None:
        s = self._s
        if s.active and now >= s.next_renew:
            self.engine.extend_leases(self.owner, now + self.lease_ms)
            s.next_renew = now + self.lease_ms // 3

    def _claim(self, now: int) -> bool:
        """Claim up to the free workers' worth of due jobs; True if that filled them.

        The outcomes waiting to be written go first, in the claim's
        transaction: one commit, not two (the fsync of a durable store is most
        of a round's cost), and a capped queue's slots held by this node's
        ended runs are free for the claim (docs/queues.md). The claim waits
        only for the outcomes' writes, not for a commit of their own."""
        s = self._s
        free = self.runner.workers - s.busy
        if free <= 0:
            return False
        if s.pending:
            with self.store.transaction():
                results = self._finish(s.pending)
                decisions = self._take(now, free)
            self._finished(results)
        else:
            decisions = self._take(now, free)
        self._blocked = len(decisions) < free
        self._limits.claimed([d.job for d in decisions], now)
        if decisions and not s.active:
            s.next_renew = now + self.lease_ms // 3
        for decision in decisions:
            if decision.skipped:
                self._note_skip(decision.job, decision.skipped, decision.reason, now)
            if decision.run:
                self._start(decision, now)
        return len(decisions) == free

    def _take(self, now: int, n: int) -> list[policies.Claim]:
        return self.engine.claim(now, n, self.owner, now + self.lease_ms, queues=self.queues)

    def _start(self, decision: policies.Claim, now: int) -> None:
        job = decision.job
        timeout = job.options.timeout_ms
        run = Run(job, decision.due, now, None if timeout is None else now + timeout)
        self._s.active.add(run)
        self._s.busy += 1
        self.metrics.holding(job.queue, 1)
        self._emit("started", job, decision.due, now, lateness_ms=now - decision.due)

        def done(outcome: Outcome, started: float, duration_ms: float) -> None:
            self._done.put((run, outcome, started, duration_ms))
            self.wake()

        wants = self.runner.registry.wants_context(job.task)
        ctx = context_for(job, decision.due) if wants else None
        self.runner.submit(job.task, job.payload_json, timeout, done, timed=True, context=ctx)

    def _note_skip(self, job: Job, n: int, reason: str, now: int) -> None:
        """The engine recorded and logged the skip; count it and tell the events."""
        self.metrics.skip(n, job.queue)
        self._emit("skipped", job, job.due_at, now, skipped=n, error=reason)

    def _on_rescued(self, rescued: Rescued, now: int) -> None:
        self.metrics.run("lost", rescued.retry, rescued.job.queue)
        job = rescued.job
        self._emit("lost", job, job.due_at, now, error=rescued.error, retry_scheduled=rescued.retry)
        if rescued.skipped:  # the engine recorded and logged them
            self._note_skip(rescued.job, rescued.skipped, LOST_SKIP, now)

    def _maintain(self, now: int) -> None:
        """Rescue, heartbeat and retention (jobsched.maintenance)."""
        self.maintenance.run(now, frozenset(run.job.job_id for run in self._s.active))

    def _release_all(self, now: int) -> None:
        """Shutdown after the grace: put back every job whose handler still runs."""
        s = self._s
        left = [run for run in s.active if not run.finished]
        try:
            runs = [(run.job, run.due, run.start_ms()) for run in left]
            self.engine.release(runs, now, SHUTDOWN)
            self._flush(now)
        except JobschedError as exc:
            # Not written: the leases expire and another node (or our restart) rescues them.
            log.error("shutdown: could not put back %d running job(s): %s", len(left), exc.text)
            s.pending = []
        for run in left:
            s.active.discard(run)
            self.metrics.holding(run.job.queue, -1)
            log.warning("job %s (%s): %s", run.job.job_id, run.job.task, SHUTDOWN)
            self._emit("released", run.job, run.due, now, error=SHUTDOWN)

    def _next_time(self, now: int) -> int | None:
        s = self._s
        times = [r.deadline for r in s.active if r.deadline is not None and not r.finished]
        if s.active:
            times.append(s.next_renew)
        if not self._stopping:
            if self.maintenance.next_at is not None:
                times.append(self.maintenance.next_at)
            if self.runner.workers > s.busy:
                due = self.engine.next_due()
                if due is not None and due <= now and self._blocked:
                    # What is due is blocked: left to wake-ups and the poll, but
                    # look when a rate window opens, or a later job falls due
                    # (it may be in a queue that is not blocked).
                    times.extend(self._blocked_until(now))
                    due = None
                if due is not None:
                    times.append(due)
        if s.pending:
            times.append(now + int(ERROR_BACKOFF_S * 1000))
        return min(times) if times else None

    def _blocked_until(self, now: int) -> list[int]:
        opens, later = self._limits.opens_at(now), self.engine.next_due(after=now)
        return [t for t in (opens, later) if t is not None]

    def _emit(self, event: str, job: Job, due: int | None, at: int, **extra: Any) -> None:
        if self.events is None:
            return
        try:
            self.events(run_event(event, job, due, at, extra))
        except Exception:  # a broken event consumer must not stop dispatching
            log.exception("event sink failed")
