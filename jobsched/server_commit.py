"""Group commit for the HTTP service: concurrent writes share one transaction.

A request that may change something becomes a ``Write``, queued here. The
request thread that finds no writer at work becomes the writer: it takes the
writes queued (at most ``MAX_GROUP``), handles them in one store transaction,
each in a savepoint of its own, commits once, and only then answers each of
them; then it takes the writes queued meanwhile, until none is left. The
other request threads do not wait for it: they queue their write and go back
to serving; their answers leave after the commit that made them durable.

So one commit, one fsync on SQLite ``FULL``, serves every write that arrived
while the previous one was being made, as the stdio node's batches do
(``jobsched.node``): with N clients writing at once, up to N writes per
commit. A group is never held back to grow: a write arriving at an idle writer
is committed at once, alone, so an idle service adds no latency; under load a
write waits at most for the group in progress, then for its own.

Within a group, an error reply rolls its request back to its savepoint, and
so does a reply that cannot be encoded (answered 500): the other requests go
on and commit. A fault of the store (a failed savepoint statement, begin or
commit) leaves nothing of the group durable, and every request in it is
answered 503 (code 11): nothing changed.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from jobsched.errors import JobschedError
from jobsched.http_conn import Response, error
from jobsched.messages import Context
from jobsched.wire import Body, Envelope, Pending, bare, decode, dispatch, fast, unavailable

log = logging.getLogger("jobsched.server")

# A group is one transaction: this bounds how long it holds the store's write
# lock (the dispatcher and other nodes wait for it) and the latency of its
# first write (~64 x 50 us of CPU on SQLite). Beyond it, the next group.
MAX_GROUP = 64
STATUS = {10: 400, 11: 503, 12: 400, 13: 500, 20: 404, 21: 409, 22: 409}

# Called once with the request's response, after its commit, from the writer's thread.
Answer = Callable[[Response], None]


class Unencodable(Exception):
    """Raised inside a request's savepoint when its reply cannot be written as
    JSON, so that its writes roll back instead of being answered by a 500."""

    def __init__(self, response: Response) -> None:
        self.response = response


def encode(reply: Pending | None, created: bool) -> Response:
    """The HTTP response for a protocol reply; raises ``Unencodable``."""
    if reply is None:
        return error(400, 12, "body: is empty")
    status = 201 if created else 200
    if reply.reply_type == "error":
        status = STATUS.get(int(reply.fields.get("code", 13)), 500)
    try:
        return Response(status, reply.encode().encode())
    except (ValueError, TypeError) as exc:
        log.error("a %s reply could not be encoded: %s", reply.reply_type, exc)
        raise Unencodable(error(500, 13, "internal error: the reply could not be encoded")) from exc


def encoded(reply: Pending | None, created: bool) -> Response:
    """``encode``, with a reply that cannot be encoded answered 500."""
    try:
        return encode(reply, created)
    except Unencodable as exc:
        return exc.response


@dataclass(frozen=True, slots=True)
class Change:
    """A protocol request: its line, or its body when the route decoded it
    already (a bare body, whose nesting is checked when ``deep``: it might
    nest too deeply); and whether success is 201 (a route that creates)."""

    text: str
    created: bool = False
    body: Body | None = None
    deep: bool = False

    def message(self) -> str | Body:
        """The line, or the bare body (never encoded and read again as a line)."""
        return self.text if self.body is None else self.body


def request(ctx: Context, change: Change) -> Pending | tuple[Body, Envelope] | None:
    """The change as ``wire.decode`` gives it: the request, or the reply to a line
    that is none (None for a blank one)."""
    if change.body is None:
        return decode(ctx, change.text)
    return bare(change.body) if change.deep else (change.body, None)


def run(ctx: Context, change: Change) -> Pending | None:
    """``wire.handle`` for a change: its reply, in whatever transaction is open."""
    decoded = request(ctx, change)
    if decoded is None or isinstance(decoded, Pending):
        return decoded
    return fast(ctx, *decoded) or dispatch(ctx, *decoded)


@dataclass(slots=True, eq=False)
class Write:
    """One request of a group: its change in, its response out."""

    change: Change
    answer: Answer
    reply: Pending | None = None
    response: Response | None = None


class _Undo(Exception):
    pass


class GroupCommit:
    """The queue of writes and its one writer at a time."""

    def __init__(
        self,
        ctx: Context,
        on_change: Callable[[], None] | None = None,
        max_group: int = MAX_GROUP,
    ) -> None:
        self.ctx = ctx
        self.on_change = on_change
        self.max_group = max(max_group, 1)
        self._lock = threading.Lock()
        self._queue: deque[Write] = deque()
        self._writing = False  # a thread is the writer: it will take what is queued
        # For /metrics: groups handled, and the writes in them (their mean size).
        self.groups = 0
        self.writes = 0

    def submit(self, write: Write) -> None:
        """Queue a write; answered (``write.answer``) after its commit, by this
        thread if it becomes the writer, else by the writer at work."""
        with self._lock:
            self._queue.append(write)
            if self._writing:
                return
            self._writing = True
        self._drain()

    def run(self, change: Change) -> Response:
        """Submit and wait for the answer (for a caller that cannot be called back)."""
        got: list[Response] = []
        done = threading.Event()

        def answer(response: Response) -> None:
            got.append(response)
            done.set()

        self.submit(Write(change, answer))
        done.wait()
        return got[0]

    def _drain(self) -> None:
        while True:
            with self._lock:
                queue = self._queue
                if not queue:
                    self._writing = False
                    return
                if len(queue) <= self.max_group:
                    group = list(queue)
                    queue.clear()
                else:
                    group = [queue.popleft() for _ in range(self.max_group)]
                self.groups, self.writes = self.groups + 1, self.writes + len(group)
            try:
                changed = self._commit(group)
            except BaseException:
                # A bug: the transaction rolled back on the way out, so nothing
                # of the group is durable; each request still gets its answer.
                log.exception("crash committing a group of %d writes", len(group))
                for w in group:
                    w.response = error(500, 13, "internal error: nothing was changed")
                changed = False
            if changed and self.on_change is not None:
                self.on_change()  # first: a job due now starts as its client hears of it
            for w in group:
                _answer(w)

    def _commit(self, group: list[Write]) -> bool:
        """Handle the group in one transaction; True if a committed reply changed something."""
        store = self.ctx.engine.store
        try:
            with store.transaction():
                for w in group:
                    self._one(w)
        except JobschedError as exc:
            # Begin, a savepoint or the commit failed: nothing of the group is
            # durable, so nothing in it may be acknowledged as done.
            why = f"storage unavailable, nothing changed: {exc.text}"
            log.error("%d write(s) not committed: %s", len(group), exc.text)
            for w in group:
                if w.reply is None:
                    w.reply = unavailable(self.ctx, w.change.message(), why)
                else:
                    w.reply.fail_unavailable(why)
                w.response = encoded(w.reply, w.change.created)
            return False
        return any(w.reply is not None and w.reply.changes for w in group)

    def _one(self, w: Write) -> None:
        """One request in its savepoint: an error, or a reply that cannot be
        encoded, undoes its writes and no one else's."""
        created = w.change.created
        decoded = request(self.ctx, w.change)
        if decoded is None or isinstance(decoded, Pending):
            w.reply, w.response = decoded, encoded(decoded, created)  # nothing to run
            return
        # As in the stdio node: the fast path writes at most once, as its last
        # step, and its reply text is made before that: no savepoint.
        w.reply = fast(self.ctx, *decoded)
        if w.reply is not None:
            w.response = encoded(w.reply, created)
            return
        try:
            with self.ctx.engine.store.transaction():
                w.reply = dispatch(self.ctx, *decoded)
                if w.reply.reply_type == "error":
                    raise _Undo
                w.response = encode(w.reply, created)  # inside: failing rolls it back
        except _Undo:
            w.response = encoded(w.reply, created)
        except Unencodable as exc:
            w.response = exc.response


def _answer(w: Write) -> None:
    response = w.response or error(500, 13, "internal error: no answer was made")
    try:
        w.answer(response)
    except Exception:  # the callback is the server's; one failing must not cost the others
        log.exception("could not hand an answer back")
