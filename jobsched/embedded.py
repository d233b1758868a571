"""``jobsched.Service``: the dispatcher in a background thread of the application.

    import jobsched, myapp.tasks

    with jobsched.Service("jobs.db", tasks=[myapp.tasks], workers=4) as svc:
        svc.client.schedule("send-email", {"to": "a@example.com"})
        ...  # the application runs; due jobs run on svc's worker threads

The same pieces as ``jobsched serve`` without HTTP: the store ``--db`` would
open (``open_store``, shared with the command line), an ``Engine`` over the
default task registry, a ``Runner`` and a ``Dispatcher``. Leaving the block
stops claiming, gives running handlers ``grace`` seconds, puts back the jobs
whose handlers did not end, and closes the store.
"""

from __future__ import annotations

import importlib
import logging
import os
from collections.abc import Iterable
from types import ModuleType, TracebackType
from typing import TYPE_CHECKING, Any

from jobsched.client_transports import Body, StoreTransport
from jobsched.engine import Engine, EngineConfig
from jobsched.errors import JobschedError
from jobsched.messages import READ_ONLY, Context
from jobsched.runner import Runner, TaskRegistry, default_registry
from jobsched.stores.base import ClusterClock, Store
from jobsched.stores.open import open_store
from jobsched.timefmt import now_ms

if TYPE_CHECKING:
    from jobsched.client import Client
    from jobsched.dispatcher import Dispatcher


class _LocalTransport(StoreTransport):
    """The service's own engine and store for its client: unknown tasks are
    refused as the dispatcher would, a change wakes the dispatcher at once,
    and closing the client leaves the store to the service."""

    def __init__(self, ctx: Context, target: str, wake: Any) -> None:
        self.store, self.target, self.engine, self.ctx = ctx.engine.store, target, ctx.engine, ctx
        self._wake = wake

    def call(self, body: Body, connection: object | None = None) -> Body:
        reply = super().call(body, connection)
        if str(body["type"]) not in READ_ONLY:
            self._wake()
        return reply

    def close(self) -> None:
        pass


class Service:
    """Runs due jobs in background threads of this process (see the module docstring)."""

    def __init__(
        self,
        db: str | os.PathLike[str] | None = None,
        *,
        tasks: Iterable[ModuleType | str] = (),
        workers: int = 4,
        grace: float = 10.0,
        node_id: str | None = None,
        poll_ms: int = 1000,
        registry: TaskRegistry | None = None,
    ) -> None:
        if workers < 1:
            raise ValueError("workers must be at least 1")
        for module in tasks:  # importing a module runs its @task decorators
            if isinstance(module, str):
                importlib.import_module(module)
        self.db = "" if db is None else os.fspath(db)
        self.registry = registry or default_registry
        self.workers, self.grace, self.poll_ms = workers, grace, poll_ms
        self.node_id = node_id or "jobsched-embedded"
        self._dispatcher: Dispatcher | None = None
        self._client: Client | None = None
        self.store: Store | None = None

    def start(self) -> Service:
        if self._dispatcher is not None:
            raise JobschedError("the service is already running")
        from jobsched.dispatcher import Dispatcher

        # As under jobsched serve: an unknown task is refused (a typo must not
        # be "completed" as a no-op), even before any handler is registered,
        # and the built-in webhook is known.
        self.registry.strict = True
        self.registry.add_builtins()
        self.store = store = open_store(self.db)
        try:
            engine = Engine(store, self.registry, EngineConfig(node_id=self.node_id))
            dispatcher = Dispatcher(
                engine, Runner(self.registry, self.workers), poll_ms=self.poll_ms
            )
            dispatcher.start()
        except BaseException:
            store.close()
            self.store = None
            raise
        self._dispatcher = dispatcher
        logging.getLogger("jobsched.embedded").info("running jobs of %s", self.db or "memory")
        return self

    @property
    def running(self) -> bool:
        return self._dispatcher is not None

    @property
    def client(self) -> Client:
        """A ``Client`` on this service's own store (memory too); closing it is harmless."""
        dispatcher = self._dispatcher
        if dispatcher is None:
            raise JobschedError("the service is not running: use it as `with Service(...)`")
        if self._client is None:
            from jobsched.client import Client

            engine = dispatcher.engine
            clock = engine.store.db_now if isinstance(engine.store, ClusterClock) else now_ms
            transport = _LocalTransport(
                Context(engine, clock), self.db or ":memory:", dispatcher.wake
            )
            # Client opens its own transport from a target; this one shares ours.
            client = Client.__new__(Client)
            client._transport, client.target = transport, transport.target
            self._client = client
        return self._client

    def stop(self) -> None:
        """Stop claiming, wait up to ``grace`` s for running handlers, close the store."""
        dispatcher, self._dispatcher, self._client = self._dispatcher, None, None
        if dispatcher is None:
            return
        try:
            dispatcher.stop(self.grace)
        finally:
            if self.store is not None:
                self.store.close()

    def __enter__(self) -> Service:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"<jobsched.Service {self.db or ':memory:'} {state}>"
