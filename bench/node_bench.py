"""The in-memory node: jobsched beside a bare JSON echo loop and APScheduler 3.

    .venv/bin/python bench/node_bench.py            # about 3 min 15 s
    .venv/bin/python bench/node_bench.py --quick    # 20,000 requests, 10,000-50,000 jobs: ~10 s
    .venv/bin/python bench/node_bench.py --smoke    # 300 requests, 3,000 jobs: proves it runs
    .venv/bin/python bench/node_bench.py --pipe N --pending N,N,...   # any sizes

1. schedule_job through ``main.py`` (no --db) on a pipe: N requests like the
   SPEC's first sample, distinct msg_ids, written by a thread while the main
   thread drains the replies. Beside it, the same N lines through a bare loop
   (read a line, json.loads, json.dumps a reply envelope of the same size,
   write; batched and flushed per read like the node): the physical limit of
   a Python line protocol. Both run by this interpreter, alternated, median of
   the repetitions. The node's RSS growth over the run is read from /proc.
2. execute_jobs in-process: ``Engine(MemoryStore())`` with N pending jobs, of
   which three slices of 1,000 come due at T+1 s, T+2 s, T+3 s and the rest
   hours to weeks later (inserted in random order). ``engine.execute_due`` at
   T+1 s, T+2 s, T+3 s runs exactly 1,000 each time; median of the three.
   Jobs are built from request bodies decoded from JSON text
   (validate.schedule_spec + engine.schedule), so every job owns its strings
   as in the node. Memory per job: RSS growth of a fresh process / N.
3. APScheduler 3 on the same layout: BackgroundScheduler started paused with a
   MemoryJobStore, add_job with a date trigger; due-job lookup and removal is
   ``jobstore.get_due_jobs(now)`` then ``jobstore.remove_job`` for each (what
   the scheduler does for a finished date job, without running anything).

Every size runs in a fresh child process so that memory figures and heaps do
not leak from one measurement into the next. Below 3,000 pending jobs each slice
holds a third of them. Without APScheduler (bench/peers.py) part 3 is left out.
Nothing is written to disk.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from peers import in_child, installed, peer, rss_self

ROOT = Path(__file__).resolve().parent.parent
T = 1_705_309_200_000  # 2024-01-15T09:00:00Z
DUE = 1000
SLICES = 3
SAMPLE = (
    '{"src":"client","dest":"scheduler","body":{"type":"schedule_job","msg_id":%d,'
    '"task":"send-email","payload":{"to":"user@example.com"},"delay_ms":60000}}\n'
)

# The echo loop: what any Python line protocol must at least do per request.
# Its reply is the size of ours (a UUID job_id and a timestamp).
ECHO = """
import json, os, sys
out = sys.stdout.buffer
JOB_ID = "0190f3a2-7c4e-7d3b-9a1e-2b3c4d5e6f70"
AT = "2024-01-15T09:01:00.000Z"
pending = b""
while True:
    chunk = os.read(0, 1 << 16)
    if not chunk:
        break
    lines = (pending + chunk).split(b"\\n")
    pending = lines.pop()
    replies = []
    for line in lines:
        obj = json.loads(line)
        body = obj["body"]
        reply = {"src": obj["dest"], "dest": obj["src"], "body": {"type": "job_scheduled",
                 "in_reply_to": body["msg_id"], "job_id": JOB_ID, "scheduled_at": AT}}
        replies.append(json.dumps(reply) + "\\n")
    out.write("".join(replies).encode())
    out.flush()
"""


# -- 1. through the pipe ------------------------------------------------------


def child_rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def pipe_run(cmd: list[str], data: bytes, n: int) -> tuple[float, int]:
    """Seconds from the first request written to the last reply read, and the
    child's RSS growth over the run."""
    proc = subprocess.Popen(
        cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
    )
    assert proc.stdin is not None and proc.stdout is not None
    stdin, fd = proc.stdin, proc.stdout.fileno()
    stdin.write((SAMPLE % -1).encode())  # warm-up: the child is up and imported
    stdin.flush()
    first = b""
    while not first.endswith(b"\n"):
        chunk = os.read(fd, 1 << 16)
        assert chunk, f"{cmd[-1]} exited before its first reply"  # else this would spin
        first += chunk
    rss0 = child_rss(proc.pid)
    writer = threading.Thread(target=lambda: (stdin.write(data), stdin.flush()))
    chunks: list[bytes] = []
    seen = 0
    start = time.perf_counter()
    writer.start()
    while seen < n:
        chunk = os.read(fd, 1 << 20)
        assert chunk, "the child closed stdout early"
        chunks.append(chunk)
        seen += chunk.count(b"\n")
    elapsed = time.perf_counter() - start
    rss1 = child_rss(proc.pid)
    writer.join()
    stdin.close()
    proc.wait(timeout=60)
    out = b"".join(chunks)
    ok = out.count(b'"type": "job_scheduled"')
    assert ok == n == seen, f"{ok} job_scheduled replies in {seen} lines for {n} requests"
    return elapsed, rss1 - rss0


def pipe_bench(n: int, reps: int) -> dict[str, Any]:
    data = "".join(SAMPLE % i for i in range(n)).encode()
    cmds = {
        "echo": [sys.executable, "-c", ECHO],
        "node": [sys.executable, str(ROOT / "main.py")],
    }
    times: dict[str, list[float]] = {"echo": [], "node": []}
    growth = 0
    for _ in range(reps):
        for name, cmd in cmds.items():
            elapsed, rss = pipe_run(cmd, data, n)
            times[name].append(elapsed)
            growth = rss if name == "node" else growth
    med = {k: n / statistics.median(v) for k, v in times.items()}
    best = {k: n / min(v) for k, v in times.items()}
    return {"median": med, "best": best, "node_rss_per_job": growth / n}


# -- 2. and 3. in-process children ---------------------------------------------


def slice_size(n: int) -> int:
    """Jobs due in each slice: DUE, or a third of a small store (at least one)."""
    return max(1, min(DUE, n // SLICES))


def due_times(n: int, seed: int) -> list[int]:
    """SLICES x slice_size(n) jobs due in (T+(k-1) s, T+k s] (as many as there are),
    the rest 1 h to 31 days later."""
    rng = random.Random(seed)
    size = slice_size(n)
    times = [T + 1000 * k - rng.randrange(1000) for k in range(1, SLICES + 1) for _ in range(size)]
    times = times[:n]
    times += [T + 3_600_000 + rng.randrange(30 * 86_400_000) for _ in range(n - len(times))]
    rng.shuffle(times)
    return times


def chunks(seq: list[int], size: int = 10_000) -> Iterator[list[int]]:
    for i in range(0, len(seq), size):
        yield seq[i : i + size]


def child_ours(n: int) -> dict[str, Any]:
    sys.path.insert(0, str(ROOT))
    from jobsched import validate
    from jobsched.engine import Engine
    from jobsched.stores.memory import MemoryStore

    dues = due_times(n, 1)
    gc.collect()
    rss0 = rss_self()
    engine, spent = Engine(MemoryStore()), 0.0
    for part in chunks(dues):
        # Decoding is not timed: it makes the bodies the node would see.
        text = "\n".join(
            f'{{"task":"send-email","payload":{{"to":"user@example.com"}},"run_at":{d}}}'
            for d in part
        )
        bodies = [json.loads(line) for line in text.split("\n")]
        start = time.perf_counter()
        for body in bodies:
            engine.schedule(validate.schedule_spec(body), T)
        spent += time.perf_counter() - start
        del bodies, text
    gc.collect()
    per_job = (rss_self() - rss0) / n
    runs = []
    for k in range(1, SLICES + 1):
        start = time.perf_counter()
        ran, failed = engine.execute_due(T + 1000 * k)
        runs.append(time.perf_counter() - start)
        assert len(ran) == in_slice(dues, k) and not failed, (len(ran), len(failed))
    return {"add_rate": n / spent, "bytes_per_job": per_job, "due_ms": _ms(runs)}


def in_slice(dues: list[int], k: int) -> int:
    return sum(1 for d in dues if T + 1000 * (k - 1) < d <= T + 1000 * k)


def noop(payload: object = None) -> None:
    """The APScheduler job's function (never run: the scheduler is paused)."""


def child_aps(n: int) -> dict[str, Any]:
    from datetime import UTC, datetime

    from apscheduler.jobstores.memory import MemoryJobStore  # type: ignore[import-untyped]
    from apscheduler.schedulers.background import BackgroundScheduler  # type: ignore[import-untyped]

    dues = due_times(n, 1)
    store = MemoryJobStore()
    scheduler = BackgroundScheduler(jobstores={"default": store}, timezone="UTC")
    scheduler.start(paused=True)
    gc.collect()
    rss0 = rss_self()
    spent = 0.0
    for part in chunks(dues):
        whens = [datetime.fromtimestamp(d / 1000, UTC) for d in part]
        start = time.perf_counter()
        for when in whens:
            scheduler.add_job(noop, "date", run_date=when, args=[{"to": "user@example.com"}])
        spent += time.perf_counter() - start
    gc.collect()
    per_job = (rss_self() - rss0) / n
    runs = []
    for k in range(1, SLICES + 1):
        now = datetime.fromtimestamp((T + 1000 * k) / 1000, UTC)
        start = time.perf_counter()
        due = store.get_due_jobs(now)
        for job in due:
            store.remove_job(job.id)
        runs.append(time.perf_counter() - start)
        assert len(due) == in_slice(dues, k), len(due)
    scheduler.shutdown(wait=False)
    return {"add_rate": n / spent, "bytes_per_job": per_job, "due_ms": _ms(runs)}


def _ms(runs: list[float]) -> float:
    return statistics.median(runs) * 1000


# -- report -------------------------------------------------------------------


@dataclass(frozen=True)
class Sizes:
    pipe: int
    reps: int
    pending: tuple[int, ...]  # smallest first; the target compares the last with the first
    aps_max: int  # APScheduler runs only the sizes up to this


FULL = Sizes(pipe=200_000, reps=3, pending=(10_000, 100_000, 1_000_000), aps_max=1_000_000)
QUICK = Sizes(pipe=20_000, reps=2, pending=(10_000, 50_000), aps_max=50_000)
SMOKE = Sizes(pipe=300, reps=1, pending=(3_000,), aps_max=3_000)


def table(head: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    print("| " + " | ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in rows:
        cells = [r[0].ljust(widths[0])] + [
            c.rjust(w) for c, w in zip(r[1:], widths[1:], strict=True)
        ]
        print("| " + " | ".join(cells) + " |")
    print()


def report_pipe(s: Sizes, pipe: dict[str, Any]) -> None:
    med, best = pipe["median"], pipe["best"]
    print(f"### 1. schedule_job through main.py, {s.pipe:,} pipelined requests\n")
    rows = [
        ["main.py (in memory)", f"{med['node']:,.0f}", f"{best['node']:,.0f}"],
        ["bare json echo loop", f"{med['echo']:,.0f}", f"{best['echo']:,.0f}"],
        ["ratio main.py / echo", f"{med['node'] / med['echo']:.2f}", f"{best['node'] / best['echo']:.2f}"],
    ]  # fmt: skip
    table(["", "median req/s", "best req/s"], rows)
    print(f"(of {s.reps} runs each; main.py RSS growth: {pipe['node_rss_per_job']:.0f} B/job)\n")


Results = dict[int, dict[str, Any]]


def report_execute(s: Sizes, ours: Results) -> None:
    small, big = s.pending[0], s.pending[-1]
    due = slice_size(small)
    print(f"### 2. execute_jobs: {due:,} due, in-process, median of {SLICES}\n")
    rows = [
        [f"{n:,} pending", f"{ours[n]['due_ms']:.2f}", f"{ours[n]['bytes_per_job']:.0f}"]
        for n in s.pending
    ]
    if big != small:
        rows.append([f"ratio {big:,} / {small:,}", ratio(ours[big]["due_ms"], ours[small]["due_ms"]), ""])  # fmt: skip
    table(["", "ms", "RSS B/job"], rows)


def ratio(a: float, b: float, digits: int = 2) -> str:
    """a / b as "1.23x"; "n/a" when b is zero (a size too small to time)."""
    return f"{a / b:.{digits}f}x" if b else "n/a"


def report_peer(s: Sizes, ours: Results, aps: Results, pipe_rate: float) -> None:
    print("### 3. APScheduler 3 (MemoryJobStore, paused) beside us\n")
    first = min(aps)
    # (label, ours, theirs, format, ours better by)
    rows = [(f"add jobs/s, ours through main.py vs theirs at {first:,}", pipe_rate, aps[first]["add_rate"], ",.0f", ratio(pipe_rate, aps[first]["add_rate"], 1))]  # fmt: skip
    for n in sorted(aps):
        mine, theirs = ours[n], aps[n]
        rows += [
            (f"add jobs/s, in-process, {n:,} jobs", mine["add_rate"], theirs["add_rate"], ",.0f", ratio(mine["add_rate"], theirs["add_rate"], 1)),
            (f"{slice_size(n):,} due among {n:,}: ms", mine["due_ms"], theirs["due_ms"], ".2f", ratio(theirs["due_ms"], mine["due_ms"])),
            (f"RSS per job at {n:,}: bytes", mine["bytes_per_job"], theirs["bytes_per_job"], ".0f", ratio(theirs["bytes_per_job"], mine["bytes_per_job"])),
        ]  # fmt: skip
    cells = [[label, format(a, f), format(b, f), better] for label, a, b, f, better in rows]
    table(["", "jobsched", "APScheduler", "ours better by"], cells)


def sizes_list(text: str) -> tuple[int, ...]:
    sizes = tuple(sorted(int(x) for x in text.split(",")))
    if not sizes or sizes[0] < 1:
        raise argparse.ArgumentTypeError("sizes must be at least 1")
    return sizes


def arguments() -> tuple[argparse.Namespace, Sizes]:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: ~10 s")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: proves it runs")
    parser.add_argument("--pipe", type=int, default=0, help="requests through main.py")
    parser.add_argument("--pending", type=sizes_list, help="pending-job sizes, e.g. 10000,100000")
    # 100000 saves ~2 min: APScheduler's MemoryJobStore inserts into a sorted list, O(n).
    parser.add_argument("--aps-max", type=int, default=0, help="largest APScheduler size")
    parser.add_argument("--child", nargs=2, metavar=("KIND", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    s = SMOKE if args.smoke else QUICK if args.quick else FULL
    if args.pipe > 0:
        s = replace(s, pipe=args.pipe)
    if args.pending:
        s = replace(s, pending=args.pending, aps_max=max(s.aps_max, args.pending[-1]))
    if args.aps_max:
        s = replace(s, aps_max=args.aps_max)
    return args, s


def main() -> None:
    args, s = arguments()
    if args.child:
        kind, n = args.child[0], int(args.child[1])
        print(json.dumps(child_ours(n) if kind == "ours" else child_aps(n)))
        return
    aps = peer("apscheduler", "apscheduler", "3.") is not None
    began = time.perf_counter()
    py = ".".join(map(str, sys.version_info[:3]))
    peer_version = f"APScheduler {installed('apscheduler')}" if aps else "no APScheduler"
    print(f"Python {py}; {peer_version}; {os.cpu_count()} cores\n")
    pipe = pipe_bench(s.pipe, s.reps)
    report_pipe(s, pipe)
    ours = {n: in_child(__file__, "ours", n) for n in s.pending}
    report_execute(s, ours)
    if aps:
        theirs = {n: in_child(__file__, "aps", n) for n in s.pending if n <= s.aps_max}
        if theirs:
            report_peer(s, ours, theirs, pipe["median"]["node"])
    print(f"(whole run: {time.perf_counter() - began:.0f} s)")


if __name__ == "__main__":
    main()
