"""Task handlers: the registry of user code, and the calls of handlers.

Users write ``@task("send-email")`` on a plain or ``async def`` function taking
the job's payload; ``--tasks MODULE`` imports their modules, which fills the
default registry. Without registered handlers every task is a no-op that
succeeds (the seed's behaviour). With handlers, the engine refuses to schedule
an unknown task. Built-in tasks (``webhook``) are known but do not switch that
check on: a service that only loaded built-ins still accepts any task.

Two ways to run a handler:

- ``TaskRegistry.run`` blocks the caller until the handler ends or its timeout
  passes; the engine's ``execute_jobs`` / ``execute_job`` use it.
- ``Runner`` runs handlers for the real-time dispatcher: plain functions on a
  bounded pool of daemon threads, coroutines on one event-loop thread, and
  reports each end through a callback. It never blocks the dispatcher.

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
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    import asyncio

log = logging.getLogger("jobsched.runner")

Handler = Callable[[Any], Any]
H = TypeVar("H", bound=Handler)
MAX_ERROR = 2000


@dataclass(frozen=True, slots=True)
class Outcome:
    ok: bool
    error: str | None = None
    timed_out: bool = False


SUCCESS = Outcome(True)


def error_outcome(exc: BaseException) -> Outcome:
    return Outcome(False, f"{type(exc).__name__}: {exc}"[:MAX_ERROR])


def timeout_outcome(timeout_ms: int) -> Outcome:
    return Outcome(False, f"timed out after {timeout_ms} ms", timed_out=True)


class TaskRegistry:
    """Maps task names to handlers and runs them."""

    def __init__(self) -> None:
        self._handlers: dict[str, Handler] = {}
        self._builtins: dict[str, Handler] = {}

    def register(self, name: str, handler: Handler, builtin: bool = False) -> None:
        if not name or len(name) > 255:
            raise ValueError(f"a task name is 1-255 characters, not {name!r}")
        (self._builtins if builtin else self._handlers)[name] = handler

    def task(self, name: str | None = None) -> Callable[[H], H]:
        """Decorator: ``@registry.task("name")`` (default: the function's name)."""

        def decorate(fn: H) -> H:
            self.register(name or fn.__name__, fn)
            return fn

        return decorate

    def add_builtins(self) -> None:
        """Register the built-in tasks (``webhook``)."""
        from jobsched.tasks.webhook import webhook

        self.register("webhook", webhook, builtin=True)

    @property
    def enabled(self) -> bool:
        """True once any user handler is registered: unknown tasks are then refused."""
        return bool(self._handlers)

    def names(self) -> list[str]:
        return sorted({*self._handlers, *self._builtins})

    def knows(self, task: str) -> bool:
        return not self._handlers or task in self._handlers or task in self._builtins

    def handler(self, task: str) -> Handler | None:
        return self._handlers.get(task) or self._builtins.get(task)

    def run(self, task: str, payload_json: str, timeout_ms: int | None = None) -> Outcome:
        """Run the task's handler in the calling thread's time; block until it
        ends or ``timeout_ms`` passes."""
        handler = self.handler(task)
        if handler is None:
            return SUCCESS if not self._handlers else Outcome(False, f"no handler for {task!r}")
        payload = json.loads(payload_json)
        if inspect.iscoroutinefunction(handler):
            return _run_coroutine(handler, payload, timeout_ms)
        if timeout_ms is None:
            return call(handler, payload)
        return _call_with_deadline(handler, payload, timeout_ms)


def call(handler: Handler, payload: Any) -> Outcome:
    try:
        result = handler(payload)
        if inspect.isawaitable(result):  # a plain function that returned a coroutine
            import asyncio  # imported when first needed: it costs the node ~25 ms at start

            asyncio.run(_awaited(result))
    except Exception as exc:  # a user's handler may raise anything
        return error_outcome(exc)
    return SUCCESS


async def _awaited(result: Any) -> None:
    await result


async def _with_timeout(handler: Handler, payload: Any, timeout_ms: int | None) -> Outcome:
    try:
        if timeout_ms is None:
            await handler(payload)
        else:
            import asyncio

            await asyncio.wait_for(handler(payload), timeout_ms / 1000)
    except TimeoutError:
        return timeout_outcome(timeout_ms or 0)
    except Exception as exc:
        return error_outcome(exc)
    return SUCCESS


def _run_coroutine(handler: Handler, payload: Any, timeout_ms: int | None) -> Outcome:
    import asyncio

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(_with_timeout(handler, payload, timeout_ms))
    # Called from inside a running loop (unusual): run it on a loop of its own.
    box: list[Outcome] = []
    t = threading.Thread(
        target=lambda: box.append(asyncio.run(_with_timeout(handler, payload, timeout_ms))),
        daemon=True,
    )
    t.start()
    t.join()
    return box[0]


def _call_with_deadline(handler: Handler, payload: Any, timeout_ms: int) -> Outcome:
    box: list[Outcome] = []
    t = threading.Thread(target=lambda: box.append(call(handler, payload)), daemon=True)
    t.start()
    t.join(timeout_ms / 1000)
    if t.is_alive() or not box:
        log.warning("handler %r outlived its timeout of %d ms", handler, timeout_ms)
        return timeout_outcome(timeout_ms)
    return box[0]


default_registry = TaskRegistry()


def task(name: str | None = None) -> Callable[[H], H]:
    """Register a handler in the default registry (the one ``--tasks`` fills):

    from jobsched import task

    @task("send-email")
    def send_email(payload): ...
    """
    return default_registry.task(name)


def _wall() -> float:
    return time.time() * 1000


async def _timed(
    box: list[float], handler: Handler, payload: Any, timeout_ms: int | None
) -> Outcome:
    box.append(_wall())
    return await _with_timeout(handler, payload, timeout_ms)


def _future_outcome(fut: Any) -> Outcome:
    if fut.cancelled():
        return Outcome(False, "cancelled (the event loop stopped)")
    result: Outcome = fut.result()
    return result


# -- the dispatcher's runner ----------------------------------------------------

# done(outcome, started): ``started`` is the wall time (epoch ms, float) the handler began.
Done = Callable[[Outcome, float], None]


class Runner:
    """Runs handlers without blocking the caller: plain ones on ``workers`` daemon
    threads, coroutines on one event-loop thread. ``done(outcome)`` is called
    (on the worker or loop thread) when the handler's execution has ended."""

    def __init__(self, registry: TaskRegistry, workers: int = 4) -> None:
        if workers < 1:
            raise ValueError("workers must be at least 1")
        self.registry = registry
        self.workers = workers
        self._queue: queue.SimpleQueue[tuple[Handler, Any, Done] | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_lock = threading.Lock()

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
            handler, payload, done = item
            started = time.time() * 1000
            outcome = call(handler, payload)
            try:
                done(outcome, started)
            except Exception:  # the callback is ours; never let it kill a worker
                log.exception("run callback failed")

    def submit(self, task: str, payload_json: str, timeout_ms: int | None, done: Done) -> None:
        """Start one run. Timeouts of plain handlers are the caller's to watch
        (see module docstring); coroutines are cancelled here at ``timeout_ms``."""
        handler = self.registry.handler(task)
        if handler is None:
            enabled = self.registry.enabled
            done(Outcome(False, f"no handler for {task!r}") if enabled else SUCCESS, _wall())
            return
        try:
            payload = json.loads(payload_json)
        except ValueError as exc:
            done(error_outcome(exc), _wall())
            return
        if inspect.iscoroutinefunction(handler):
            import asyncio

            box: list[float] = []
            fut = asyncio.run_coroutine_threadsafe(
                _timed(box, handler, payload, timeout_ms), self._event_loop()
            )
            fut.add_done_callback(lambda f: done(_future_outcome(f), box[0] if box else _wall()))
            return
        self._queue.put((handler, payload, done))

    def _event_loop(self) -> asyncio.AbstractEventLoop:
        import asyncio

        with self._loop_lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                threading.Thread(
                    target=loop.run_forever, name="jobsched-async", daemon=True
                ).start()
                self._loop = loop
            return self._loop

    def stop(self) -> None:
        """Let idle workers exit; busy ones end with their handler (daemon threads
        never hold the process up)."""
        for _ in self._threads:
            self._queue.put(None)
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)


# -- metrics of runs ------------------------------------------------------------

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
