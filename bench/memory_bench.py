"""Memory per pending job: jobsched's MemoryStore beside APScheduler 3's MemoryJobStore.

    .venv/bin/python bench/memory_bench.py            # 1,000,000 jobs each: about 1 min
    .venv/bin/python bench/memory_bench.py --quick    # 100,000 jobs: a few seconds
    .venv/bin/python bench/memory_bench.py --smoke    # 3,000 jobs: proves it runs
    .venv/bin/python bench/memory_bench.py --jobs N

Each side runs in a fresh child process, which reads its own RSS (/proc/self/statm)
before and after adding N one-time jobs and reports the growth / N: everything a
pending job costs, the store's indexes and the allocator's slack included.

- jobsched: ``Engine(MemoryStore())``; each job is built as the stdio node builds
  it, from a request body decoded from JSON text (``validate.schedule_spec`` then
  ``engine.schedule``), so it owns its strings; each request has its own "now"
  (a distinct int, as the node reads the clock per request). Due times are
  spread over a month (what node_bench.py's pending section does, plus the
  distinct clocks; that section shares one "now" object, which flatters both
  layouts by the same 32 B).
- APScheduler 3: a paused BackgroundScheduler with a MemoryJobStore, ``add_job``
  with a date trigger and the same payload as an argument.

The ratio is APScheduler's bytes per job over ours. Nothing is written to disk.
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import sys
import time
from pathlib import Path
from typing import Any

from peers import in_child, installed, peer, positive, rss_self

ROOT = Path(__file__).resolve().parent.parent
T = 1_705_309_200_000  # 2024-01-15T09:00:00Z
MONTH_MS = 30 * 86_400_000
CHUNK = 10_000
FULL, QUICK, SMOKE = 1_000_000, 100_000, 3_000


def due_times(n: int) -> list[int]:
    rng = random.Random(1)
    return [T + 1000 + rng.randrange(MONTH_MS) for _ in range(n)]


def child_ours(n: int) -> dict[str, Any]:
    sys.path.insert(0, str(ROOT))
    from jobsched import validate
    from jobsched.engine import Engine
    from jobsched.stores.memory import MemoryStore

    dues = due_times(n)
    gc.collect()
    rss0 = rss_self()
    engine, spent = Engine(MemoryStore()), 0.0
    for at in range(0, n, CHUNK):
        # Decoding is not timed: it makes the bodies the node would see.
        text = "\n".join(
            f'{{"task":"send-email","payload":{{"to":"user@example.com"}},"run_at":{d}}}'
            for d in dues[at : at + CHUNK]
        )
        bodies = [json.loads(line) for line in text.split("\n")]
        nows = [T + (at + i) // 50 for i in range(len(bodies))]  # distinct int objects
        start = time.perf_counter()
        for body, now in zip(bodies, nows, strict=True):
            engine.schedule(validate.schedule_spec(body), now)
        spent += time.perf_counter() - start
        del bodies, text, nows
    gc.collect()
    return {"bytes_per_job": (rss_self() - rss0) / n, "us_per_add": spent / n * 1e6}


def noop(payload: object = None) -> None:
    """The APScheduler job's function (never run: the scheduler is paused)."""


def child_aps(n: int) -> dict[str, Any]:
    from datetime import UTC, datetime

    from apscheduler.jobstores.memory import MemoryJobStore  # type: ignore[import-untyped]
    from apscheduler.schedulers.background import BackgroundScheduler  # type: ignore[import-untyped]

    dues = due_times(n)
    store = MemoryJobStore()
    scheduler = BackgroundScheduler(jobstores={"default": store}, timezone="UTC")
    scheduler.start(paused=True)
    gc.collect()
    rss0 = rss_self()
    spent = 0.0
    for at in range(0, n, CHUNK):
        whens = [datetime.fromtimestamp(d / 1000, UTC) for d in dues[at : at + CHUNK]]
        start = time.perf_counter()
        for when in whens:
            scheduler.add_job(noop, "date", run_date=when, args=[{"to": "user@example.com"}])
        spent += time.perf_counter() - start
        del whens
    gc.collect()
    result = {"bytes_per_job": (rss_self() - rss0) / n, "us_per_add": spent / n * 1e6}
    scheduler.shutdown(wait=False)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help=f"{QUICK:,} jobs")
    parser.add_argument("--smoke", action="store_true", help=f"{SMOKE:,} jobs: proves it runs")
    parser.add_argument("--jobs", type=positive, help="pending jobs per side")
    parser.add_argument("--child", nargs=2, metavar=("KIND", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, size = args.child[0], int(args.child[1])
        print(json.dumps(child_ours(size) if kind == "ours" else child_aps(size)))
        return
    n = args.jobs or (SMOKE if args.smoke else QUICK if args.quick else FULL)
    aps = peer("apscheduler", "apscheduler", "3.") is not None
    py = ".".join(map(str, sys.version_info[:3]))
    peer_version = f"APScheduler {installed('apscheduler')}" if aps else "no APScheduler"
    print(f"Python {py}; {peer_version}")
    print(f"{n:,} pending one-time jobs per side, RSS growth of a fresh process / jobs\n")
    ours = in_child(__file__, "ours", n)
    print(f"jobsched MemoryStore:         {ours['bytes_per_job']:6.0f} B/job", end="")
    print(f"  ({ours['us_per_add']:.2f} µs per schedule)")
    if aps:
        theirs = in_child(__file__, "aps", n)
        print(f"APScheduler 3 MemoryJobStore: {theirs['bytes_per_job']:6.0f} B/job", end="")
        print(f"  ({theirs['us_per_add']:.2f} µs per add_job)")
        ratio = theirs["bytes_per_job"] / max(ours["bytes_per_job"], 1.0)
        print(f"ratio (APScheduler / jobsched): {ratio:.2f}x")
    if n < 100_000:
        print("(below 100,000 jobs the figures are dominated by allocator and dict steps)")


if __name__ == "__main__":
    main()
