"""What the PostgreSQL store adds for a cluster: the database's clock, wake-ups
by LISTEN/NOTIFY, and membership (heartbeats), as one mixin of ``PostgresStore``.

``db_now`` is the cluster's clock (nodes with skewed clocks agree on what is
due and whose lease ended), read with a round trip every few seconds and
otherwise applied as an offset to the local clock. ``wait_for_wakeup`` sleeps
on a dedicated LISTEN connection (``postgres_listen``). Heartbeats are one
upsert per node, and rows of nodes long gone are dropped by the next one.
"""

from __future__ import annotations

import logging
import threading
import time
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING

from jobsched.errors import Unavailable
from jobsched.stores.base import ClusterClock, Membership, WakeupListener

if TYPE_CHECKING:
    from jobsched.stores.postgres_conn import PgConn
    from jobsched.stores.postgres_listen import Listener

log = logging.getLogger("jobsched.postgres")

# The database clock is read again after this long; in between, db_now adds
# the measured offset to the local clock (no round trip per call).
CLOCK_REFRESH_S = 5.0
# Heartbeat rows of nodes gone this long are dropped by the next heartbeat.
NODE_FORGET_MS = 7 * 24 * 3600 * 1000
_NODES_SEEN = (
    "SELECT n.node_id, n.last_seen, (SELECT count(*) FROM jobs j "
    "WHERE j.state = 'running' AND j.locked_by = n.node_id) "
    "FROM nodes n WHERE n.last_seen >= %s ORDER BY n.node_id"
)


class PgCluster(ClusterClock, WakeupListener, Membership):
    """The cluster capabilities over the store's connections (``_use``) and
    its LISTEN connection (``_listener``)."""

    _listener: Listener

    def _use(self) -> AbstractContextManager[PgConn]:
        raise NotImplementedError  # the store's

    def _init_cluster(self) -> None:
        self._offset_ms: int | None = None
        self._offset_at = 0.0
        self._clock_lock = threading.Lock()

    def db_now(self) -> int:
        """The database's clock (``clock_timestamp()``) in epoch ms: the cluster's
        clock, so that nodes with skewed clocks agree on what is due.

        Measured with a round trip every few seconds (the offset from the local
        clock, taken at the round trip's midpoint); in between, and while the
        database is unreachable, the last offset is applied to the local clock.
        Never raises: before any measurement it is the local clock.
        """
        mono = time.monotonic()
        with self._clock_lock:
            if self._offset_ms is None or mono - self._offset_at >= CLOCK_REFRESH_S:
                self._offset_at = mono
                self._measure_offset()
            offset = self._offset_ms or 0
        return int(time.time() * 1000) + offset

    def _measure_offset(self) -> None:
        try:
            before = time.time()
            with self._use() as pg:
                row = pg.execute(
                    "SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint"
                ).fetchone()
            after = time.time()
        except Unavailable as exc:
            log.warning("cannot read the database clock, using the last offset: %s", exc.text)
            return
        assert row is not None
        self._offset_ms = int(row[0]) - int((before + after) * 500)

    def wait_for_wakeup(self, timeout_s: float) -> bool:
        """Block until a write (on any node) makes a job due sooner than every
        other, ``wake()`` is called, or ``timeout_s`` passes; True if woken.
        Uses a dedicated LISTEN connection, opened at the first call: call
        ``wait_for_wakeup(0)`` once before the first ``next_due`` read so that
        no wake-up is missed. If the database is unreachable it just waits
        (polling stays the fallback). Never raises."""
        return self._listener.wait(timeout_s)

    def wake(self) -> None:
        """End a ``wait_for_wakeup`` in another thread now (e.g. on shutdown)."""
        self._listener.wake()

    def heartbeat(self, owner: str, now: int) -> None:
        """Record that ``owner`` is alive at ``now`` (cluster clock); rows of
        nodes silent for NODE_FORGET_MS go."""
        with self._use() as pg:
            pg.execute(
                "WITH gone AS (DELETE FROM nodes WHERE last_seen < %s AND node_id <> %s) "
                "INSERT INTO nodes (node_id, first_seen, last_seen) VALUES (%s, %s, %s) "
                "ON CONFLICT (node_id) DO UPDATE SET last_seen = EXCLUDED.last_seen",
                (now - NODE_FORGET_MS, owner, owner, now, now),
            )

    def nodes_seen(self, since: int) -> list[tuple[str, int, int]]:
        """Nodes whose last heartbeat is at or after ``since``, by id:
        ``(node_id, last_seen, jobs_held)``, jobs_held = running jobs it leases."""
        with self._use() as pg:
            rows = pg.execute(_NODES_SEEN, (since,)).fetchall()
        return [(str(n), int(t), int(k)) for n, t, k in rows]
