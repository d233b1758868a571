"""Running task handlers for the real-time dispatcher, without blocking it.

``Runner`` runs plain functions on a bounded pool of daemon threads and
coroutines on one event-loop thread, and reports each end through a callback.
The registry of handlers, and the blocking run the engine's ``execute_jobs`` /
``execute_job`` use, are ``jobsched.registry`` (re-exported here, as are the
names of ``isolation`` and ``metrics`` that callers import from this module).

How a handler is called (whatever it raises is its failure, a forked child
never returns into the scheduler) is ``isolation``'s. Nothing a handler does
may stop a worker thread or the event loop, and each run is reported exactly
once.

Python cannot stop a thread: a plain handler that outlives its timeout is
reported failed at the deadline (the caller stops waiting), but its thread
stays busy until the function returns. Coroutines are cancelled at the deadline.
"""

from __future__ import annotations

import inspect
import json
import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal, cast, overload

# Outcome and the calls of handlers live in isolation, the run counters in
# metrics, the registry in registry; re-exported here for the modules that
# import them from runner.
from jobsched.handles import TaskContext, TaskHandle
from jobsched.isolation import (
    MAX_ERROR,
    STOP_BOUND_S,
    SUCCESS,
    Handler,
    Outcome,
    call,
    call_coroutine,
    close_loop,
    error_outcome,
    error_text,
    timeout_outcome,
)
from jobsched.metrics import LATENESS_BUCKETS, Metrics
from jobsched.registry import TaskRegistry, default_registry, task

if TYPE_CHECKING:
    import asyncio

log = logging.getLogger("jobsched.runner")

# done(outcome, started): ``started`` is the wall time (epoch ms, float) the handler began.
Done = Callable[[Outcome, float], None]
# done(outcome, started, duration_ms) with ``submit(..., timed=True)``: the
# duration is measured on the monotonic clock around the handler alone.
TimedDone = Callable[[Outcome, float, float], None]


def _wall() -> float:
    return time.time() * 1000


class _Stopwatch:
    """When a handler began (wall ms) and how long it ran (monotonic)."""

    __slots__ = ("end", "start", "wall")

    def __init__(self) -> None:
        self.wall = 0.0
        self.start: float | None = None
        self.end: float | None = None

    def begin(self) -> None:
        self.wall, self.start = _wall(), time.monotonic()

    def stop(self) -> None:
        self.end = time.monotonic()

    def ms(self) -> float:
        if self.start is None:
            return 0.0
        return ((self.end if self.end is not None else time.monotonic()) - self.start) * 1000


async def _timed(
    watch: _Stopwatch, handler: Handler, payload: Any, timeout_ms: int | None
) -> Outcome:
    watch.begin()
    try:
        return await call_coroutine(handler, payload, timeout_ms)
    finally:
        watch.stop()


def _future_outcome(fut: Any) -> Outcome:
    if fut.cancelled():
        return Outcome(False, "cancelled (the event loop stopped)")
    try:
        result: Outcome = fut.result()
    except BaseException as exc:  # _with_timeout returns every outcome; a last guard
        return error_outcome(exc)
    return result


def _untimed(done: Done) -> TimedDone:
    def report(outcome: Outcome, started: float, duration_ms: float) -> None:
        done(outcome, started)

    return report


def _notify(report: TimedDone, outcome: Outcome, started: float, duration_ms: float) -> None:
    try:
        report(outcome, started, duration_ms)
    except BaseException:  # the callback is ours; never let it kill a worker or the loop
        log.exception("run callback failed")


class Runner:
    """Runs handlers without blocking the caller: plain ones on ``workers`` daemon
    threads, coroutines on one event-loop thread. ``done`` is called exactly
    once per ``submit`` (on the worker or loop thread) when the run has ended."""

    def __init__(self, registry: TaskRegistry, workers: int = 4) -> None:
        if workers < 1:
            raise ValueError("workers must be at least 1")
        self.registry = registry
        self.workers = workers
        self._queue: queue.SimpleQueue[tuple[Handler, Any, TimedDone] | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: threading.Thread | None = None
        self._loop_lock = threading.Lock()
        self._closing = False

    def start(self) -> None:
        for i in range(self.workers):
            t = threading.Thread(target=self._work, name=f"jobsched-worker-{i}", daemon=True)
            t.start()
            self._threads.append(t)

    def _work(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            handler, payload, report = item
            watch = _Stopwatch()
            watch.begin()
            outcome = call(handler, payload)  # never raises
            watch.stop()
            _notify(report, outcome, watch.wall, watch.ms())

    @overload
    def submit(
        self,
        task: str,
        payload_json: str,
        timeout_ms: int | None,
        done: Done,
        *,
        timed: Literal[False] = False,
        context: TaskContext | None = None,
    ) -> None: ...

    @overload
    def submit(
        self,
        task: str,
        payload_json: str,
        timeout_ms: int | None,
        done: TimedDone,
        *,
        timed: Literal[True],
        context: TaskContext | None = None,
    ) -> None: ...

    def submit(
        self,
        task: str,
        payload_json: str,
        timeout_ms: int | None,
        done: Done | TimedDone,
        *,
        timed: bool = False,
        context: TaskContext | None = None,
    ) -> None:
        """Start one run. Timeouts of plain handlers are the caller's to watch
        (see module docstring); coroutines are cancelled here at ``timeout_ms``.
        ``timed=True``: ``done(outcome, started_wall_ms, duration_ms)``; ``context``:
        what a ``pass_context`` handler is given (``handles.context_for(job, due)``)."""
        report = cast(TimedDone, done) if timed else _untimed(cast(Done, done))
        handler = self.registry.handler(task, context)
        if handler is None:
            enabled = self.registry.enabled
            outcome = Outcome(False, f"no handler for {task!r}") if enabled else SUCCESS
            _notify(report, outcome, _wall(), 0.0)
            return
        try:
            payload = json.loads(payload_json)
        except ValueError as exc:
            _notify(report, error_outcome(exc), _wall(), 0.0)
            return
        if inspect.iscoroutinefunction(handler):
            self._submit_coroutine(handler, payload, timeout_ms, report)
            return
        self._queue.put((handler, payload, report))

    def _submit_coroutine(
        self, handler: Handler, payload: Any, timeout_ms: int | None, report: TimedDone
    ) -> None:
        import asyncio

        watch = _Stopwatch()
        # Under the lock: once stop() has begun, nothing more reaches the loop,
        # so every coroutine submitted is one stop() cancels and reports.
        with self._loop_lock:
            loop = None if self._closing else self._event_loop()
            if loop is not None:
                fut = asyncio.run_coroutine_threadsafe(
                    _timed(watch, handler, payload, timeout_ms), loop
                )
        if loop is None:
            _notify(report, Outcome(False, "cancelled (the runner stopped)"), _wall(), 0.0)
            return
        fut.add_done_callback(
            lambda f: _notify(report, _future_outcome(f), watch.wall or _wall(), watch.ms())
        )

    def _event_loop(self) -> asyncio.AbstractEventLoop:
        """The loop thread, started on first use (called under ``_loop_lock``)."""
        import asyncio

        if self._loop is None:
            loop = asyncio.new_event_loop()
            self._loop_thread = threading.Thread(
                target=self._run_loop, args=(loop,), name="jobsched-async", daemon=True
            )
            self._loop_thread.start()
            self._loop = loop
        return self._loop

    def _run_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        import asyncio

        asyncio.set_event_loop(loop)
        while not self._closing:
            try:
                loop.run_forever()
            except BaseException as exc:
                # asyncio lets SystemExit and KeyboardInterrupt out of a task the
                # handler started itself; the other handlers' runs go on.
                log.error("a task started by a handler raised %s; loop goes on", error_text(exc))
        close_loop(loop)

    def stop(self) -> None:
        """Let idle workers exit; busy ones end with their handler (daemon threads
        never hold the process up). Coroutines still running are cancelled and
        get up to ``STOP_BOUND_S`` to handle it; their runs are reported."""
        for _ in self._threads:
            self._queue.put(None)
        # Idle workers exit at once: joined (briefly) so that a stopped runner
        # leaves no thread behind; a busy one is left to its handler.
        end = time.monotonic() + STOP_BOUND_S
        for t in self._threads:
            t.join(max(end - time.monotonic(), 0.0))
        with self._loop_lock:
            self._closing = True
            loop, thread = self._loop, self._loop_thread
        if loop is not None and thread is not None:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(STOP_BOUND_S + 1.0)


__all__ = [
    "LATENESS_BUCKETS",
    "MAX_ERROR",
    "SUCCESS",
    "Done",
    "Handler",
    "Metrics",
    "Outcome",
    "Runner",
    "TaskContext",
    "TaskHandle",
    "TaskRegistry",
    "TimedDone",
    "call",
    "default_registry",
    "error_outcome",
    "error_text",
    "task",
    "timeout_outcome",
]
