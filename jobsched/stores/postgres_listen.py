"""Wake-ups for sleeping dispatchers: LISTEN on a dedicated connection.

The store NOTIFYs its channel (``Pool.channel``, one per schema) when a commit
makes a job due sooner than every other. ``Listener.wait`` sleeps on the
connection's socket and on a self-pipe (so ``wake()`` from another thread, on
shutdown, ends the wait at once). A lost connection is reopened at the next
wait, with the pool's backoff; meanwhile waits just time out, and the
dispatcher's polling carries on: a wake-up is an optimisation, never needed
for correctness.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import threading
import time

import psycopg

from jobsched.errors import Unavailable
from jobsched.stores.postgres_conn import PgConn, Pool, describe

log = logging.getLogger("jobsched.postgres")


class Listener:
    def __init__(self, pool: Pool) -> None:
        self._pool = pool
        self._pg: PgConn | None = None
        self._lock = threading.Lock()  # one waiter at a time
        self._rfd, self._wfd = os.pipe()
        os.set_blocking(self._rfd, False)
        os.set_blocking(self._wfd, False)
        self.last_due: int | None = None  # payload of the latest wake-up (a due time, ms)

    def _connect(self) -> PgConn | None:
        if self._pg is not None and not self._pg.closed:
            return self._pg
        try:
            pg = self._pool.connect()
        except Unavailable as exc:
            log.debug("no LISTEN connection: %s", exc.text)
            return None
        try:
            pg.execute(f'LISTEN "{self._pool.channel}"'.encode())
        except psycopg.Error as exc:
            log.warning("LISTEN failed: %s", describe(exc))
            pg.close()
            return None
        self._pg = pg
        return pg

    def wait(self, timeout_s: float) -> bool:
        """True when woken (a notification or ``wake()``), False on timeout."""
        deadline = time.monotonic() + max(0.0, timeout_s)
        with self._lock:
            pg = self._connect()
            fds = [self._rfd] if pg is None else [self._rfd, pg.fileno()]
            while True:
                if pg is not None and self._drain(pg):
                    return True
                remaining = deadline - time.monotonic()
                ready, _, _ = select.select(fds, [], [], max(0.0, remaining))
                if self._rfd in ready:
                    self._clear_pipe()
                    return True
                if not ready and time.monotonic() >= deadline:
                    return False

    def _drain(self, pg: PgConn) -> bool:
        """Read every pending notification without blocking; True if any."""
        got = False
        try:
            for note in pg.notifies(timeout=0):
                got = True
                if note.payload.lstrip("-").isdigit():
                    due = int(note.payload)
                    self.last_due = due if self.last_due is None else min(self.last_due, due)
        except psycopg.Error as exc:
            log.warning("LISTEN connection lost: %s", describe(exc))
            self._close_pg()
            return True  # we may have missed a wake-up: let the caller look
        return got

    def _clear_pipe(self) -> None:
        try:
            while os.read(self._rfd, 512):
                pass
        except BlockingIOError:
            pass

    def wake(self) -> None:
        with contextlib.suppress(OSError):  # the pipe is full: a wake-up is already pending
            os.write(self._wfd, b"x")

    def _close_pg(self) -> None:
        pg, self._pg = self._pg, None
        if pg is not None:
            with contextlib.suppress(psycopg.Error):
                pg.close()

    def close(self) -> None:
        self._close_pg()
        for fd in (self._rfd, self._wfd):
            with contextlib.suppress(OSError):
                os.close(fd)
