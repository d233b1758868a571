"""The store a ``--db`` value names (``jobsched node``/``serve``, ``Service``;
the ``Client`` reads its target by rules of its own, client_transports). Its
own module so that the command line opens a store without importing the
client (http.client, ssl, the client's types: 20 ms of a node's start-up)."""

from __future__ import annotations

import os

from jobsched.stores.base import Store

MEMORY = ("", ":memory:", "memory")


def open_store(db: str | os.PathLike[str] | None, synchronous: str = "FULL") -> Store:
    """The store a ``--db`` value names: None, "" or ":memory:" = memory,
    ``postgresql://...`` = PostgreSQL, anything else a SQLite file."""
    text = "" if db is None else os.fspath(db)
    if text in MEMORY:
        from jobsched.stores.memory import MemoryStore

        return MemoryStore()
    if text.startswith(("postgresql://", "postgres://")):
        from jobsched.stores.postgres import (  # type: ignore[import-not-found, unused-ignore]
            PostgresStore,
        )

        return PostgresStore(text)  # type: ignore[no-any-return, unused-ignore]
    from jobsched.stores.sqlite import SQLiteStore

    return SQLiteStore(text, synchronous=synchronous)
