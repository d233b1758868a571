"""PostgreSQL benchmarks: jobsched nodes beside Procrastinate on the same server.

    .venv/bin/python bench/postgres_bench.py [--schedule 20000] [--many 10000] [--jobs 10000]
        [--sleep-ms 20] [--sleep-jobs 2000] [--workers 8] [--parts schedule,many,noop,sleep]
    .venv/bin/python bench/postgres_bench.py --quick   # smaller sizes: 20-40 s
    .venv/bin/python bench/postgres_bench.py --smoke   # tiny sizes, one node: proves it runs
    .venv/bin/python bench/postgres_bench.py --parts sleep   # issue 13's 20 ms run alone

1. schedule: durable acknowledged schedule_job per second: requests pipelined into
   ``main.py --db postgresql://...`` (each reply sent after its batch's COMMIT),
   timed from the first request written to the last reply read (the node is
   started and connected first). Beside it, Procrastinate's ``defer`` (one
   job per call and transaction) and ``batch_defer`` (1,000 jobs per call).
2. many (issue 10): ``Client("postgresql://.../db").schedule_many(specs)``, --many
   jobs in calls of up to 10,000 (the engine's MAX_BATCH), each call one
   transaction, on a fresh schema per round; beside it Procrastinate's
   ``batch_defer`` of the same jobs in calls of the same size, after a TRUNCATE.
   --rounds rounds a side, alternating which side goes first; medians and ranges.
3. noop: jobs completed per second with no-op handlers, with one and two nodes:
   N jobs due now are stored first, then the nodes start
   (``main.py --realtime --workers W``, the real-time dispatcher) and run them.
   Beside it, Procrastinate workers (``run_worker(concurrency=W, wait=False)``,
   an async no-op task), one and two processes. Both rates are measured from
   the databases' own records: jobs / (last finish - first start), so that
   process start-up is left out for both.
4. sleep (issue 13): the same with I/O-bound handlers sleeping --sleep-ms: ours a
   plain ``@task`` function calling ``time.sleep`` (loaded with ``--tasks``, run on
   the node's W worker threads), Procrastinate's an ``async def`` task awaiting
   ``asyncio.sleep`` (why async: pg_common.PEER_APP). W handlers at a time bound a
   node (or a Procrastinate process) at W * 1000 / MS jobs/s; the script prints
   that bound and the two-node / one-node ratios.

Each run creates its own two databases on the server (``jobsched_bench_<pid>`` and
``procrastinate_bench_<pid>``), so the test database is untouched and two runs do not
collide; both are dropped at the end, also after an error or Ctrl-C, and the child
processes are stopped first. Temporary files live in a TemporaryDirectory. Without
Procrastinate (bench/peers.py) only our figures are printed. An unreachable server
is an error (exit status 2). Server: $JOBSCHED_BENCH_PG (default the local
trust-auth server, postgresql://postgres@127.0.0.1:5432/test, used to create the
two databases).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import suppress
from pathlib import Path
from types import ModuleType
from typing import IO, Any

import psycopg
from peers import peer, positive
from pg_common import (
    BASE,
    OUR_TASKS,
    OURS_DB,
    PEER_APP,
    PEER_DB,
    PEER_WORKER,
    ROOT,
    WAIT_S,
    Load,
    admin,
    databases,
    dsn_for,
    peer_app,
    rate,
    ratio,
    spawn,
    spread,
    wait_until,
)

sys.path.insert(0, str(ROOT))

BATCH = 1000  # Procrastinate's batch_defer size
PARTS = ("schedule", "many", "noop", "sleep")


def node(dsn: str, *args: str) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, str(ROOT / "main.py"), "--db", dsn, *args]
    return spawn(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE)


def line(msg_id: int, body: dict[str, object]) -> bytes:
    return json.dumps({"src": "c", "dest": "s", "body": {"msg_id": msg_id, **body}}).encode()


def write_all(stdin: IO[bytes], data: bytes) -> None:
    # A node that died (or was stopped on Ctrl-C) is reported by the reading side.
    with suppress(BrokenPipeError, ValueError):
        stdin.write(data)
        stdin.flush()


def pipelined(dsn: str, bodies: list[dict[str, object]]) -> float:
    """Seconds from the first request written to the last reply read."""
    proc = node(dsn)
    assert proc.stdin is not None and proc.stdout is not None
    stdin, stdout = proc.stdin, proc.stdout
    stdin.write(line(0, {"type": "stats"}) + b"\n")
    stdin.flush()
    assert b"stats" in stdout.readline()  # started, connected, migrated
    data = b"".join(line(i + 1, b) + b"\n" for i, b in enumerate(bodies))
    start = time.perf_counter()
    writer = threading.Thread(target=write_all, args=(stdin, data))
    writer.start()
    for _ in bodies:
        reply = stdout.readline()
        assert b'"error"' not in reply and reply, reply
    took = time.perf_counter() - start
    writer.join()
    stdin.close()
    proc.wait()
    return took


def ours_schedule(n: int) -> float:
    dsn = dsn_for(OURS_DB) + "?schema=sched"
    bodies: list[dict[str, object]] = [
        {"type": "schedule_job", "task": "noop", "delay_ms": 3_600_000} for _ in range(n)
    ]
    return n / pipelined(dsn, bodies)


def ours_run(n: int, nodes: int, workers: int, load: Load) -> float:
    """Completed jobs/s of ``nodes`` nodes running n jobs of ``load`` stored first."""
    schema = f"run{nodes}_{load.task}"
    dsn = dsn_for(OURS_DB) + f"?schema={schema}"
    body: dict[str, object] = {"type": "schedule_job", "task": load.task}
    if load.kwargs:
        body["payload"] = load.kwargs
    pipelined(dsn, [body] * n)
    args = ["--realtime", "--workers", str(workers), *load.node_args]
    procs = [node(dsn, *args) for _ in range(nodes)]
    with psycopg.connect(dsn_for(OURS_DB), autocommit=True) as db:

        def done() -> bool:
            if any(p.poll() is not None for p in procs):
                raise SystemExit("a jobsched node exited before running every job")
            sql = f"SELECT count(*) FROM {schema}.jobs WHERE state <> 'completed'"
            row = db.execute(sql).fetchone()
            return row is not None and row[0] == 0

        wait_until(done, f"{n} jobsched jobs")
        sql = f"SELECT min(started_at), max(finished_at) FROM {schema}.runs"
        first, last = db.execute(sql).fetchone() or (0, 0)
    for p in procs:
        assert p.stdin is not None
        p.stdin.close()
        p.wait()
    return rate(n, (int(last) - int(first)) / 1000)


def defer_batches(task: Any, n: int, kwargs: dict[str, object] | None = None) -> None:
    for start in range(0, n, BATCH):
        task.batch_defer(*[kwargs or {}] * min(BATCH, n - start))


def peer_schedule(n: int) -> tuple[float, float]:
    app = peer_app(dsn_for(PEER_DB))
    with app.open():
        task = app.tasks["noop"]
        start = time.perf_counter()
        for _ in range(n):
            task.defer()
        one = n / (time.perf_counter() - start)
        start = time.perf_counter()
        defer_batches(task, n)
        batch = n / (time.perf_counter() - start)
    return one, batch


def peer_run(n: int, procs_n: int, workers: int, app_file: Path, load: Load) -> float:
    dsn = dsn_for(PEER_DB)
    with psycopg.connect(dsn, autocommit=True) as db:
        db.execute("TRUNCATE procrastinate_jobs CASCADE")
    app = peer_app(dsn)
    with app.open():
        defer_batches(app.tasks[load.task], n, load.kwargs)
    cmd = [sys.executable, "-c", PEER_WORKER, str(app_file), str(workers)]
    procs = [spawn(cmd, stdout=subprocess.DEVNULL) for _ in range(procs_n)]
    for p in procs:
        p.wait(timeout=WAIT_S)
    with psycopg.connect(dsn, autocommit=True) as db:
        done, first, last = db.execute(
            "SELECT count(*) FILTER (WHERE type = 'succeeded'), "
            "extract(epoch FROM min(at) FILTER (WHERE type = 'started')), "
            "extract(epoch FROM max(at) FILTER (WHERE type = 'succeeded')) "
            "FROM procrastinate_events"
        ).fetchone() or (0, None, None)
    if done != n or first is None or last is None:
        raise SystemExit(f"procrastinate ran {done} of {n} jobs")
    return rate(done, float(last) - float(first))


def schedule_part(n: int, procrastinate: ModuleType | None) -> None:
    ours = ours_schedule(n)
    print(f"\nschedule_job, durable, pipelined ({n:,} jobs): {ours:,.0f}/s", flush=True)
    if procrastinate is None:
        return
    one, batch = peer_schedule(n)
    print(f"procrastinate defer, one per call: {one:,.0f}/s  (ratio {ratio(ours, one)})")
    print(
        f"procrastinate batch_defer, {BATCH:,} per call: {batch:,.0f}/s  "
        f"(ratio {ratio(ours, batch)})",
        flush=True,
    )


def run_part(
    n: int, workers: int, counts: tuple[int, ...], app_file: Path | None, load: Load
) -> None:
    what = f"handlers sleeping {load.sleep_ms} ms" if load.sleep_ms else "no-op handlers"
    print(f"\njobs completed per second, {what}, {n:,} jobs, {workers} workers per node")
    # Each worker runs one handler at a time: a node cannot complete more than this.
    bound = workers * 1000 / load.sleep_ms if load.sleep_ms else 0.0
    if bound:
        print(f"bound: {workers} workers / {load.sleep_ms} ms = {bound:,.0f}/s per node")
    ours: dict[int, float] = {}
    theirs: dict[int, float] = {}
    for nodes in counts:
        ours[nodes] = ours_run(n, nodes, workers, load)
        row = (
            f"{nodes} node(s): jobsched {ours[nodes]:,.0f}/s{of_bound(ours[nodes], bound * nodes)}"
        )
        if app_file is not None:
            theirs[nodes] = peer_run(n, nodes, workers, app_file, load)
            row += (
                f", procrastinate {theirs[nodes]:,.0f}/s{of_bound(theirs[nodes], bound * nodes)}"
                f", ratio {ratio(ours[nodes], theirs[nodes])}"
            )
        print(row, flush=True)
    if len(counts) == 2:
        scaling = f"2 nodes / 1 node: jobsched {ratio(ours[2], ours[1])}"
        if theirs:
            scaling += f", procrastinate {ratio(theirs[2], theirs[1])}"
        print(scaling, flush=True)


def of_bound(value: float, bound: float) -> str:
    return f" ({value / bound:.0%} of the {bound:,.0f}/s bound)" if bound else ""


def email_kwargs(n: int, start: int = 0) -> list[dict[str, object]]:
    return [{"to": f"user{i}@example.com"} for i in range(start, start + n)]


def ours_many(n: int, batch: int, round_no: int) -> float:
    """Jobs/s of Client.schedule_many over n jobs in calls of ``batch``, on a fresh schema."""
    # Imported here: the other parts also measure revisions that had no Client
    # (bench/tools/compare_revisions.py runs this script against them).
    from jobsched import Client

    dsn = dsn_for(OURS_DB) + f"?schema=many{round_no}"
    parts = [
        [{"task": "send-email", "payload": kw} for kw in email_kwargs(min(batch, n - i), i)]
        for i in range(0, n, batch)
    ]
    with Client(dsn) as client:
        client.schedule_many([{"task": "send-email"}] * 10)  # schema migrated before timing
        start = time.perf_counter()
        for part in parts:
            done = client.schedule_many(part)
        elapsed = time.perf_counter() - start
        assert len(done) == len(parts[-1]) and client.stats().total == n + 10
    return rate(n, elapsed)


def ours_one(n: int) -> float:
    """Jobs/s of Client.schedule one at a time (each call its own transaction)."""
    from jobsched import Client

    with Client(dsn_for(OURS_DB) + "?schema=one") as client:
        client.schedule("send-email")  # schema migrated before timing
        start = time.perf_counter()
        for i in range(n):
            client.schedule("send-email", {"to": f"user{i}@example.com"})
        return rate(n, time.perf_counter() - start)


def peer_one(n: int) -> float:
    """Jobs/s of Procrastinate's defer of the same jobs, one per call."""
    app = peer_app(dsn_for(PEER_DB))
    with app.open():
        task = app.tasks["send-email"]
        task.defer(to="warm-up")
        start = time.perf_counter()
        for i in range(n):
            task.defer(to=f"user{i}@example.com")
        return rate(n, time.perf_counter() - start)


def peer_many(n: int, batch: int) -> float:
    """Jobs/s of Procrastinate's batch_defer over the same n jobs in calls of ``batch``."""
    dsn = dsn_for(PEER_DB)
    with psycopg.connect(dsn, autocommit=True) as db:
        db.execute("TRUNCATE procrastinate_jobs CASCADE")
    parts = [email_kwargs(min(batch, n - i), i) for i in range(0, n, batch)]
    app = peer_app(dsn)
    with app.open():
        task = app.tasks["send-email"]
        task.batch_defer(*email_kwargs(10, n))  # connection open before timing, as ours
        start = time.perf_counter()
        for part in parts:
            ids = task.batch_defer(*part)
        elapsed = time.perf_counter() - start
    assert len(ids) == len(parts[-1])
    return rate(n, elapsed)


def many_part(n: int, rounds: int, with_peer: bool) -> None:
    """Issue 10: Client.schedule_many beside batch_defer of the same jobs, the
    rounds alternating which side goes first."""
    from jobsched.engine import MAX_BATCH

    batch = min(MAX_BATCH, n)
    ours: list[float] = []
    theirs: list[float] = []
    for r in range(rounds):
        if with_peer and r % 2:
            theirs.append(peer_many(n, batch))
        ours.append(ours_many(n, batch, r))
        if with_peer and not r % 2:
            theirs.append(peer_many(n, batch))
    print(f"\nbatch scheduling, {n:,} jobs in calls of {batch:,}, median of {rounds} rounds")
    print(f"jobsched Client.schedule_many: {spread(ours)}", flush=True)
    if theirs:
        each = [o / t for o, t in zip(ours, theirs, strict=True)]
        print(
            f"procrastinate batch_defer: {spread(theirs)}; ratio "
            f"{ratio(statistics.median(ours), statistics.median(theirs))} "
            f"(rounds {min(each):.2f}x-{max(each):.2f}x)",
            flush=True,
        )
    one_n = max(n // 5, 1)
    mine = ours_one(one_n)
    line = f"one job a call ({one_n:,}): jobsched Client.schedule {mine:,.0f}/s"
    if with_peer:
        peer = peer_one(one_n)
        line += f", procrastinate defer {peer:,.0f}/s, ratio {ratio(mine, peer)}"
    print(line, flush=True)


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--schedule", type=positive, default=20_000)
    parser.add_argument("--jobs", type=positive, default=10_000)
    parser.add_argument("--workers", type=positive, default=8)
    parser.add_argument("--many", type=positive, default=10_000, help="jobs per batch round")
    parser.add_argument("--rounds", type=positive, default=3, help="batch rounds a side")
    parser.add_argument("--sleep-ms", type=positive, default=20, help="the I/O-bound handler")
    parser.add_argument("--sleep-jobs", type=positive, default=2_000)
    parser.add_argument(
        "--parts", type=part_list, default=PARTS, help=f"some of {','.join(PARTS)} (default all)"
    )
    parser.add_argument("--quick", action="store_true", help="smaller sizes: 20-40 s")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: proves it runs")
    args = parser.parse_args()
    if args.quick:
        args.schedule, args.jobs = min(args.schedule, 2000), min(args.jobs, 1000)
        args.sleep_jobs = min(args.sleep_jobs, 500)
    if args.smoke:
        args.schedule, args.jobs, args.workers, args.many, args.sleep_jobs = 50, 50, 2, 50, 20
    return args


def part_list(text: str) -> tuple[str, ...]:
    parts = tuple(p.strip() for p in text.split(",") if p.strip())
    if not parts or not set(parts) <= set(PARTS):
        raise argparse.ArgumentTypeError(f"name some of {','.join(PARTS)}")
    return parts


def main() -> None:
    args = arguments()
    try:
        with admin() as conn:
            row = conn.execute("SHOW server_version").fetchone()
    except psycopg.OperationalError as exc:
        print(f"PostgreSQL is unreachable at {BASE} (set JOBSCHED_BENCH_PG): {exc}")
        sys.exit(2)
    procrastinate = peer("procrastinate", "procrastinate")
    peer_version = f", procrastinate {procrastinate.__version__}" if procrastinate else ""
    print(f"PostgreSQL {row[0] if row else '?'}{peer_version}")
    names = (OURS_DB, PEER_DB) if procrastinate else (OURS_DB,)
    counts = (1,) if args.smoke else (1, 2)
    with tempfile.TemporaryDirectory() as tmp, databases(*names):
        tasks_file = Path(tmp) / "jobsched_bench_tasks.py"
        tasks_file.write_text(OUR_TASKS)
        app_file = None
        if procrastinate is not None:
            app_file = Path(tmp) / "procrastinate_bench_app.py"
            app_file.write_text(PEER_APP.format(dsn=dsn_for(PEER_DB)))
            app = peer_app(dsn_for(PEER_DB))
            with app.open():
                app.schema_manager.apply_schema()
        if "schedule" in args.parts:
            schedule_part(args.schedule, procrastinate)
        if "many" in args.parts:
            many_part(args.many, args.rounds, procrastinate is not None)
        if "noop" in args.parts:
            run_part(args.jobs, args.workers, counts, app_file, Load("noop", {}))
        if "sleep" in args.parts:
            tasks = ("--tasks", str(tasks_file))
            sleeping = Load("sleep", {"ms": args.sleep_ms}, tasks, args.sleep_ms)
            run_part(args.sleep_jobs, args.workers, counts, app_file, sleeping)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:  # the databases are already dropped: no traceback
        sys.exit(130)
