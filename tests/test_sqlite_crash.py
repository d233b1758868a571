"""Crash: a ``main.py --db`` node fed thousands of pipelined requests is killed
with SIGKILL at a random moment, again and again on the same file.

After each kill a restarted node must show exactly the state of some prefix of
the request stream that is at least as long as the replies read: every change
that was acknowledged is there, and nothing that was never requested is. The
oracle is the in-memory engine replaying the same requests (every request
carries its ``current_time`` and caller ``job_id``, so the replay is exact); its
replies must also equal the node's, one for one.

JOBSCHED_CRASH_ITERATIONS (default 24) and JOBSCHED_CRASH_SEED tune a run.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jobsched.engine import Engine
from jobsched.messages import Context, job_json
from jobsched.stores.memory import MemoryStore
from jobsched.wire import handle
from tests.harness import ROOT, run_lines

T0 = 1_705_309_200_000  # 2024-01-15T09:00:00Z
HOUR = 3_600_000
PER_ROUND = 2500


@dataclass
class Stream:
    """The requests sent so far, and the ids they may name."""

    rng: random.Random
    ids: list[str] = field(default_factory=list)
    specs: list[dict[str, Any]] = field(default_factory=list)
    msg_id: int = 0

    def request(self, round_no: int, n: int) -> tuple[str, str]:
        """One request line and the job id it names."""
        rng, now = self.rng, T0 + round_no * HOUR + n
        self.msg_id += 1
        roll = rng.random()
        if roll < 0.55 or not self.ids:
            body = self._schedule(round_no, n)
        elif roll < 0.85:
            body = {"type": "execute_job", "job_id": self._pick()}
            if rng.random() < 0.4:
                body["force_fail"] = True
        else:
            body = {"type": "cancel_job", "job_id": self._pick()}
        body = {**body, "msg_id": self.msg_id, "current_time": now}
        line = json.dumps({"src": "c", "dest": "s", "body": body}, separators=(",", ":"))
        return line, str(body["job_id"])

    def _schedule(self, round_no: int, n: int) -> dict[str, Any]:
        rng = self.rng
        if self.specs and rng.random() < 0.05:
            return dict(rng.choice(self.specs))  # an idempotent re-send
        job_id = f"r{round_no}-{n}"
        body: dict[str, Any] = {"type": "schedule_job", "task": "t", "job_id": job_id}
        body["payload"] = {"n": n, "pad": "x" * rng.randrange(0, 200)}
        kind = rng.random()
        if kind < 0.1:
            body["cron"] = "*/5 * * * *"
        elif kind < 0.2:
            body["interval_ms"] = rng.randrange(1000, 600_000)
        else:
            body["delay_ms"] = rng.randrange(0, 5000)
        body["max_attempts"] = rng.randrange(1, 4)
        body["base_ms"] = 100
        self.ids.append(job_id)
        self.specs.append(body)
        return body

    def _pick(self) -> str:
        recent = self.ids[-300:]
        return self.rng.choice(recent if self.rng.random() < 0.8 else self.ids)


class Oracle:
    """The in-memory engine: applies requests one by one, as the node did."""

    def __init__(self) -> None:
        self.store = MemoryStore()
        self.ctx = Context(Engine(self.store))

    def apply(self, line: str) -> dict[str, Any]:
        reply = handle(self.ctx, line)
        assert reply is not None
        return dict(json.loads(reply.encode())["body"])

    def view(self, job_id: str) -> dict[str, Any] | None:
        job = self.store.get(job_id)
        return None if job is None else job_json(job, self.store.recent_runs(job_id))


def run_and_kill(db: Path, lines: list[str], kill_after: int) -> list[dict[str, Any]]:
    """Pipe every line into a node, SIGKILL it once ``kill_after`` replies are
    read, and return every complete reply it wrote before dying."""
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "main.py"), "--db", str(db)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        cwd=ROOT,
    )
    assert proc.stdin is not None and proc.stdout is not None
    data = "".join(line + "\n" for line in lines).encode()

    def feed() -> None:
        try:
            assert proc.stdin is not None
            proc.stdin.write(data)
            proc.stdin.close()
        except OSError:  # the node is dead: the rest was never read
            pass

    writer = threading.Thread(target=feed)
    writer.start()
    raw: list[bytes] = []
    while len(raw) < kill_after:
        line = proc.stdout.readline()
        assert line.endswith(b"\n"), "the node stopped before it was killed"
        raw.append(line)
    proc.send_signal(signal.SIGKILL)
    rest = proc.stdout.read()  # replies already in the pipe were committed too
    proc.wait(timeout=30)
    writer.join(timeout=30)
    raw.extend(line + b"\n" for line in rest.split(b"\n")[:-1])  # a torn last line is dropped
    return [dict(json.loads(r)["body"]) for r in raw]


def stored_views(db: Path, job_ids: list[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Restart a node on the file; read every named job and the stats through it."""
    requests = [json.dumps({"type": "get_job", "job_id": j}) for j in job_ids]
    requests.append(json.dumps({"type": "stats"}))
    out, err, code = run_lines(requests, "--db", str(db))
    assert code == 0, err
    replies = [json.loads(line) for line in out]
    views = {j: r.get("job") for j, r in zip(job_ids, replies, strict=False)}
    for j, r in zip(job_ids, replies, strict=False):
        assert r["type"] == "job_info" or r.get("code") == 20, (j, r)
    return views, replies[-1]


def test_no_acknowledged_change_is_lost_and_nothing_unrequested_appears(tmp_path: Path) -> None:
    seed = int(os.environ.get("JOBSCHED_CRASH_SEED", time.time_ns() % 10**9))
    rounds = int(os.environ.get("JOBSCHED_CRASH_ITERATIONS", "24"))
    rng = random.Random(seed)
    db = tmp_path / "crash.db"
    stream, oracle = Stream(rng), Oracle()
    for round_no in range(rounds):
        sent = [stream.request(round_no, n) for n in range(PER_ROUND)]
        lines = [line for line, _ in sent]
        replies = run_and_kill(db, lines, rng.randrange(0, PER_ROUND))
        where = f"seed {seed}, round {round_no}"
        for i, reply in enumerate(replies):
            assert reply == oracle.apply(lines[i]), f"{where}: reply {i} differs"
        named = sorted({job_id for _, job_id in sent})
        stored, stats = stored_views(db, named)
        applied = _find_prefix(oracle, sent, len(replies), stored)
        assert applied is not None, f"{where}: the file matches no prefix of the requests"
        total = sum(1 for _ in oracle.store.iter_all())
        assert stats["total"] == total, f"{where}: jobs nobody scheduled are stored"


def _find_prefix(
    oracle: Oracle, sent: list[tuple[str, str]], acked: int, stored: dict[str, Any]
) -> int | None:
    """Replay requests past the acknowledged ones until the oracle's view of every
    named job equals the stored one; return that prefix length (the oracle is
    left there), or None if no prefix matches."""
    wrong = {j for j in stored if oracle.view(j) != stored[j]}
    for i in range(acked, len(sent)):
        if not wrong:
            return i
        line, job_id = sent[i]
        oracle.apply(line)
        if oracle.view(job_id) == stored[job_id]:
            wrong.discard(job_id)
        else:
            wrong.add(job_id)
    return len(sent) if not wrong else None
