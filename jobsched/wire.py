"""The wire format: a line in, a reply out.

A request is decoded and handled into a ``Pending`` reply; replies are encoded
only after the store has committed the batch they belong to, so that a failed
commit can still turn them into error 11 before anything is written.

Bounds checked here, before any handler runs: the decoder refuses non-finite
numbers (``jsonfast.loads``), and no value of the envelope or the body may nest
arrays/objects deeper than ``jsonfast.MAX_DEPTH`` (a payload deep enough would
be stored, then break every read of it). Encoding a reply cannot fail either:
if it ever does, the reply becomes error 13.

The hottest requests have a fast path (``fast``): the commonest ``schedule_job``
goes from its decoded body to the stored job and its reply line in one pass,
through the same readers and the same engine call as the general path
(``dispatch``), which answers everything else; a ``schedule_jobs`` runs as
``dispatch`` runs it, and its reply line is written here. ``JOBSCHED_FAST_PATH=0`` (or
``Context.fast_path = False``) turns it off; the differential tests run both.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from jobsched.errors import JobschedError, Unavailable
from jobsched.jobs import Job, Once

# dumps is exactly json.dumps with its default separators (", ", ": "), as the contract says
from jobsched.jsonfast import MAX_DEPTH, dumps, loads, may_be_too_deep, too_deep
from jobsched.messages import (
    HANDLERS,
    READ_ONLY,
    Context,
    Fields,
    schedule_batch,
    schedule_once,
    scheduled_entries,
)
from jobsched.timefmt import format_ms
from jobsched.validate import ONCE_KEYS

log = logging.getLogger("jobsched.wire")
_MISSING = object()


@dataclass(slots=True)
class Pending:
    """A reply waiting for its batch's commit."""

    envelope: dict[str, Any] | None  # None: the request was a bare body
    msg_id: Any  # _MISSING when the request had none
    reply_type: str
    fields: Fields
    changes: bool  # does this reply report a change (and so wait for the commit)?
    text: str | None = None  # the line, when the fast path wrote it already

    def fail_unavailable(self, text: str) -> None:
        if self.changes:
            self.reply_type, self.fields = "error", {"code": Unavailable.code, "text": text}
            self.text = None

    def encode(self) -> str:
        if self.text is not None:
            return self.text
        body: dict[str, Any] = {"type": self.reply_type}
        if self.msg_id is not _MISSING:
            body["in_reply_to"] = self.msg_id
        body.update(self.fields)
        try:
            if self.envelope is None:
                return dumps(body)
            self.envelope["body"] = body
            return dumps(self.envelope)
        except Exception as exc:  # a reply that cannot be written must not stop the node
            log.exception("cannot encode the %s reply; answering 13 instead", self.reply_type)
            return self._encode_crash(exc)

    def _encode_crash(self, exc: Exception) -> str:
        body: dict[str, Any] = {"type": "error"}
        if self.msg_id is not _MISSING and _encodes(self.msg_id):
            body["in_reply_to"] = self.msg_id
        text = f"internal error encoding the {self.reply_type} reply: {type(exc).__name__}"
        body.update(_error(13, text[:200]))
        if self.envelope is not None:
            envelope = {"src": self.envelope.get("src"), "dest": self.envelope.get("dest")}
            if _encodes(envelope):
                return dumps({**envelope, "body": body})
        return dumps(body)  # only strings and ints now: this cannot fail


def _encodes(value: Any) -> bool:
    try:
        dumps(value)
    except Exception:
        return False
    return True


def _error(code: int, text: str) -> Fields:
    return {"code": code, "text": text}


def malformed_line(text: str) -> Pending:
    """The bare error 12 for a line that is not a request at all."""
    return Pending(None, _MISSING, "error", _error(12, text), False)


def handle(ctx: Context, line: str | bytes) -> Pending | None:
    """Decode one line and run it; None for a blank line."""
    decoded = decode(ctx, line)
    if decoded is None or isinstance(decoded, Pending):
        return decoded
    reply = fast(ctx, *decoded)
    return dispatch(ctx, *decoded) if reply is None else reply


def unavailable(ctx: Context, line: str | bytes | Body, text: str) -> Pending | None:
    """Answer a line (or a bare body a transport read itself) with error 11
    without running it: its batch could not even begin a transaction, so
    nothing in it was applied."""
    decoded = bare(line) if isinstance(line, dict) else decode(ctx, line)
    if decoded is None or isinstance(decoded, Pending):
        return decoded
    body, envelope = decoded
    return Pending(envelope, body.get("msg_id", _MISSING), "error", _error(11, text), False)


Body = dict[str, Any]
Envelope = dict[str, Any] | None


def decode(ctx: Context, line: str | bytes) -> Pending | tuple[Body, Envelope] | None:
    """The request's body and reply envelope, or the error that answers the
    line (None for a blank one). Nothing is run yet."""
    if not line or line.isspace():  # blank (strip() would copy the whole line to say so)
        return None
    try:
        text = line if isinstance(line, str) else line.decode("utf-8")
        obj = loads(text)
    except (ValueError, RecursionError) as exc:
        return Pending(None, _MISSING, "error", _error(12, f"not valid JSON: {exc}"[:300]), False)
    if not isinstance(obj, dict) or ("body" not in obj and "type" not in obj):
        text = "a line must be a JSON object with a body or a type"
        return Pending(None, _MISSING, "error", _error(12, text), False)
    deep = may_be_too_deep(text)
    if "body" in obj:
        if deep and (field := _too_deep_field(obj, skip="body")) is not None:
            return _deep_envelope(ctx, obj, field)
        body = obj["body"]
        node = ctx.node_id if ctx.node_id is not None else obj.get("dest")
        envelope: dict[str, Any] | None = {"src": node, "dest": obj.get("src")}
    else:
        body, envelope = obj, None
    if not isinstance(body, dict):
        return Pending(
            envelope, _MISSING, "error", _error(12, "body: must be a JSON object"), False
        )
    return _checked(body, envelope) if deep else (body, envelope)


def bare(body: Body) -> Pending | tuple[Body, Envelope]:
    """A bare body a transport read itself (an HTTP route's), checked as
    ``decode`` checks a line's body."""
    return _checked(body, None)


def _checked(body: Body, envelope: Envelope) -> Pending | tuple[Body, Envelope]:
    """The request, or error 12 if a field of its body nests deeper than MAX_DEPTH."""
    if (field := _too_deep_field(body, _read_later(body))) is not None:
        # A msg_id that deep is not echoed: the reply itself must stay within bounds.
        msg_id = _MISSING if field == "msg_id" else body.get("msg_id", _MISSING)
        return Pending(envelope, msg_id, "error", _nested_error(field), False)
    return body, envelope


def _deep_envelope(ctx: Context, obj: dict[str, Any], field: str) -> Pending:
    """The error for an envelope ``field`` nested too deeply: addressed, and
    echoing msg_id, unless src, dest or msg_id is too deep to be written back."""
    src, dest = obj.get("src"), obj.get("dest")
    if too_deep(src, MAX_DEPTH) or too_deep(dest, MAX_DEPTH):
        return Pending(None, _MISSING, "error", _nested_error(field), False)
    body = obj["body"]
    msg_id = body.get("msg_id", _MISSING) if isinstance(body, dict) else _MISSING
    if too_deep(msg_id, MAX_DEPTH):
        msg_id = _MISSING
    node = ctx.node_id if ctx.node_id is not None else dest
    return Pending({"src": node, "dest": src}, msg_id, "error", _nested_error(field), False)


def _read_later(body: Body) -> str:
    """The field whose nesting the request's reader bounds as it reads it:
    a batch's specs (validate.batch_specs), walked here too they cost
    ~0.5 us a spec."""
    if body.get("type") == "schedule_jobs" and type(body.get("jobs")) is list:
        return "jobs"
    return ""


def _too_deep_field(obj: dict[str, Any], skip: str = "") -> str | None:
    """The first field of ``obj`` nesting deeper than MAX_DEPTH; msg_id first,
    so that the error knows whether it may echo it."""
    if too_deep(obj.get("msg_id"), MAX_DEPTH):
        return "msg_id"
    for name, value in obj.items():
        if name != skip and too_deep(value, MAX_DEPTH):
            return name[:64]
    return None


def _nested_error(field: str) -> Fields:
    return _error(12, f"{field}: is nested more than {MAX_DEPTH} levels deep (arrays and objects)")


def dispatch(ctx: Context, body: Body, envelope: Envelope) -> Pending:
    """Run a decoded request through its message handler (the general path)."""
    msg_id = body.get("msg_id", _MISSING)
    kind = body.get("type")
    handler = HANDLERS.get(kind) if isinstance(kind, str) else None
    if handler is None:
        if not isinstance(kind, str):
            fields = _error(12, "type: is required and must be a string")
        else:
            fields = _error(10, f"type: unknown message type {kind[:64]!r}")
        return Pending(envelope, msg_id, "error", fields, False)
    try:
        reply_type, fields = handler(ctx, body)
    except Exception as exc:
        return _failed(exc, str(kind), envelope, msg_id)
    if kind == "init" and envelope is not None and ctx.node_id is not None:
        envelope["src"] = ctx.node_id
    return Pending(envelope, msg_id, reply_type, fields, kind not in READ_ONLY)


def _failed(exc: Exception, kind: str, envelope: Envelope, msg_id: Any) -> Pending:
    """The error reply of a handler that raised: its code, or 13 for a bug
    (which must not stop the node)."""
    if isinstance(exc, JobschedError):
        return Pending(envelope, msg_id, "error", _error(exc.code, exc.text), exc.code == 11)
    log.error("crash handling %s", kind, exc_info=exc)
    text = f"internal error handling {kind}: {type(exc).__name__}"
    return Pending(envelope, msg_id, "error", _error(13, text), False)


def fast(ctx: Context, body: Body, envelope: Envelope) -> Pending | None:
    """The fast path of the hottest message, or None to take ``dispatch``.

    A ``schedule_job`` of the commonest kind (``messages.schedule_once``: a
    one-time job with a fresh id and default settings) goes from the decoded
    body to the stored job through the engine's own schedule path, and its
    reply line is written here directly, byte for byte what ``encode`` would
    write. Its one write, the insert, is its last step, so the stdio node
    runs it without a savepoint of its own (a store call is atomic: base.py,
    promise 1). Every other request, and every error the fast path is not
    sure to word as the general path does, goes to ``dispatch``."""
    if not ctx.fast_path:
        return None
    kind = body.get("type")
    if kind == "schedule_jobs":
        return _fast_batch(ctx, body, envelope)
    if kind != "schedule_job" or not ONCE_KEYS.issuperset(body):
        return None
    msg_id = body.get("msg_id", _MISSING)
    head = _reply_head(envelope, msg_id)  # before anything is written: it cannot fail then
    if head is None:
        return None
    try:
        job = schedule_once(ctx, body)
    except Exception as exc:
        return _failed(exc, "schedule_job", envelope, msg_id)
    if job is None:
        return None
    due = _due_text(job.first_due)  # type: ignore[arg-type] # a one-time job has its due time
    tail = "}" if envelope is not None else ""
    text = f'{head}, "job_id": "{job.job_id}", "scheduled_at": "{due}"}}{tail}'
    fields = {"job_id": job.job_id, "scheduled_at": due}
    return Pending(envelope, msg_id, "job_scheduled", fields, True, text)


def _fast_batch(ctx: Context, body: Body, envelope: Envelope) -> Pending | None:
    """schedule_jobs as ``dispatch`` runs it, with its reply line written
    here: the general encoder takes ~0.4 us a job to write what is mostly
    one id after another. A batch may write more than once (unique keys), so
    it takes its own savepoint, as ``dispatch``'s callers give it."""
    msg_id = body.get("msg_id", _MISSING)
    head = _reply_head(envelope, msg_id, "jobs_scheduled")
    if head is None:
        return None
    try:
        with ctx.engine.store.transaction():
            jobs, duplicates = schedule_batch(ctx, body)
            fields = {"jobs": scheduled_entries(jobs, duplicates)}
            # Inside the savepoint: a reply that cannot be written undoes the batch.
            entries = _entries_text(jobs, duplicates)
            if entries is None:
                entries = dumps(fields["jobs"])[1:-1]
    except Exception as exc:
        return _failed(exc, "schedule_jobs", envelope, msg_id)
    tail = "}" if envelope is not None else ""
    text = f'{head}, "jobs": [{entries}]}}{tail}'
    return Pending(envelope, msg_id, "jobs_scheduled", fields, True, text)


def _entries_text(jobs: list[Job], duplicates: set[int]) -> str | None:
    """``dumps(scheduled_entries(jobs, duplicates))`` without its brackets,
    byte for byte; None when an id would need escaping (none does: ids are
    ``fields.JOB_ID``'s characters, but a reply must never be broken JSON)."""
    ids = [job.job_id for job in jobs]
    joined = "".join(ids)
    if not (joined.isascii() and joined.isprintable()) or '"' in joined or "\\" in joined:
        return None
    dues = {(job.first_due, type(job.schedule) is Once) for job in jobs}
    if len(dues) == 1 and not duplicates:  # the commonest batch: one due time
        due = _due_json(*dues.pop())
        return '{"job_id": "' + f'", {due}}}, {{"job_id": "'.join(ids) + f'", {due}}}'
    texts: dict[tuple[int | None, bool], str] = {}
    parts = []
    for i, job in enumerate(jobs):
        key = (job.first_due, type(job.schedule) is Once)
        due = texts.get(key) or texts.setdefault(key, _due_json(*key))
        dup = ', "duplicate": true' if duplicates and i in duplicates else ""
        parts.append(f'{{"job_id": "{job.job_id}", {due}{dup}}}')
    return ", ".join(parts)


def _due_json(due: int | None, once: bool) -> str:
    """An entry's due field as dumps writes it."""
    name = "scheduled_at" if once else "next_run"
    return f'"{name}": null' if due is None else f'"{name}": "{format_ms(due)}"'


# The last due time written and its text, replaced whole (threads share it).
_last_due: tuple[int, str] = (-1, "")


def _due_text(due: int) -> str:
    """format_ms(due), remembering the last: requests of one millisecond with
    the same delay share their due time."""
    global _last_due
    last = _last_due
    if last[0] == due:
        return last[1]
    text = format_ms(due)
    _last_due = (due, text)
    return text


# Reply heads by (src, dest, reply type): a client mostly sends from one address.
_heads: dict[tuple[str | None, str | None, str], str] = {}


def _reply_head(envelope: Envelope, msg_id: Any, kind: str = "job_scheduled") -> str | None:
    """A ``kind`` reply's text up to its fields; None if it cannot be
    encoded (the general path then answers 13)."""
    try:
        if msg_id is _MISSING:
            reply_to = ""
        else:
            reply_to = f', "in_reply_to": {msg_id if type(msg_id) is int else dumps(msg_id)}'
        if envelope is None:
            return f'{{"type": "{kind}"{reply_to}'
        src, dest = envelope["src"], envelope["dest"]
        if _str_or_none(src) and _str_or_none(dest):
            head = _heads.get((src, dest, kind))
            if head is None:
                if len(_heads) > 64:
                    _heads.clear()
                head = _heads[(src, dest, kind)] = _envelope_head(src, dest, kind)
        else:
            head = _envelope_head(src, dest, kind)
        return head + reply_to
    except Exception:
        return None


def _str_or_none(value: Any) -> bool:
    return value is None or type(value) is str


def _envelope_head(src: Any, dest: Any, kind: str) -> str:
    return f'{{"src": {dumps(src)}, "dest": {dumps(dest)}, "body": {{"type": "{kind}"'
