"""Command line: ``jobsched node`` (the stdio node; also ``python3 main.py``)."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from jobsched.engine import Engine, EngineConfig
from jobsched.errors import JobschedError
from jobsched.messages import Context
from jobsched.node import StdioNode
from jobsched.stores.base import Store
from jobsched.validate import DEFAULT_MAX_PAYLOAD

NODE_HELP = """\
The jobsched node: JSON messages on stdin, one per line, replies on stdout.
Logs go to stderr. See docs/protocol.md for every message.
"""


def add_store_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--db",
        default=os.environ.get("JOBSCHED_DB") or None,
        help="where jobs live: omitted = in memory (lost on exit); a file path = SQLite "
        "(durable); postgresql://... = PostgreSQL (shared by several nodes). "
        "Default: $JOBSCHED_DB, else memory.",
    )
    p.add_argument(
        "--synchronous",
        choices=("FULL", "NORMAL"),
        default=os.environ.get("JOBSCHED_SQLITE_SYNCHRONOUS", "FULL"),
        help="SQLite only: FULL (default) survives power loss; NORMAL survives a "
        "process crash but may lose the last commits on power loss.",
    )


def node_parser(prog: str = "jobsched node") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=NODE_HELP)
    add_store_args(p)
    p.add_argument(
        "--max-payload-bytes",
        type=int,
        default=DEFAULT_MAX_PAYLOAD,
        help="largest payload accepted, as compact UTF-8 JSON (default 65536)",
    )
    p.add_argument("--node-id", default=None, help="this node's id (default: from init, or the request's dest)")
    p.add_argument("--log-level", default="WARNING", help="stderr log level (default WARNING)")
    return p


def open_store(db: str | None, synchronous: str = "FULL") -> Store:
    """The store a --db value names."""
    if not db:
        from jobsched.stores.memory import MemoryStore

        return MemoryStore()
    if db.startswith(("postgresql://", "postgres://")):
        from jobsched.stores.postgres import PostgresStore  # type: ignore[import-not-found, unused-ignore]

        return PostgresStore(db)  # type: ignore[no-any-return, unused-ignore]
    from jobsched.stores.sqlite import SQLiteStore  # type: ignore[import-not-found, unused-ignore]

    return SQLiteStore(db, synchronous=synchronous)  # type: ignore[no-any-return, unused-ignore]


def run_node(argv: Sequence[str] | None = None, prog: str = "jobsched node") -> int:
    args = node_parser(prog).parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), stream=sys.stderr, format="%(asctime)s %(name)s %(levelname)s %(message)s"
    )
    try:
        store = open_store(args.db, args.synchronous)
    except JobschedError as exc:
        print(f"jobsched: cannot open the store: {exc.text}", file=sys.stderr)
        return 2
    node_id = args.node_id or "jobsched"
    engine = Engine(store, config=EngineConfig(node_id=node_id))
    ctx = Context(engine, max_payload=args.max_payload_bytes, node_id=args.node_id)
    try:
        return StdioNode(ctx, sys.stdin.fileno(), sys.stdout.buffer).run()
    finally:
        store.close()


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "node":
        return run_node(argv[1:])
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: jobsched {node} [options]   (jobsched node --help for the node's options)")
        return 0
    print(f"jobsched: unknown command {argv[0]!r}", file=sys.stderr)
    return 2
