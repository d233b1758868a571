"""Reading requests: whole schedule specs, batches and queue settings, from
the single-field readers of ``fields`` (re-exported here: callers read every
field through this module)."""

from __future__ import annotations

from typing import Any

from jobsched.cron import CronExpr
from jobsched.engine import MAX_BATCH
from jobsched.errors import Malformed
from jobsched.fields import JOB_ID as JOB_ID
from jobsched.fields import boolean as boolean
from jobsched.fields import integer as integer
from jobsched.fields import job_id as job_id
from jobsched.fields import kind
from jobsched.fields import optional_job_id as optional_job_id
from jobsched.fields import state as state
from jobsched.fields import text as text
from jobsched.fields import timezone as timezone
from jobsched.jobs import (
    DEFAULT_OPTIONS,
    DEFAULT_QUEUE,
    DEFAULT_RETRY,
    MAX_BACKOFF_MS,
    MAX_PRIORITY,
    JobOptions,
    RetryPolicy,
)
from jobsched.jsonfast import MAX_DEPTH, may_be_too_deep, too_deep
from jobsched.jsonfast import dumps_canonical as _dumps_canonical
from jobsched.jsonfast import dumps_compact as _dumps_compact
from jobsched.jsonfast import dumps_compact_ascii as _dumps_compact_ascii
from jobsched.queues import QueueChange
from jobsched.spec import ScheduleSpec
from jobsched.timefmt import MAX_MS, SPAN_MS, parse_timestamp

WHEN_FIELDS = ("delay_ms", "run_at", "cron", "interval_ms")
RETRY_FIELDS = ("max_attempts", "base_ms", "max_backoff_ms", "jitter")
DEFAULT_MAX_PAYLOAD = 65_536
_RETRY_KEYS = frozenset((*RETRY_FIELDS, "retry"))
_OPTION_KEYS = frozenset(("timeout_ms", "catchup_window_ms", "overlap", "misfire"))
_QUEUE_KEYS = frozenset(("queue", "priority", "unique_key", "unique_for_ms"))
# Bounds of what can ever be valid. Backoffs are clamped at 100 years, so a
# larger base_ms or max_backoff_ms could never take effect. A run's timeout is
# waited for with threading, whose longest wait (threading.TIMEOUT_MAX) is
# about 292 years. A delay, interval or window longer than SPAN_MS (year 0001
# to 9999) can never name a time jobsched represents.
MAX_TIMEOUT_MS = MAX_BACKOFF_MS
# An expression with every field (seconds too) spelt out as a full list is
# about 530 characters; parsing is linear in the length, and a line-sized
# expression would stall the node for seconds.
MAX_CRON_LEN = 1024
_LIMITS = {
    "base_ms": MAX_BACKOFF_MS,
    "max_backoff_ms": MAX_BACKOFF_MS,
    "max_attempts": MAX_MS,
}


def schedule_spec(
    body: dict[str, Any], max_payload: int = DEFAULT_MAX_PAYLOAD, now: int | None = None
) -> ScheduleSpec:
    """The whole schedule_job request, validated; with ``now`` (the request's
    time) also whether it can have a first occurrence at all."""
    task = text(body.get("task"), "task")
    payload = body.get("payload", {})
    payload_json = _payload_json(payload, max_payload)
    given = [name for name in WHEN_FIELDS if body.get(name) is not None]
    if len(given) > 1:
        raise Malformed(
            given[1], f"give at most one of {', '.join(WHEN_FIELDS)} (got {' and '.join(given)})"
        )
    tz = timezone(body.get("timezone"))
    when: dict[str, Any] = {}
    if given:
        when = _when(given[0], body[given[0]], tz)
        if now is not None and now + when.get("interval_ms", 0) > MAX_MS:
            # The grid's first point is now + interval_ms: none lies before year 9999.
            raise Malformed("interval_ms", "puts the due time past the year 9999")
    jid = optional_job_id(body, "job_id")
    # Most requests carry no retry or option fields: skip their readers then.
    keys = body.keys()
    retry = DEFAULT_RETRY if keys.isdisjoint(_RETRY_KEYS) else _retry(body)
    options = DEFAULT_OPTIONS if keys.isdisjoint(_OPTION_KEYS) else _options(body)
    placing = _NO_PLACING if keys.isdisjoint(_QUEUE_KEYS) else placing_fields(body)
    key = legacy = None
    if jid is not None:
        # Everything but msg_id and current_time, normalised, so that the same
        # job sent flat or nested, with defaults spelt out or not, its payload's
        # keys in any order, is the same spec.
        parts = [
            task,
            _payload_key(payload, payload_json),
            sorted(when.items()),
            tz if "cron" in when else None,
            list(_astuple_retry(retry)),
            list(_astuple_options(options)),
            # Only when set: the keys of jobs stored before queues existed stay valid.
            *([list(placing.values())] if placing != _NO_PLACING else []),
        ]
        key = _dumps_compact(parts)
        # The payload as keys of jobs stored before were made of it (as
        # sent): a re-send of one of those stays a re-send.
        if payload_json != parts[1]:
            parts[1] = payload_json
            legacy = _dumps_compact(parts)
    return ScheduleSpec(
        task=task,
        payload_json=payload_json,
        timezone=tz,
        retry=retry,
        options=options,
        job_id=jid,
        spec_key=key,
        legacy_key=legacy,
        **placing,
        **when,
    )


# The commonest schedule_job: a one-time job of a task with a payload, due now,
# after delay_ms or at run_at, with every other setting at its default.
ONCE_KEYS = frozenset(("type", "msg_id", "current_time", "task", "payload", "delay_ms", "run_at"))


def once_spec(
    body: dict[str, Any], max_payload: int = DEFAULT_MAX_PAYLOAD, depth: int = MAX_DEPTH
) -> ScheduleSpec | None:
    """``schedule_spec(body, max_payload)`` for the commonest request, in one
    pass; None for any other shape, and for a body schedule_spec refuses (it
    then names the error, in its own order). Built from the same readers, so
    the rules cannot differ; the stdio fast path's differential tests
    (tests/test_engine_equivalence.py, tests/test_node_fuzz.py) hold the two
    to the same answers. ``depth``: how deeply the payload may nest (less in
    a batch's spec, ``batch_specs``)."""
    if not ONCE_KEYS.issuperset(body):
        return None
    delay, run_at = body.get("delay_ms"), body.get("run_at")
    try:
        task = text(body.get("task"), "task")
        payload_json = _payload_json(body.get("payload", {}), max_payload, depth)
        if delay is not None:
            if run_at is not None:
                return None
            delay = when_value("delay_ms", delay)
        elif run_at is not None:
            run_at = when_value("run_at", run_at)
    except Malformed:
        return None
    return ScheduleSpec(task, payload_json, delay, run_at)


_NO_PLACING: dict[str, Any] = {
    "queue": DEFAULT_QUEUE,
    "priority": 0,
    "unique_key": None,
    "unique_for_ms": None,
}


def queue_name(value: Any, field: str = "queue") -> str:
    """A queue name: the same rules as a task name."""
    return text(value, field)


def queue_change(body: dict[str, Any]) -> QueueChange:
    """The fields of configure_queue: a field left out keeps its setting;
    ``null`` removes a limit."""
    concurrency = body.get("concurrency")
    rate = body.get("rate_limit")
    paused = body.get("paused")
    rate_max = per_ms = None
    if rate is not None:
        if not isinstance(rate, dict) or set(rate) - {"max", "per_ms"}:
            raise Malformed("rate_limit", "must be an object {max, per_ms}")
        rate_max = integer(rate.get("max"), "rate_limit.max", 1, 1_000_000_000)
        per_ms = integer(rate.get("per_ms"), "rate_limit.per_ms", 1, SPAN_MS)
    return QueueChange(
        concurrency=None
        if concurrency is None
        else integer(concurrency, "concurrency", 1, 1_000_000),
        clear_concurrency="concurrency" in body and concurrency is None,
        rate_max=rate_max,
        rate_per_ms=per_ms,
        clear_rate="rate_limit" in body and rate is None,
        paused=None if paused is None else boolean(paused, "paused"),
    )


def placing_fields(body: dict[str, Any]) -> dict[str, Any]:
    """queue, priority, unique_key and unique_for_ms of a spec (docs/queues.md)."""
    queue = body.get("queue")
    priority = body.get("priority")
    key = body.get("unique_key")
    window = body.get("unique_for_ms")
    if window is not None and key is None:
        raise Malformed("unique_for_ms", "needs a unique_key")
    return {
        "queue": DEFAULT_QUEUE if queue is None else queue_name(queue),
        "priority": 0 if priority is None else integer(priority, "priority", 0, MAX_PRIORITY),
        "unique_key": None if key is None else text(key, "unique_key", 1000),
        "unique_for_ms": None if window is None else integer(window, "unique_for_ms", 1, SPAN_MS),
    }


# How deeply a spec of a batch may nest: "jobs" itself is the first of the
# field's MAX_DEPTH levels.
_SPEC_DEPTH = MAX_DEPTH - 1

# Fields of a schedule_jobs message that a spec of its batch may not carry:
# they belong to the message (one "now" for the whole batch).
_BATCH_ONLY = ("current_time",)


def batch_specs(
    value: Any, max_payload: int = DEFAULT_MAX_PAYLOAD, now: int | None = None, fast: bool = True
) -> list[ScheduleSpec]:
    """The ``jobs`` of a schedule_jobs request, each read as a schedule_job
    body; an error names the spec by its index (``jobs[7].delay_ms: ...``).
    ``fast``: a spec of the commonest shape is read by ``once_spec``."""
    if value is None:
        raise Malformed("jobs", "is required: an array of schedule_job specs")
    if not isinstance(value, list):
        raise Malformed("jobs", f"must be an array of schedule_job specs, not {kind(value)}")
    if len(value) > MAX_BATCH:
        raise Malformed("jobs", f"at most {MAX_BATCH} jobs per batch, not {len(value)}")
    specs = []
    for i, item in enumerate(value):
        if fast and type(item) is dict and item.get("current_time") is None:
            spec = once_spec(item, max_payload, _SPEC_DEPTH - 1)
            if spec is not None and not (
                ("type" in item or "msg_id" in item) and too_deep(item, _SPEC_DEPTH)
            ):
                specs.append(spec)
                continue
        # The nesting bound of the "jobs" field (docs/protocol.md), which
        # wire.decode leaves to this reading of it: once_spec checked it above.
        if too_deep(item, _SPEC_DEPTH):
            raise Malformed(
                "jobs", f"is nested more than {MAX_DEPTH} levels deep (arrays and objects)"
            )
        if not isinstance(item, dict):
            raise Malformed(f"jobs[{i}]", f"must be a schedule_job spec object, not {kind(item)}")
        for name in _BATCH_ONLY:
            if item.get(name) is not None:
                raise Malformed(f"jobs[{i}].{name}", "belongs to the batch, not to one of its jobs")
        try:
            specs.append(schedule_spec(item, max_payload, now))
        except Malformed as exc:
            where = f"jobs[{i}].{exc.field}" if exc.field else f"jobs[{i}]"
            raise Malformed(where, exc.problem) from None
    return specs


def _payload_json(payload: Any, max_payload: int, depth: int = MAX_DEPTH) -> str:
    """The payload as the compact JSON text stores keep, within the limits
    (nesting at most ``depth`` levels: less inside a batch's spec)."""
    try:
        payload_json: str | None = _dumps_compact(payload)
    except RecursionError:
        payload_json = None
    # A payload nested deeper is refused: stored, it could break every read of it.
    if payload_json is None or (may_be_too_deep(payload_json, depth) and too_deep(payload, depth)):
        raise Malformed(
            "payload", f"is nested more than {MAX_DEPTH} levels deep (arrays and objects)"
        )
    if not payload_json.isascii():
        try:
            payload_json.encode()
        except UnicodeEncodeError:
            # A lone surrogate (JSON "\ud800") is valid JSON but not UTF-8:
            # keep it escaped, as the sender wrote it, so every store can hold it.
            payload_json = _dumps_compact_ascii(payload)
    if len(payload_json) * 4 > max_payload and len(payload_json.encode()) > max_payload:
        size = len(payload_json.encode())
        raise Malformed("payload", f"is {size} bytes as compact JSON; the limit is {max_payload}")
    return payload_json


def _payload_key(payload: Any, payload_json: str) -> str:
    """The payload as idempotency compares it: its objects' keys in one order.
    An ASCII text with no object of two keys or more is that already (the
    commonest payload, one key: its canonical text is not made again)."""
    if type(payload) is not dict and type(payload) is not list:
        return payload_json
    if payload_json.isascii():
        objects = payload_json.count("{")  # a "{" in a string only costs the exact path
        if objects == 0 or (objects == 1 and type(payload) is dict and len(payload) < 2):
            return payload_json
    return _dumps_canonical(payload)


def _when(name: str, value: Any, tz: str) -> dict[str, Any]:
    return {name: when_value(name, value, tz)}


def when_value(name: str, value: Any, tz: str = "UTC") -> Any:
    """The value of the "when" field ``name`` (one of WHEN_FIELDS), read."""
    if name == "delay_ms":
        return integer(value, name, 0, SPAN_MS)
    if name == "interval_ms":
        return integer(value, name, 1, SPAN_MS)
    if name == "run_at":
        return parse_timestamp(value, name)
    if not isinstance(value, str) or not value.strip():
        raise Malformed("cron", f"must be a cron expression string, not {kind(value)}")
    if len(value) > MAX_CRON_LEN:
        raise Malformed("cron", f"must be at most {MAX_CRON_LEN} characters, not {len(value)}")
    CronExpr.parse(value, tz)  # raises CronError naming the bad field
    return value


def _retry(body: dict[str, Any]) -> RetryPolicy:
    nested = body.get("retry")
    if nested is None:
        nested = {}
    elif not isinstance(nested, dict):
        raise Malformed("retry", f"must be an object, not {kind(nested)}")
    for key in nested:
        if key not in RETRY_FIELDS:
            raise Malformed(
                f"retry.{key[:64]}", f"unknown field; retry takes {', '.join(RETRY_FIELDS)}"
            )
    values: dict[str, Any] = {}
    for name in RETRY_FIELDS:
        flat, inner = body.get(name), nested.get(name)
        if flat is not None and inner is not None and flat != inner:
            raise Malformed(name, "given both flat and in retry with different values")
        value = flat if flat is not None else inner
        if value is None:
            continue
        where = name if flat is not None else f"retry.{name}"
        if name == "jitter":
            values[name] = boolean(value, where)
        else:
            values[name] = integer(value, where, 1 if name == "max_attempts" else 0, _LIMITS[name])
    return RetryPolicy(**values) if values else DEFAULT_RETRY


def _options(body: dict[str, Any]) -> JobOptions:
    values: dict[str, Any] = {}
    if body.get("timeout_ms") is not None:
        values["timeout_ms"] = integer(body["timeout_ms"], "timeout_ms", 1, MAX_TIMEOUT_MS)
    if body.get("catchup_window_ms") is not None:
        window = integer(body["catchup_window_ms"], "catchup_window_ms", 0, SPAN_MS)
        values["catchup_window_ms"] = window
    for name, allowed in (("overlap", ("skip", "allow")), ("misfire", ("coalesce", "skip", "all"))):
        value = body.get(name)
        if value is None:
            continue
        if value not in allowed:
            raise Malformed(name, f"must be one of {', '.join(allowed)}")
        values[name] = value
    return JobOptions(**values) if values else DEFAULT_OPTIONS


def _astuple_retry(r: RetryPolicy) -> tuple[Any, ...]:
    return (r.max_attempts, r.base_ms, r.max_backoff_ms, r.jitter)


def _astuple_options(o: JobOptions) -> tuple[Any, ...]:
    return (o.timeout_ms, o.overlap, o.misfire, o.catchup_window_ms)
