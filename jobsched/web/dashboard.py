"""The dashboard's parts put together for ``jobsched serve``: the event hub,
the run follower, the queries, the sessions and the routes, and the sink the
dispatcher's run events go to (the hub, and the run log)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from jobsched.engine import Engine
from jobsched.web.events import HEARTBEAT_S, EventHub
from jobsched.web.follow import RunFollower, run_key
from jobsched.web.queries import Queries
from jobsched.web.routes import Web
from jobsched.web.runlog import RunLog
from jobsched.web.session import Sessions
from jobsched.web.sqlread import open_reader

log = logging.getLogger("jobsched.web")

Event = dict[str, Any]


class Dashboard:
    def __init__(
        self,
        engine: Engine,
        db: str | None,
        token: str | None,
        clock: Callable[[], int],
        read_only: bool = False,
        heartbeat_s: float = HEARTBEAT_S,
    ) -> None:
        self.hub = EventHub(heartbeat_s=heartbeat_s)
        reader, counter = open_reader(db), open_reader(db)
        self.queries = Queries(engine, reader, self.hub, counter)
        self.web = Web(self.hub, self.queries, Sessions(token), clock, read_only)
        # Runs of other processes on the same database, and runs made through
        # the API, come from the store's tables (the memory store has none).
        follow_reader = open_reader(db)
        self.follower = None
        if follow_reader is not None:  # this process's dispatcher claims as engine.owner
            self.follower = RunFollower(follow_reader, self.hub, own=engine.owner)
        self._readers = [r for r in (reader, counter, follow_reader) if r is not None]

    def sink(self, run_log: bool = True) -> Callable[[Event], None]:
        """Where the dispatcher's events go: every watcher, and the run log."""
        hub, logger = self.hub, RunLog() if run_log else None

        def emit(body: Event) -> None:
            hub.publish(body, run_key(body))
            if logger is not None:
                logger(body)

        return emit

    def start(self) -> None:
        if self.follower is not None:
            self.follower.start()

    def stop(self) -> None:
        if self.follower is not None:
            self.follower.stop()
        for reader in self._readers:
            reader.close()
