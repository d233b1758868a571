"""Logs people and machines can read: one line per finished run on the
``jobsched.runs`` logger, and ``--log-format json`` (one JSON object a line).

The run line comes from the run-event stream of this process (the service
fans the dispatcher's events out to it): ``run j1 (hello) succeeded in 8.0
ms, 2 ms late``, at INFO. ``--no-run-log`` leaves it out; so does a level
above INFO on the ``jobsched.runs`` logger for code that embeds jobsched.
In JSON, a run line carries its fields: ``job_id``, ``task``, ``outcome``,
``duration_ms``, ``lateness_ms``, ``due_at`` and ``error``.
"""

from __future__ import annotations

import json
import logging
from collections import OrderedDict
from datetime import UTC, datetime
from typing import Any

run_log = logging.getLogger("jobsched.runs")

RUN_FIELDS = ("job_id", "task", "outcome", "duration_ms", "lateness_ms", "due_at", "error")
ENDED = frozenset({"succeeded", "failed", "timed_out", "lost", "released"})
PENDING_STARTS = 10_000  # lateness kept until the run's end event; the oldest go first


class RunLog:
    """An event sink: remembers each start's lateness, logs each end."""

    def __init__(self) -> None:
        self._late: OrderedDict[tuple[Any, Any], int] = OrderedDict()

    def __call__(self, body: dict[str, Any]) -> None:
        event = body.get("event")
        key = (body.get("job_id"), body.get("due_at"))
        if event == "started":
            self._late[key] = int(body.get("lateness_ms", 0))
            if len(self._late) > PENDING_STARTS:
                self._late.popitem(last=False)
            return
        if event not in ENDED or not run_log.isEnabledFor(logging.INFO):
            return
        fields = {
            "job_id": body.get("job_id"),
            "task": body.get("task"),
            "outcome": event,
            "duration_ms": body.get("duration_ms"),
            "lateness_ms": self._late.pop(key, None),
            "due_at": body.get("due_at"),
            "error": body.get("error"),
        }
        text = f"run {fields['job_id']} ({fields['task']}) {event}"
        if fields["duration_ms"] is not None:
            text += f" in {fields['duration_ms']} ms"
        if fields["lateness_ms"] is not None:
            text += f", {fields['lateness_ms']} ms late"
        if fields["error"]:
            text += f": {fields['error']}"
        run_log.info("%s", text, extra={"run": fields})


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts (UTC, ms), level, logger, message, and the
    run fields of a run line; a traceback, if any, in ``exc``."""

    def format(self, record: logging.LogRecord) -> str:
        ts = datetime.fromtimestamp(record.created, UTC)
        out: dict[str, Any] = {
            "ts": f"{ts:%Y-%m-%dT%H:%M:%S}.{ts.microsecond // 1000:03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        run = getattr(record, "run", None)
        if isinstance(run, dict):
            out.update((k, run[k]) for k in RUN_FIELDS if run.get(k) is not None)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)
