"""Housekeeping that every running node does, whichever transport drives it.

One routine, run by the stdio node after each batch and by the real-time
dispatcher every round, so that a rule written here holds under ``main.py``
and under ``jobsched serve`` alike:

- rescue: running jobs whose lease expired (their holder crashed) are taken
  back through the engine's pipeline (the crash rule: the lost run counts as
  an attempt), every ``lease_ms / 3``;
- heartbeat: on a store shared by a cluster, a node that runs jobs in real
  time (a dispatcher) says it is alive;
- retention: final jobs and run records past the store's retention are pruned
  (``Store.maybe_prune``: at most once a minute, in small batches).

Each part is cheap when there is nothing to do; a storage fault is logged and
tried again at the next call, never raised to the caller.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from jobsched.errors import JobschedError
from jobsched.execution import Execution, Rescued
from jobsched.stores.base import Membership

log = logging.getLogger("jobsched.maintenance")

RESCUE_BATCH = 100
MIN_EVERY_MS = 1000


class Maintenance:
    def __init__(
        self,
        engine: Execution,
        owner: str,
        on_rescued: Callable[[Rescued, int], None] | None = None,
        *,
        heartbeat: bool = False,
    ) -> None:
        self.engine = engine
        self.owner = owner
        # Only nodes that run jobs in real time announce themselves: a stdio
        # node answering requests is not a member that holds jobs for long.
        self.heartbeat = heartbeat
        self.on_rescued = on_rescued
        self.every_ms = max(engine.config.lease_ms // 3, MIN_EVERY_MS)
        self._next: int | None = None

    @property
    def next_at(self) -> int | None:
        """When rescue and heartbeat are next due (None before the first run)."""
        return self._next

    def run(self, now: int, running: frozenset[str] = frozenset()) -> None:
        """Do what is due at ``now`` (the wall or cluster clock). ``running``:
        the jobs this node is running itself (never rescued from under it)."""
        if self._next is None or now >= self._next or now < self._next - self.every_ms:
            self._next = now + self.every_ms
            try:
                self._beat_and_rescue(now, running)
            except JobschedError as exc:
                log.warning("maintenance: storage unavailable, will retry: %s", exc.text)
        self.engine.store.maybe_prune()

    def _beat_and_rescue(self, now: int, running: frozenset[str]) -> None:
        store = self.engine.store
        if self.heartbeat and isinstance(store, Membership):
            store.heartbeat(self.owner, now)
        for rescued in self.engine.rescue(now, RESCUE_BATCH, running):
            if self.on_rescued is not None:
                self.on_rescued(rescued, now)
