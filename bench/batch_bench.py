"""stdio batches: ``schedule_jobs`` of 1,000 specs a line beside one ``schedule_job`` a line.

    .venv/bin/python bench/batch_bench.py            # 100,000 jobs, 3 runs a side: ~30 s
    .venv/bin/python bench/batch_bench.py --quick    # 20,000 jobs
    .venv/bin/python bench/batch_bench.py --smoke    # 2,000 jobs, one run: proves it runs

The same jobs (``{"task": "send-email", "payload": {"to": ...}, "delay_ms": 60000}``)
are piped into one ``main.py`` as N ``schedule_job`` lines, and as N / --per
``schedule_jobs`` lines of --per specs each; jobs per second from the first byte
written to the last reply read, the node started and answered before the clock
starts; median of the runs, the two kinds alternated. On the memory store and on a
SQLite file (synchronous=FULL: every reply after its batch's commit and fsync).
Issue 10's target: the batch rate at least 3x the per-line rate.

No peer: this compares the protocol's two ways of scheduling. Files live in a
TemporaryDirectory, removed at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGET = 3.0


def spec(i: int) -> dict[str, object]:
    return {"task": "send-email", "payload": {"to": f"user{i}@example.com"}, "delay_ms": 60_000}


def line(body: dict[str, object]) -> bytes:
    return (json.dumps({"src": "c", "dest": "n", "body": body}) + "\n").encode()


def singles(n: int) -> bytes:
    return b"".join(line({"type": "schedule_job", "msg_id": i, **spec(i)}) for i in range(n))


def batches(n: int, per: int) -> bytes:
    return b"".join(
        line({"type": "schedule_jobs", "msg_id": k, "jobs": [spec(i) for i in range(k, min(k + per, n))]})
        for k in range(0, n, per)
    )  # fmt: skip


def piped(db: list[str], data: bytes, replies: int, kind: str) -> float:
    """Seconds from the first byte written to the last of ``replies`` replies read."""
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "main.py"), *db],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    assert proc.stdin is not None and proc.stdout is not None
    stdin, out = proc.stdin, proc.stdout
    stdin.write(line({"type": "stats", "msg_id": -1}))  # started and the store open
    stdin.flush()
    assert out.readline(), "main.py exited before its first reply"
    writer = threading.Thread(target=lambda: (stdin.write(data), stdin.flush()))
    start = time.perf_counter()
    writer.start()
    got = [out.readline() for _ in range(replies)]
    elapsed = time.perf_counter() - start
    writer.join()
    stdin.close()
    proc.wait(timeout=60)
    bad = [r for r in got if f'"type": "{kind}"'.encode() not in r]
    assert not bad, bad[0][:300]
    return elapsed


def measure(db: list[str], n: int, per: int, runs: int, tmp: Path) -> tuple[float, float]:
    one, many = singles(n), batches(n, per)
    rates: dict[str, list[float]] = {"one": [], "many": []}
    for r in range(runs):
        for kind in ("one", "many") if r % 2 == 0 else ("many", "one"):
            where = [*db, str(tmp / f"{kind}{r}.db")] if db else []
            if kind == "one":
                rates[kind].append(n / piped(where, one, n, "job_scheduled"))
            else:
                rates[kind].append(n / piped(where, many, -(-n // per), "jobs_scheduled"))
    return statistics.median(rates["one"]), statistics.median(rates["many"])


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--per", type=int, default=1000, help="specs a schedule_jobs line")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="20,000 jobs")
    parser.add_argument("--smoke", action="store_true", help="2,000 jobs, one run")
    args = parser.parse_args()
    if args.quick:
        args.jobs = min(args.jobs, 20_000)
    if args.smoke:
        args.jobs, args.runs = min(args.jobs, 2000), 1
    if args.jobs < 1 or args.per < 1 or args.runs < 1:
        parser.error("--jobs, --per and --runs must be at least 1")
    return args


def main() -> None:
    args = arguments()
    py = ".".join(map(str, sys.version_info[:3]))
    print(f"Python {py}; {os.cpu_count()} cores; {args.jobs:,} jobs, median of {args.runs}\n")
    print(f"| store | schedule_job, one a line | schedule_jobs, {args.per:,} a line | ratio |")
    print("|---|---|---|---|")
    with tempfile.TemporaryDirectory(prefix="batch_bench_") as tmp:
        for name, db in (("memory", []), ("SQLite FULL", ["--db"])):
            one, many = measure(db, args.jobs, args.per, args.runs, Path(tmp))
            verdict = "meets" if many >= TARGET * one else "misses"
            print(
                f"| {name} | {one:,.0f}/s | {many:,.0f}/s | {many / one:.1f}x "
                f"({verdict} the {TARGET:g}x target) |",
                flush=True,
            )


if __name__ == "__main__":
    main()
