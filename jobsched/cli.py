"""Command line: ``jobsched node`` (the stdio node; also ``python3 main.py``),
``jobsched serve`` (the HTTP service) and ``jobsched cron`` (check an expression)."""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib.util
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn
from zoneinfo import ZoneInfo

from jobsched.cli_args import LOG_FORMAT, USAGE, listen_address, node_parser, serve_parser
from jobsched.engine import Engine, EngineConfig
from jobsched.errors import JobschedError
from jobsched.execution import SHUTDOWN
from jobsched.messages import Context
from jobsched.node import StdioNode
from jobsched.runner import TaskRegistry, default_registry
from jobsched.stores.base import ClusterClock, Store
from jobsched.stores.open import open_store
from jobsched.timefmt import format_ms, now_ms
from jobsched.version import __version__


def load_tasks(names: Sequence[str], builtins: bool) -> TaskRegistry:
    """The registry for a run: the default one, filled by importing the modules."""
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # as `python -m` would: ./myapp/tasks.py works
    for name in names:
        if name.endswith(".py"):
            path = Path(name)
            spec = importlib.util.spec_from_file_location(path.stem, path)
            if spec is None or spec.loader is None:
                raise ImportError(f"cannot load {name}")
            module = importlib.util.module_from_spec(spec)
            sys.modules[path.stem] = module
            spec.loader.exec_module(module)
        else:
            importlib.import_module(name)
    if names or builtins:
        default_registry.add_builtins()
    return default_registry


def _clock(store: Store) -> Callable[[], int]:
    """A shared store's own clock (PostgreSQL's db_now) is the cluster's "now"."""
    return store.db_now if isinstance(store, ClusterClock) else now_ms


def _setup_logging(level: str, fmt: str = "text") -> None:
    if fmt == "json":  # one JSON object per line, for log shippers
        from jobsched.web.runlog import JsonFormatter

        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JsonFormatter())
        logging.basicConfig(level=level.upper(), handlers=[handler])
        return
    logging.basicConfig(level=level.upper(), stream=sys.stderr, format=LOG_FORMAT)


def _prepare(args: argparse.Namespace, builtins: bool) -> tuple[Store, Engine] | int:
    try:
        registry = load_tasks(args.tasks, builtins)
    except Exception as exc:  # any error raised while importing the user's module
        print(f"jobsched: cannot load task module: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    # The service refuses a task it has no handler for (a typo must not be
    # "completed" as a no-op); the stdio node keeps the protocol's no-op tasks.
    registry.strict = builtins and not getattr(args, "allow_any_task", False)
    if args.workers < 1:
        print("jobsched: --workers must be at least 1", file=sys.stderr)
        return 2
    try:
        store = open_store(args.db, args.synchronous)
    except JobschedError as exc:
        print(f"jobsched: cannot open the store: {exc.text}", file=sys.stderr)
        return 2
    config = EngineConfig(node_id=args.node_id or "jobsched")
    engine = Engine(store, registry, config)
    _settle_heap()
    return store, engine


def _settle_heap() -> None:
    """What start-up made (the modules, the user's task modules, the store)
    lives as long as the process: it is moved out of the cyclic collector's
    reach, so that a full collection walks only what the running node made.
    A full pass over every imported module's objects paused the dispatcher's
    thread (it holds the GIL) for 10-35 ms (docs/benchmarks.md, Dispatch)."""
    gc.collect()
    gc.freeze()


def run_node(argv: Sequence[str] | None = None, prog: str = "jobsched node") -> int:
    from jobsched.isolation import protect_stdin, protect_stdout

    args = node_parser(prog).parse_args(argv)
    # The protocol owns the real stdin and stdout: task modules and handlers
    # (and their child processes) print to stderr and read /dev/null.
    out, fd_in = protect_stdout(), protect_stdin()
    _setup_logging(args.log_level)
    prepared = _prepare(args, builtins=False)
    if isinstance(prepared, int):
        return prepared
    store, engine = prepared
    ctx = Context(engine, _clock(store), args.max_payload_bytes, args.node_id)
    if not args.realtime:
        # SIGINT as SIGTERM: execute_job runs handlers on this thread, where a
        # KeyboardInterrupt would be taken for the handler's own failure.
        try:
            return StdioNode(ctx, fd_in, out, sigint=True).run()
        finally:
            store.close()
    from jobsched.dispatcher import Dispatcher
    from jobsched.runner import Runner

    dispatcher = Dispatcher(
        engine, Runner(engine.registry, args.workers), poll_ms=args.poll_ms, queues=args.queues
    )
    # The dispatcher runs the maintenance (rescue, heartbeat, retention).
    node = StdioNode(ctx, fd_in, out, after_batch=dispatcher.wake, sigint=True, maintain=False)
    if args.events:

        def emit(body: dict[str, Any]) -> None:
            node_id = ctx.node_id or engine.config.node_id
            node.emit(json.dumps({"src": node_id, "dest": "events", "body": body}))

        dispatcher.events = emit
    dispatcher.start()
    try:
        return node.run()
    finally:
        dispatcher.stop(args.grace)
        store.close()


# -- serve ---------------------------------------------------------------------


def run_serve(argv: Sequence[str] | None = None) -> int:
    args = serve_parser().parse_args(argv)
    _setup_logging(args.log_level, args.log_format)
    log = logging.getLogger("jobsched.serve")
    try:
        host, port = listen_address(args.listen)
        if args.token is not None and not args.token.strip():  # it would let everyone in
            raise ValueError("the token (--token, $JOBSCHED_TOKEN) is empty: unset it for none")
    except ValueError as exc:
        print(f"jobsched: {exc}", file=sys.stderr)
        return 2
    prepared = _prepare(args, builtins=True)
    if isinstance(prepared, int):
        return prepared
    store, engine = prepared
    import time

    from jobsched.dispatcher import Dispatcher
    from jobsched.runner import Metrics, Runner
    from jobsched.server import Limits, Service, make_server
    from jobsched.web.dashboard import Dashboard

    ctx = Context(engine, _clock(store), args.max_payload_bytes, args.node_id)
    dash = Dashboard(
        engine, args.db, args.token, ctx.clock, args.read_only_ui, args.event_heartbeat_s
    )
    dispatcher = None
    if not args.no_dispatch:
        runner = Runner(engine.registry, args.workers)
        dispatcher = Dispatcher(engine, runner, poll_ms=args.poll_ms, queues=args.queues)
        dispatcher.events = dash.sink(run_log=not args.no_run_log)
    metrics = Metrics() if dispatcher is None else dispatcher.metrics
    wake = None if dispatcher is None else dispatcher.wake
    service = Service(ctx, args.token, args.max_body_bytes, metrics, wake, web=dash.web)
    try:
        limits = Limits(
            max_connections=args.max_connections,
            request_timeout=args.request_timeout,
            idle_timeout=args.idle_timeout,
            threads=args.http_threads,
            max_streams=args.max_event_streams,
        )
        server = make_server(service, host, port, limits)
    except (OSError, JobschedError) as exc:
        print(f"jobsched: cannot listen on {args.listen}: {exc}", file=sys.stderr)
        store.close()
        return 2
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    if dispatcher is not None:
        dispatcher.start()
    dash.start()
    threading.Thread(target=server.serve_forever, name="jobsched-http", daemon=True).start()
    bound = server.server_address[1]
    tasks = ", ".join(engine.registry.names()) or "none (every task is a no-op)"
    log.info("listening on http://%s:%d (db %s; tasks: %s)", host, bound, args.db, tasks)
    print(f"jobsched: listening on http://{host}:{bound}", file=sys.stderr, flush=True)
    while not stop.wait(3600):
        pass
    if dispatcher is not None:
        dispatcher.stop_claims()  # before the line below says so, and before the HTTP side stops
    log.info("shutting down: no new requests or claims; %.1f s for running handlers", args.grace)
    server.shutdown()  # event streams end here: they would never end on their own
    dash.stop()
    end = time.monotonic() + args.grace
    if dispatcher is not None:
        dispatcher.stop(args.grace)
    server.server_close(end - time.monotonic())  # requests still running handlers: same grace
    # Manual runs (execute_job, execute_jobs) still going: put back, as the dispatcher's are.
    if put_back := engine.release_held(ctx.clock(), SHUTDOWN):
        log.warning("put back %d job(s) whose manual run had not ended", put_back)
    store.close()
    return 0


# -- cron ------------------------------------------------------------------------


def run_cron(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="jobsched cron",
        description="Print the next occurrences of a cron expression, in its zone and in UTC.",
    )
    p.add_argument("expr", help='the expression, quoted: "0 9 * * MON-FRI"')
    p.add_argument("--tz", default="UTC", help="the IANA zone it is read in (default UTC)")
    p.add_argument("-n", type=int, default=5, help="how many occurrences (default 5)")
    p.add_argument("--after", default=None, help="start after this timestamp (default now)")
    args = p.parse_args(argv)
    from jobsched import validate
    from jobsched.cron import CronExpr
    from jobsched.timefmt import parse_timestamp

    try:
        tz = validate.timezone(args.tz)
        expr = CronExpr.parse(args.expr, tz)
        t = now_ms() if args.after is None else parse_timestamp(args.after, "--after")
    except JobschedError as exc:
        print(f"jobsched: {exc.text}", file=sys.stderr)
        return 2
    zone = ZoneInfo(tz)
    print(f"{args.expr!r} in {tz}: next {args.n} occurrence(s)")
    for _ in range(max(args.n, 0)):
        nxt = expr.next_after(t)
        if nxt is None:
            print("(no further occurrence)")
            break
        local = datetime.fromtimestamp(nxt / 1000, UTC).astimezone(zone)
        print(f"{local:%a %Y-%m-%d %H:%M:%S %z} ({tz})   {format_ms(nxt)}")
        t = nxt
    return 0


def exit_process(code: int) -> NoReturn:
    """End the process with ``code`` once a command has returned. A thread a
    handler started and never ended (not a daemon) would keep the interpreter
    waiting for it forever after the node or service is done (its jobs put
    back, its store closed): with one alive, the process ends at once, its
    output and logs flushed first."""
    if any(
        t.is_alive() and not t.daemon
        for t in threading.enumerate()
        if t is not threading.main_thread()
    ):
        logging.shutdown()
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(code)
    sys.exit(code)


def entry() -> NoReturn:
    """The ``jobsched`` script and ``python -m jobsched``."""
    exit_process(main())


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    commands = {"node": run_node, "serve": run_serve, "cron": run_cron}
    if argv and argv[0] in commands:
        return commands[argv[0]](argv[1:])
    if argv and argv[0] in ("-V", "--version"):
        print(f"jobsched {__version__}")
        return 0
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0
    print(f"jobsched: unknown command {argv[0]!r}\n{USAGE}", file=sys.stderr)
    return 2
