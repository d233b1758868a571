"""Calling user code without letting it reach the scheduler that runs it.

A handler is user code in the scheduler's own process. Whatever it raises is
its run's failure, ``BaseException`` included: ``argparse`` raises
``SystemExit``, and a handler is not the scheduler's main loop (a real Ctrl-C
reaches the process's own signal handler, see ``cli.run_node``). ``call``,
``call_coroutine`` and their deadline variants never raise; the failure's text
is always storable and sendable (``error_text``).

The stdio node's replies are lines on fd 1 and its requests lines on fd 0;
anything a handler (or a child process it starts) printed would be a forged
protocol line, anything it read a stolen request. ``protect_stdout`` and
``protect_stdin`` move the protocol to private descriptors and leave fd 1
pointing at stderr, fd 0 at /dev/null.

A handler that calls ``os.fork()`` copies the whole scheduler. If the copy
returns from the handler (instead of exec-ing or exiting) it would carry on as
a second scheduler: answering requests, writing the store, running jobs.
``leave_if_forked`` ends such a child where the handler returns, and the
protocol writer refuses to write from any process but the one that created it.
"""

from __future__ import annotations

import inspect
import io
import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, BinaryIO

from jobsched.errors import JobschedError

if TYPE_CHECKING:
    import asyncio

log = logging.getLogger("jobsched.runner")  # the handlers' logger, as before the split

Handler = Callable[[Any], Any]
MAX_ERROR = 2000
# How long Runner.stop lets cancelled coroutines run their cleanup.
STOP_BOUND_S = 1.0


@dataclass(frozen=True, slots=True)
class Outcome:
    """How a run ended: ``error`` is the failure's text, at most ``MAX_ERROR`` characters."""

    ok: bool
    error: str | None = None
    timed_out: bool = False


SUCCESS = Outcome(True)


def error_text(exc: BaseException) -> str:
    """``Type: text``, safe to store and to send whatever the exception holds."""
    name = type(exc).__name__
    try:
        text = str(exc)
    except BaseException:  # a user's __str__ may raise anything; the run still fails
        return name
    full = f"{name}: {text}" if text else name
    # Lone surrogates cannot be encoded as UTF-8 and PostgreSQL text refuses
    # NUL: either would turn the run's failure into a failed store write.
    clean = full.encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\x00")
    return clean[:MAX_ERROR]


def error_outcome(exc: BaseException) -> Outcome:
    return Outcome(False, error_text(exc))


def timeout_outcome(timeout_ms: int) -> Outcome:
    return Outcome(False, f"timed out after {timeout_ms} ms", timed_out=True)


class ForeignProcessWrite(JobschedError):
    """A process other than the node (a handler's forked child) tried to write a reply."""


class _OwnedFile(io.FileIO):
    """A file descriptor only its creating process may write to."""

    def __init__(self, fd: int) -> None:
        super().__init__(fd, "wb", closefd=True)
        self._owner = os.getpid()

    def write(self, data: Any) -> int:
        if os.getpid() != self._owner:
            raise ForeignProcessWrite(
                f"process {os.getpid()} (a fork of {self._owner}) may not write protocol lines"
            )
        return super().write(data)


def protect_stdout() -> BinaryIO:
    """Give the protocol a private copy of stdout and send everything else
    written to stdout (``print``, ``os.write(1, ...)``, child processes) to stderr.

    Returns the protocol's writer: buffered (it writes whole chunks even after
    a signal cuts a write short), to be flushed after each batch of replies."""
    if sys.stdout is not None:
        sys.stdout.flush()  # whatever was printed before belongs before the replies
    protocol = os.dup(1)  # not inheritable: handlers' child processes never get it
    os.dup2(2, 1)
    # Line-buffered text straight to fd 1 (now stderr): a forked child inherits
    # no half-written buffer of its parent's prints.
    sys.stdout = io.TextIOWrapper(
        io.FileIO(1, "w", closefd=False),
        encoding=getattr(sys.stdout, "encoding", None) or "utf-8",
        errors="backslashreplace",
        line_buffering=True,
        write_through=True,
    )
    return io.BufferedWriter(_OwnedFile(protocol))


def protect_stdin() -> int:
    """Give the protocol a private copy of stdin; handlers (and their child
    processes: ``ssh`` and ``cat`` read stdin by default) see /dev/null.

    Returns the protocol's descriptor."""
    protocol = os.dup(0)
    null = os.open(os.devnull, os.O_RDONLY)
    try:
        os.dup2(null, 0)
    finally:
        os.close(null)
    return protocol


def exit_status(exc: BaseException | None) -> int:
    """The status a forked child ends with: what it asked for with sys.exit, else 0 or 1."""
    if exc is None:
        return 0
    if isinstance(exc, SystemExit):
        code = exc.code
        return code if isinstance(code, int) else 0 if code is None else 1
    return 1


def leave_if_forked(pid: int, status: int) -> None:
    """Called where a handler returned or raised, with the pid noted before the
    call: in a forked child of the handler, end that child now with ``status``.

    ``os._exit``, not ``sys.exit``: the child must run no ``finally`` or
    ``atexit`` code of the scheduler and flush no buffer copied from its parent
    (that would write its parent's pending output a second time)."""
    if os.getpid() != pid:
        os._exit(status)


# -- calling a handler --------------------------------------------------------------


def call(handler: Handler, payload: Any) -> Outcome:
    """Run a plain handler in this thread. Never raises."""
    pid = os.getpid()
    try:
        result = handler(payload)
        if inspect.isawaitable(result):  # a plain function that returned a coroutine
            import asyncio  # imported when first needed: it costs the node ~25 ms at start

            asyncio.run(_awaited(result))
        elif inspect.isgenerator(result):  # a generator function: its body runs only when drained
            for _ in result:
                pass
    except BaseException as exc:  # a user's handler may raise anything, SystemExit too
        leave_if_forked(pid, exit_status(exc))
        return error_outcome(exc)
    leave_if_forked(pid, 0)
    return SUCCESS


async def _awaited(result: Any) -> None:
    await result


async def call_coroutine(handler: Handler, payload: Any, timeout_ms: int | None) -> Outcome:
    """Await a coroutine handler. Raises only the cancellation of its own task."""
    pid = os.getpid()
    try:
        outcome = await _awaited_outcome(handler, payload, timeout_ms)
    except BaseException as exc:
        leave_if_forked(pid, exit_status(exc))
        raise
    leave_if_forked(pid, 0 if outcome.ok else 1)
    return outcome


async def _awaited_outcome(handler: Handler, payload: Any, timeout_ms: int | None) -> Outcome:
    import asyncio

    # asyncio.timeout, not wait_for: on 3.11 wait_for awaits the handler in a
    # task of its own, and a task that raises SystemExit stops the whole loop.
    deadline = asyncio.timeout(None if timeout_ms is None else timeout_ms / 1000)
    try:
        async with deadline:
            await handler(payload)
    except TimeoutError as exc:
        return timeout_outcome(timeout_ms or 0) if deadline.expired() else error_outcome(exc)
    except asyncio.CancelledError as exc:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise  # our task is cancelled (the runner stops): not the handler's outcome
        return error_outcome(exc)
    except BaseException as exc:  # a user's handler may raise anything, SystemExit too
        return error_outcome(exc)
    return SUCCESS


def run_coroutine(handler: Handler, payload: Any, timeout_ms: int | None) -> Outcome:
    import asyncio

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return _run_on_new_loop(handler, payload, timeout_ms)
    # Called from inside a running loop (unusual): run it on a loop of its own.
    box: list[Outcome] = []
    t = threading.Thread(
        target=lambda: box.append(_run_on_new_loop(handler, payload, timeout_ms)), daemon=True
    )
    t.start()
    t.join()
    return box[0]


def _run_on_new_loop(handler: Handler, payload: Any, timeout_ms: int | None) -> Outcome:
    import asyncio

    try:
        return asyncio.run(call_coroutine(handler, payload, timeout_ms))
    except BaseException as exc:  # asyncio lets SystemExit out of a task the handler started
        return error_outcome(exc)


def coroutine_with_deadline(handler: Handler, payload: Any, timeout_ms: int) -> Outcome:
    """``run_coroutine`` bounded as a sync handler is (``call_with_deadline``):
    on a thread of its own, abandoned at the deadline. The loop's own timeout
    only cancels the coroutine, which a handler blocking its loop never sees
    and one catching the cancellation survives (it then "succeeds"): a run
    that has not ended within ``timeout_ms`` is a timeout, however it ends."""
    box: list[Outcome] = []
    started = time.monotonic()
    t = threading.Thread(
        target=lambda: box.append(run_coroutine(handler, payload, timeout_ms)), daemon=True
    )
    t.start()
    t.join(timeout_ms / 1000)
    late = time.monotonic() - started >= timeout_ms / 1000
    if t.is_alive() or not box or (late and not box[0].timed_out):
        log.warning("handler %r outlived its timeout of %d ms", handler, timeout_ms)
        return timeout_outcome(timeout_ms)
    return box[0]


def call_with_deadline(handler: Handler, payload: Any, timeout_ms: int) -> Outcome:
    box: list[Outcome] = []
    t = threading.Thread(target=lambda: box.append(call(handler, payload)), daemon=True)
    t.start()
    t.join(timeout_ms / 1000)
    if t.is_alive() or not box:
        log.warning("handler %r outlived its timeout of %d ms", handler, timeout_ms)
        return timeout_outcome(timeout_ms)
    return box[0]


def close_loop(loop: asyncio.AbstractEventLoop) -> None:
    """Cancel the loop's tasks and run it until they have handled that (their
    ``finally`` blocks), at most ``STOP_BOUND_S``, then close it. A pending task
    left to the garbage collector would log "Task was destroyed but it is pending!"."""
    import asyncio

    cancelled: set[asyncio.Task[Any]] = set()
    end = time.monotonic() + STOP_BOUND_S
    while (left := end - time.monotonic()) > 0:
        tasks = asyncio.all_tasks(loop)
        if not tasks:
            break
        for t in tasks - cancelled:  # once: a second cancel would cut its cleanup short
            t.cancel()
        cancelled |= tasks
        try:
            loop.run_until_complete(asyncio.wait(tasks, timeout=left))
        except BaseException as exc:  # a handler's cleanup raised SystemExit, say
            log.error("while cancelling handlers: %s", error_text(exc))
    try:
        loop.run_until_complete(loop.shutdown_asyncgens())
    except BaseException as exc:
        log.error("while closing async generators: %s", error_text(exc))
    loop.close()
