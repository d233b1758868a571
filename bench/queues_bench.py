"""Queue benchmarks: what a concurrency limit and unique keys cost.

    .venv/bin/python bench/queues_bench.py [--jobs 5000] [--inserts 10000] [--workers 8] [--held 100000]
    .venv/bin/python bench/queues_bench.py --quick   # 1,000 jobs, 2,000 inserts, 20,000 held: 10-20 s
    .venv/bin/python bench/queues_bench.py --smoke   # 50 and 50, one node of 2 workers: proves it runs

1. Jobs completed per second on PostgreSQL with two nodes
   (``main.py --realtime --workers W``, the real-time dispatcher), no-op
   handlers: N jobs due now in one queue, drained once without settings and
   once with ``configure_queue {concurrency: 8}`` (the issue's target: the
   limited run at least 0.7x the unlimited one). With W = --workers (8: the
   limit holds the two nodes to half their workers) and with W = 4 (as many
   workers as the limit: what its bookkeeping costs). Rates from the
   database's run records, jobs / (last finish - first start), as
   bench/postgres_bench.py measures them; each run on a schema of its own.
2. Durable schedule_job per second, pipelined into ``main.py --db`` (replies
   after their batch's COMMIT), on a SQLite file and on PostgreSQL: plain
   jobs, jobs with a distinct ``unique_key`` each (the partial unique index),
   and with ``unique_key`` and ``unique_for_ms`` (the key table's upsert too);
   the ratio of each to the plain inserts.
3. A claim of 8 jobs behind a paused queue of --held due jobs (100,000), in
   process, on the memory store, SQLite and PostgreSQL, beside the same claim
   with none held:
   a claim must not read the jobs a paused or full queue holds back.

The PostgreSQL helpers are bench/postgres_bench.py's: one database
(``jobsched_bench_<pid>``) created on the server and dropped at the end, after
an error or Ctrl-C too, the nodes stopped first. The SQLite files live in a
TemporaryDirectory. An unreachable server is an error (exit status 2).
Server: $JOBSCHED_BENCH_PG (default postgresql://postgres@127.0.0.1:5432/test).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import psycopg
from peers import positive
from postgres_bench import (
    BASE,
    OURS_DB,
    admin,
    databases,
    dsn_for,
    node,
    pipelined,
    rate,
    ratio,
    wait_until,
)

QUEUE = "bench"
LIMIT = 8  # the concurrency limit
TARGET = 0.7  # limited / unlimited, the bar


def drain(schema: str, n: int, nodes_n: int, workers: int, concurrency: int | None) -> float:
    """Jobs completed per second by ``nodes_n`` nodes draining ``n`` due jobs of QUEUE."""
    dsn = dsn_for(OURS_DB) + f"?schema={schema}"
    bodies: list[dict[str, object]] = []
    if concurrency is not None:
        bodies.append({"type": "configure_queue", "queue": QUEUE, "concurrency": concurrency})
    bodies += [{"type": "schedule_job", "task": "noop", "queue": QUEUE} for _ in range(n)]
    pipelined(dsn, bodies)
    nodes = [node(dsn, "--realtime", "--workers", str(workers)) for _ in range(nodes_n)]
    jobs, runs = f'"{schema}".jobs', f'"{schema}".runs'
    with psycopg.connect(dsn_for(OURS_DB), autocommit=True) as db:

        def finished() -> bool:
            if any(p.poll() is not None for p in nodes):
                raise SystemExit("a jobsched node exited before running every job")
            row = db.execute(f"SELECT count(*) FROM {jobs} WHERE state = 'completed'").fetchone()
            return row is not None and row[0] == n

        wait_until(finished, f"{n} jobs of queue {QUEUE!r}")
        span = db.execute(f"SELECT min(started_at), max(finished_at) FROM {runs}").fetchone()
    for p in nodes:
        assert p.stdin is not None
        p.stdin.close()
        p.wait()
    first, last = span if span is not None else (0, 0)
    return rate(n, (int(last) - int(first)) / 1000)


def limits_part(n: int, nodes_n: int, workers: tuple[int, ...]) -> None:
    """The same jobs drained without limits, then with concurrency LIMIT, for
    each number of workers per node."""
    print(f"\njobs completed per second, PostgreSQL, {nodes_n} node(s), {n:,} no-op jobs")
    for w in workers:
        free = drain(f"free_{w}", n, nodes_n, w, None)
        capped = drain(f"capped_{w}", n, nodes_n, w, LIMIT)
        verdict = "meets" if capped >= TARGET * free else "misses"
        print(
            f"{w} workers a node: no limits {free:,.0f}/s, concurrency {LIMIT} {capped:,.0f}/s, "
            f"ratio {ratio(capped, free)} ({verdict} the {TARGET}x target)",
            flush=True,
        )


def inserts(target: str, n: int, unique: str | None) -> float:
    """schedule_job per second, pipelined; ``unique``: None, "key" or "key+window"."""
    bodies: list[dict[str, object]] = []
    for i in range(n):
        body: dict[str, object] = {"type": "schedule_job", "task": "noop", "delay_ms": 3_600_000}
        if unique is not None:
            body["unique_key"] = f"sync-{i}"
        if unique == "key+window":
            body["unique_for_ms"] = 60_000
        bodies.append(body)
    return n / pipelined(target, bodies)


def stores(sqlite_dir: Path, prefix: str) -> dict[str, Callable[[str], str]]:
    """By store name: the target of a run called ``kind`` (a SQLite file in
    ``sqlite_dir``, or a schema of the bench database), named ``prefix`` + kind."""
    return {
        "SQLite": lambda kind: str(sqlite_dir / f"{prefix}{kind}.db"),
        "PostgreSQL": lambda kind: dsn_for(OURS_DB) + f"?schema={prefix}{kind.replace('+', '_')}",
    }


def unique_part(n: int, sqlite_dir: Path) -> None:
    print(f"\ndurable schedule_job per second, pipelined, {n:,} jobs")
    for store, where in stores(sqlite_dir, "ins_").items():
        plain = inserts(where("plain"), n, None)
        line = f"{store}: plain {plain:,.0f}/s"
        for kind in ("key", "key+window"):
            rated = inserts(where(kind), n, kind)
            line += f"; unique_key{'' if kind == 'key' else ' + unique_for_ms'} "
            line += f"{rated:,.0f}/s (ratio {ratio(rated, plain)})"
        print(line, flush=True)


def claim_ms(target: str, held: int, claims: int = 100) -> float:
    """Median ms of a claim of 8 jobs of queue default, on the store at
    ``target``, while a paused queue holds ``held`` due jobs."""
    from jobsched.client import Client
    from jobsched.queues import QueueChange
    from jobsched.stores.open import open_store

    client = Client(target)
    for start in range(0, held, 10_000):
        client.schedule_many([{"task": "noop", "queue": "held"}] * min(10_000, held - start))
    client.schedule_many([{"task": "noop"}] * (8 * claims))
    client.close()
    store = open_store(target)
    store.configure_queue("held", QueueChange(paused=True))
    now = int(time.time() * 1000) + 1000
    times = []
    for _ in range(claims):
        began = time.perf_counter()
        taken = store.claim_due(now, 8, "bench", now + 60_000)
        times.append((time.perf_counter() - began) * 1000)
        assert len(taken) == 8, len(taken)
    store.close()
    return statistics.median(times)


def memory_claim_ms(held: int, claims: int = 100) -> float:
    """``claim_ms`` on an in-process memory store (a node without ``--db``)."""
    from jobsched.engine import Engine
    from jobsched.queues import QueueChange
    from jobsched.spec import ScheduleSpec
    from jobsched.stores.memory import MemoryStore

    store = MemoryStore()
    engine = Engine(store)
    now = int(time.time() * 1000)
    for start in range(0, held, 10_000):
        count = min(10_000, held - start)
        engine.schedule_many([ScheduleSpec("noop", "{}", queue="held")] * count, now)
    engine.schedule_many([ScheduleSpec("noop", "{}")] * (8 * claims), now)
    store.configure_queue("held", QueueChange(paused=True))
    times = []
    for _ in range(claims):
        began = time.perf_counter()
        taken = store.claim_due(now + 1000, 8, "bench", now + 60_000)
        times.append((time.perf_counter() - began) * 1000)
        assert len(taken) == 8, len(taken)
    return statistics.median(times)


def held_part(held: int, sqlite_dir: Path) -> None:
    print(f"\na claim of 8 jobs behind a paused queue of {held:,} due jobs, median ms")

    def on(where: Callable[[str], str]) -> Callable[[int], float]:
        return lambda n: claim_ms(where("many" if n else "none"), n)

    measures: dict[str, Callable[[int], float]] = {"memory (in process)": memory_claim_ms}
    measures.update((store, on(where)) for store, where in stores(sqlite_dir, "held_").items())
    for store, measure in measures.items():
        alone, behind = measure(0), measure(held)
        print(
            f"{store}: {behind:.2f} ms behind them, {alone:.2f} ms with none held "
            f"(ratio {ratio(behind, alone)})",
            flush=True,
        )


# (jobs, inserts, workers, held) of the short modes; None keeps the argument's value.
MODES = {"quick": (1000, 2000, None, 20_000), "smoke": (50, 50, 2, 500)}


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    defaults = (("--jobs", 5000), ("--inserts", 10_000), ("--workers", 8), ("--held", 100_000))
    for flag, default in defaults:
        parser.add_argument(flag, type=positive, default=default)
    parser.add_argument(
        "--quick", action="store_true", help="1,000 jobs, 2,000 inserts, 20,000 held"
    )
    parser.add_argument("--smoke", action="store_true", help="50 and 50, one node: proves it runs")
    args = parser.parse_args()
    for mode, sizes in MODES.items():
        if getattr(args, mode):
            for name, size in zip(("jobs", "inserts", "workers", "held"), sizes, strict=True):
                if size is not None:
                    setattr(args, name, min(getattr(args, name), size))
    return args


def server_version() -> str:
    """The server's version; an unreachable server ends the script with status 2."""
    try:
        with admin() as conn:
            return str((conn.execute("SHOW server_version").fetchone() or ("?",))[0])
    except psycopg.OperationalError as exc:
        print(f"PostgreSQL is unreachable at {BASE} (set JOBSCHED_BENCH_PG): {exc}")
        sys.exit(2)


def main() -> None:
    args = arguments()
    print(f"PostgreSQL {server_version()}, SQLite via main.py --db FILE")
    with tempfile.TemporaryDirectory(prefix="queues_bench_") as tmp, databases(OURS_DB):
        # Also with as many workers in all as the limit: only its bookkeeping costs.
        workers = (args.workers,) if args.smoke else (args.workers, max(LIMIT // 2, 1))
        limits_part(args.jobs, 1 if args.smoke else 2, workers)
        unique_part(args.inserts, Path(tmp))
        held_part(args.held, Path(tmp))


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:  # the database is already dropped: no traceback
        sys.exit(130)
