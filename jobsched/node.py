"""The stdio node: lines in on stdin, replies out on stdout, one batch at a time.

Group commit: every complete line already waiting on stdin is handled inside
one store transaction (each request in its own savepoint, but for the fast
path's, whose one write is its last step: ``wire.fast``), the batch is
committed once, and only then are its replies written and flushed. A durable
store thus never acknowledges a change it has not committed, and a pipelining
client pays one fsync per batch, not per request.

User code never runs inside that transaction: when task handlers are loaded,
an ``execute_jobs``/``execute_job`` line ends the group before it (committed
and answered), and runs on its own: the engine commits its claim, runs the
handlers with no transaction open, commits the outcomes, and the reply is
written after that commit. Without handlers every task is a no-op, no user
code runs, and those lines stay in the group.

A line longer than ``MAX_LINE`` is discarded whole, up to its newline, and
answered once with error 12.
"""

from __future__ import annotations

import logging
import os
import select
import signal
import threading
from collections.abc import Callable
from typing import BinaryIO

from jobsched.errors import JobschedError
from jobsched.jsonfast import loads
from jobsched.maintenance import Maintenance
from jobsched.messages import RUNS_USER_CODE, Context
from jobsched.wire import Pending, decode, dispatch, fast, handle, malformed_line, unavailable

log = logging.getLogger("jobsched.node")
READ_SIZE = 1 << 16
# A line longer than this can only be an attack or a bug; it is answered with
# an error instead of growing the buffer without bound.
MAX_LINE = 8 << 20


class _Undo(Exception):
    def __init__(self, reply: Pending) -> None:
        self.reply = reply


class StdioNode:
    """``after_batch`` runs once a batch is committed and answered (the real-time
    dispatcher's wake-up: a job scheduled sooner than it knew). ``emit`` writes
    an unsolicited line (run events) without interleaving with replies.
    ``maintain``: run the maintenance routine after each batch (False when a
    dispatcher in the same process runs it)."""

    def __init__(
        self,
        ctx: Context,
        fd_in: int,
        out: BinaryIO,
        after_batch: Callable[[], None] | None = None,
        sigint: bool = False,
        maintain: bool = True,
    ) -> None:
        self.ctx = ctx
        self.fd_in = fd_in
        self.out = out
        self.after_batch = after_batch
        self._signals = (signal.SIGTERM, signal.SIGINT) if sigint else (signal.SIGTERM,)
        self._out_lock = threading.Lock()
        self._stopping = False
        # With handlers loaded, execute lines run outside the group's transaction.
        self._isolate_runs = bool(ctx.engine.registry.names())
        # Rescue, heartbeat, retention; a node whose real-time dispatcher runs
        # them (maintain=False) leaves them to it.
        self.maintenance = Maintenance(ctx.engine, ctx.engine.owner) if maintain else None

    def _on_term(self, signum: int, frame: object) -> None:
        # Only a flag: the wake-up pipe (set_wakeup_fd) ends the select, and
        # data already read is always processed before the loop looks at it.
        self._stopping = True

    def run(self) -> int:
        wake_r, wake_w = os.pipe()
        for fd in (wake_r, wake_w):
            os.set_blocking(fd, False)
        previous = [(s, signal.signal(s, self._on_term)) for s in self._signals]
        old_wakeup = signal.set_wakeup_fd(wake_w)
        try:
            self._loop(wake_r)
        finally:
            signal.set_wakeup_fd(old_wakeup)
            for sig, handler in previous:
                signal.signal(sig, handler)
            os.close(wake_r)
            os.close(wake_w)
        return 0

    def emit(self, line: str) -> None:
        """One unsolicited line (flag-enabled events only), whole, flushed."""
        with self._out_lock:
            self.out.write(line.encode() + b"\n")
            self.out.flush()

    def _loop(self, wake_r: int) -> None:
        pending = b""
        discarding = False  # inside a line over MAX_LINE: drop bytes up to its newline
        while not self._stopping:
            readable, _, _ = select.select([self.fd_in, wake_r], [], [])
            if self.fd_in not in readable:
                continue  # a signal: the loop condition decides
            chunk = os.read(self.fd_in, READ_SIZE)
            if not chunk:
                break
            if discarding:
                cut = chunk.find(b"\n")
                if cut < 0:
                    continue
                chunk, discarding = chunk[cut + 1 :], False
            lines = (pending + chunk).split(b"\n")
            pending = lines.pop()
            if len(pending) > MAX_LINE:
                lines.append(pending[: MAX_LINE + 1])  # answered once, as too long
                pending, discarding = b"", True
            if lines:
                self.process(lines)
        # A last line without its newline is answered at SIGTERM as at EOF (the
        # contract: "SIGTERM: the same"); cut off mid-write, it is answered 12.
        if pending.strip() and not discarding:
            self.process([pending])

    def process(self, lines: list[bytes]) -> None:
        """Handle a batch: groups of lines in one transaction each, split at
        the lines that run user code (see the module docstring)."""
        group: list[bytes] = []
        for line in lines:
            if self._isolate_runs and self._runs_user_code(line):
                self._group(group)
                group = []
                self._alone(line)
            else:
                group.append(line)
        self._group(group)
        if self.maintenance is not None:
            self.maintenance.run(self.ctx.clock())
        if self.after_batch is not None:
            self.after_batch()

    @staticmethod
    def _runs_user_code(line: bytes) -> bool:
        if b"execute_job" not in line:  # cheap: most lines are not
            return False
        try:
            obj = loads(line.decode("utf-8"))
        except (ValueError, RecursionError):
            return False
        body = obj.get("body", obj) if isinstance(obj, dict) else None
        return isinstance(body, dict) and body.get("type") in RUNS_USER_CODE

    def _alone(self, line: bytes) -> None:
        """A line that runs handlers: no transaction of ours around it (the
        engine commits before and after the handlers); answered at once."""
        reply = handle(self.ctx, line)
        if reply is not None:
            self._write([reply])

    def _group(self, lines: list[bytes]) -> None:
        """Handle lines in one transaction, then write their replies."""
        if not lines:
            return
        replies: list[Pending] = []
        store = self.ctx.engine.store
        try:
            with store.transaction():
                for line in lines:
                    reply = self._one(line)
                    if reply is not None:
                        replies.append(reply)
        except JobschedError as exc:
            # Begin or commit failed: nothing in this batch is durable, so
            # nothing in it may be acknowledged as done, and every line still
            # gets its one reply.
            log.error("batch not committed: %s", exc)
            text = f"storage unavailable, nothing changed: {exc.text}"
            if len(replies) < sum(1 for line in lines if line.strip()):
                replies = [r for r in (unavailable(self.ctx, line, text) for line in lines) if r]
            for reply in replies:
                reply.fail_unavailable(text)
        self._write(replies)

    def _write(self, replies: list[Pending]) -> None:
        if replies:
            data = "".join(r.encode() + "\n" for r in replies).encode()
            with self._out_lock:  # the dispatcher thread may emit events
                self.out.write(data)
                self.out.flush()

    def _one(self, line: bytes) -> Pending | None:
        if len(line) > MAX_LINE:
            return malformed_line(f"a line may be at most {MAX_LINE} bytes")
        decoded = decode(self.ctx, line)
        if decoded is None or isinstance(decoded, Pending):
            return decoded
        # The fast path writes at most once, as its last step: no savepoint.
        reply = fast(self.ctx, *decoded)
        if reply is not None:
            return reply
        try:
            with self.ctx.engine.store.transaction():
                reply = dispatch(self.ctx, *decoded)
                if reply.reply_type == "error":
                    raise _Undo(reply)  # roll this request back to its savepoint
        except _Undo as undo:
            return undo.reply
        return reply
