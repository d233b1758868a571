"""Task handlers: the registry of user code, and its blocking run.

Users write ``@task("send-email")`` on a plain or ``async def`` function taking
the job's payload; ``--tasks MODULE`` imports their modules, which fills the
default registry. Without registered handlers every task is a no-op that
succeeds (the stdio node's contract, docs/protocol.md). With handlers, or once
the registry is ``strict`` (``jobsched serve``: a typo'd task name must not be
silently "done"), the engine refuses to schedule an unknown task. Built-in
tasks (``webhook``) alone do not switch that check on.

``TaskRegistry.run`` blocks the caller until the handler ends or its timeout
passes; the engine's ``execute_jobs`` / ``execute_job`` use it. The real-time
dispatcher runs handlers without blocking, through ``jobsched.runner``.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable
from typing import Any, TypeVar

from jobsched.handles import TaskContext, TaskHandle, bind_context, make_context
from jobsched.isolation import (
    SUCCESS,
    Handler,
    Outcome,
    call,
    call_with_deadline,
    coroutine_with_deadline,
    run_coroutine,
)

H = TypeVar("H", bound=Callable[..., Any])


class TaskRegistry:
    """Maps task names to handlers and runs them."""

    def __init__(self) -> None:
        self._handlers: dict[str, Handler] = {}
        self._builtins: dict[str, Handler] = {}
        self._contextual: set[str] = set()  # handlers called (payload, ctx)
        # strict: unknown tasks are refused even with no user handler (serve).
        self.strict = False

    def register(
        self, name: str, handler: Handler, builtin: bool = False, pass_context: bool = False
    ) -> None:
        if not name or len(name) > 255:
            raise ValueError(f"a task name is 1-255 characters, not {name!r}")
        (self._builtins if builtin else self._handlers)[name] = handler
        (self._contextual.add if pass_context else self._contextual.discard)(name)

    def task(
        self, name: str | None = None, *, pass_context: bool = False
    ) -> Callable[[H], TaskHandle[H]]:
        """Decorator: ``@registry.task("name")`` (default: the function's name).
        ``pass_context=True``: the handler is called ``(payload, ctx)``, ctx a ``TaskContext``."""

        def decorate(fn: H) -> TaskHandle[H]:
            if isinstance(fn, TaskHandle):  # stacked decorators: register the function
                fn = fn.fn
            self.register(name or fn.__name__, fn, pass_context=pass_context)
            return TaskHandle(name or fn.__name__, fn)

        return decorate

    def add_builtins(self) -> None:
        """Register the built-in tasks (``webhook``)."""
        from jobsched.tasks.webhook import webhook

        self.register("webhook", webhook, builtin=True)

    @property
    def enabled(self) -> bool:
        """True once unknown tasks are refused: a user handler is registered, or strict."""
        return self.strict or bool(self._handlers)

    def names(self) -> list[str]:
        return sorted({*self._handlers, *self._builtins})

    def knows(self, task: str) -> bool:
        return not self.enabled or task in self._handlers or task in self._builtins

    def wants_context(self, task: str) -> bool:
        """Whether the task's handler takes a context (callers build one only then)."""
        return task in self._contextual

    def handler(self, task: str, context: TaskContext | None = None) -> Handler | None:
        """The task's handler as a one-argument callable (a context handler gets
        ``context``, or one with None fields when the caller gave none)."""
        found = self._handlers.get(task) or self._builtins.get(task)
        if found is None or task not in self._contextual:
            return found
        return bind_context(found, context or make_context(task))

    def run(
        self,
        task: str,
        payload_json: str,
        timeout_ms: int | None = None,
        *,
        context: TaskContext | None = None,
    ) -> Outcome:
        """Run the task's handler in the calling thread's time; block until it
        ends or ``timeout_ms`` passes."""
        handler = self.handler(task, context)
        if handler is None:
            return Outcome(False, f"no handler for {task!r}") if self.enabled else SUCCESS
        payload = json.loads(payload_json)
        if inspect.iscoroutinefunction(handler):
            if timeout_ms is None:
                return run_coroutine(handler, payload, None)
            return coroutine_with_deadline(handler, payload, timeout_ms)
        if timeout_ms is None:
            return call(handler, payload)
        return call_with_deadline(handler, payload, timeout_ms)


default_registry = TaskRegistry()


def task(name: str | None = None, *, pass_context: bool = False) -> Callable[[H], TaskHandle[H]]:
    """Register a handler in the default registry (the one ``--tasks`` fills):

    from jobsched import task

    @task("send-email")
    def send_email(payload): ...

    send_email.schedule({"to": "a@example.com"}, delay_ms=60_000)  # after jobsched.configure
    """
    return default_registry.task(name, pass_context=pass_context)
