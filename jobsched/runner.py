"""Task handlers: the registry of user code, and the call of one handler.

Without registered handlers every task is a no-op that succeeds (the seed's
behaviour). With handlers, the engine refuses to schedule an unknown task.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

Handler = Callable[[Any], Any]


@dataclass(frozen=True, slots=True)
class Outcome:
    ok: bool
    error: str | None = None


SUCCESS = Outcome(True)


class TaskRegistry:
    """Maps task names to handlers and runs them."""

    def __init__(self) -> None:
        self._handlers: dict[str, Handler] = {}

    def register(self, name: str, handler: Handler) -> None:
        self._handlers[name] = handler

    @property
    def enabled(self) -> bool:
        """True once any handler is registered: unknown tasks are then refused."""
        return bool(self._handlers)

    def knows(self, task: str) -> bool:
        return not self._handlers or task in self._handlers

    def run(self, task: str, payload_json: str, timeout_ms: int | None = None) -> Outcome:
        handler = self._handlers.get(task)
        if handler is None:
            return SUCCESS if not self._handlers else Outcome(False, f"no handler for {task!r}")
        try:
            handler(json.loads(payload_json))
        except Exception as exc:  # a user's handler may raise anything
            return Outcome(False, f"{type(exc).__name__}: {exc}"[:2000])
        return SUCCESS
