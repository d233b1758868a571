"""The command line's options: what ``jobsched node`` (``main.py``) and
``jobsched serve`` accept, with their defaults and help texts (``cli`` runs them)."""

from __future__ import annotations

import argparse
import os

from jobsched.validate import DEFAULT_MAX_PAYLOAD
from jobsched.version import __version__

NODE_HELP = """\
The jobsched node: JSON messages on stdin, one per line, replies on stdout.
Logs go to stderr. See docs/protocol.md for every message, docs/service.md
for --realtime.
"""
USAGE = """\
usage: jobsched node  [options]   the stdio node (JSON lines on stdin/stdout)
       jobsched serve [options]   the HTTP service with real-time running
       jobsched cron EXPR [--tz ZONE] [-n N]   the next occurrences of a cron expression
       jobsched --version
(jobsched COMMAND --help lists each command's options)"""
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
LOG_FORMAT = "%(asctime)s %(name)s %(levelname)s %(message)s"


def add_store_args(p: argparse.ArgumentParser, default_db: str | None = None) -> None:
    p.add_argument(
        "--db",
        default=os.environ.get("JOBSCHED_DB") or default_db,
        help="where jobs live: :memory: = in memory (lost on exit); a file path = SQLite "
        "(durable); postgresql://... = PostgreSQL (shared by several nodes). "
        f"Default: $JOBSCHED_DB, else {default_db or 'memory'}.",
    )
    p.add_argument(
        "--synchronous",
        choices=("FULL", "NORMAL"),
        default=os.environ.get("JOBSCHED_SQLITE_SYNCHRONOUS", "FULL"),
        help="SQLite only: FULL (default) survives power loss; NORMAL survives a "
        "process crash but may lose the last commits on power loss.",
    )


def add_common_args(p: argparse.ArgumentParser, log_level: str) -> None:
    p.add_argument(
        "--max-payload-bytes",
        type=int,
        default=DEFAULT_MAX_PAYLOAD,
        help="largest payload accepted, as compact UTF-8 JSON (default 65536)",
    )
    p.add_argument("--node-id", default=None, help="this node's id")
    p.add_argument(
        "--log-level",
        default=log_level,
        type=str.upper,  # --log-level debug works; LOUD is refused by argparse, exit 2
        choices=LOG_LEVELS,
        help=f"stderr log level (default {log_level})",
    )
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")


def add_run_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--tasks",
        action="append",
        default=[],
        metavar="MODULE",
        help="import this module (or .py file) of @task handlers; repeatable. With "
        "handlers loaded, scheduling an unknown task is an error; built-in tasks "
        "(webhook) are loaded too.",
    )
    p.add_argument(
        "--noop-tasks",
        "--allow-any-task",  # its first name, kept
        dest="allow_any_task",
        action="store_true",
        help="serve without task handlers: accept any task and run it as a no-op that "
        "succeeds (the stdio node's behaviour; default: such a task is error 12). With "
        "handlers loaded, an unknown task is always error 12",
    )
    p.add_argument("--workers", type=int, default=4, help="handlers run at once (default 4)")
    p.add_argument(
        "--grace",
        type=float,
        default=10.0,
        help="seconds running handlers get to end on SIGTERM/SIGINT (default 10); "
        "jobs still running then run again after a restart. Real-time runs and serve's "
        "requests: a stdio line in progress (execute_jobs) is finished first, as on EOF",
    )
    p.add_argument("--poll-ms", type=int, default=1000, help=argparse.SUPPRESS)
    p.add_argument(
        "--queues",
        type=_queue_list,
        default=None,
        metavar="A,B",
        help="claim only jobs of these queues (default: every queue); see docs/queues.md",
    )


def _queue_list(text: str) -> frozenset[str]:
    names = frozenset(n.strip() for n in text.split(",") if n.strip())
    if not names:
        raise argparse.ArgumentTypeError("name at least one queue")
    return names


def node_parser(prog: str = "jobsched node") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=NODE_HELP)
    add_store_args(p)
    add_common_args(p, "WARNING")
    p.add_argument(
        "--realtime",
        action="store_true",
        help="run due jobs at their time (a dispatcher thread), not only on execute_jobs",
    )
    p.add_argument(
        "--events",
        action="store_true",
        help="with --realtime: write one run_event line on stdout per run event",
    )
    add_run_args(p)
    return p


def serve_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="jobsched serve",
        description="The jobsched service: real-time running and an HTTP API "
        "(docs/service.md). Stops gracefully on SIGTERM/SIGINT.",
    )
    add_store_args(p, default_db="jobsched.db")
    add_common_args(p, "INFO")
    add_run_args(p)
    p.add_argument(
        "--listen",
        default="127.0.0.1:8080",
        help="HOST:PORT to listen on (default 127.0.0.1:8080; port 0 picks a free one)",
    )
    p.add_argument(
        "--token",
        default=os.environ.get("JOBSCHED_TOKEN"),
        help="require 'Authorization: Bearer TOKEN' on every route but /healthz "
        "(default: $JOBSCHED_TOKEN; an empty token is refused)",
    )
    p.add_argument(
        "--max-body-bytes",
        type=int,
        default=1 << 20,
        help="largest request body (default 1 MiB); larger ones get 413",
    )
    p.add_argument(
        "--max-connections",
        type=int,
        default=512,
        help="open connections at most (default 512, lowered to fit the open-file limit); "
        "past it the longest-waiting idle or slow one is closed, else 503",
    )
    p.add_argument(
        "--request-timeout",
        type=float,
        default=10.0,
        help="seconds a request's line, headers and body may take to arrive (default 10); then 408",
    )
    p.add_argument(
        "--idle-timeout",
        type=float,
        default=30.0,
        help="seconds a keep-alive connection may wait for its next request (default 30)",
    )
    p.add_argument(
        "--http-threads",
        type=int,
        default=16,
        help="requests served at once (default 16); more wait for a thread",
    )
    p.add_argument(
        "--max-event-streams",
        type=int,
        default=64,
        help="open GET /v1/events streams at most (default 64; not counted in "
        "--max-connections; they hold no thread); past it 503",
    )
    p.add_argument(
        "--read-only-ui",
        action="store_true",
        help="the dashboard shows, never changes: its actions are hidden, and every change "
        "a browser makes is refused (403); bearer-token API calls are not affected",
    )
    p.add_argument(
        "--no-dispatch",
        action="store_true",
        help="run no jobs here (another node does): serve the API, the dashboard and the "
        "event stream only",
    )
    p.add_argument(
        "--log-format",
        choices=("text", "json"),
        default="text",
        help="stderr log lines as text (default) or one JSON object per line",
    )
    p.add_argument(
        "--no-run-log",
        action="store_true",
        help="leave out the INFO line logged per finished run (logger jobsched.runs)",
    )
    p.add_argument("--event-heartbeat-s", type=float, default=15.0, help=argparse.SUPPRESS)
    return p


def listen_address(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"--listen wants HOST:PORT, not {text!r}")
    return host.strip("[]") or "127.0.0.1", int(port)
