"""Drive the protocol in-process (fast) or through a real ``main.py`` subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from jobsched.engine import Engine
from jobsched.messages import Context
from jobsched.stores.base import Store
from jobsched.stores.memory import MemoryStore
from jobsched.timefmt import parse_timestamp
from jobsched.wire import handle

ROOT = Path(__file__).resolve().parent.parent
T0 = parse_timestamp("2024-01-15T09:00:00Z", "t")


class Clock:
    def __init__(self, ms: int = T0) -> None:
        self.ms = ms

    def __call__(self) -> int:
        return self.ms


class Wire:
    """Sends bodies through wire.handle and the real encoder, returns reply bodies."""

    def __init__(self, store: Store | None = None, clock: Clock | None = None) -> None:
        self.store = store or MemoryStore()
        self.clock = clock or Clock()
        self.ctx = Context(Engine(self.store), clock=self.clock)
        self._msg_id = 0

    def raw(self, line: str) -> str:
        reply = handle(self.ctx, line)
        assert reply is not None
        return reply.encode()

    def send(self, body: dict[str, Any]) -> dict[str, Any]:
        self._msg_id += 1
        body = {"msg_id": self._msg_id, **body}
        line = json.dumps({"src": "c", "dest": "s", "body": body})
        reply = json.loads(self.raw(line))["body"]
        assert reply.get("in_reply_to") == self._msg_id
        return dict(reply)

    def ok(self, body: dict[str, Any], expect_type: str) -> dict[str, Any]:
        reply = self.send(body)
        assert reply["type"] == expect_type, reply
        return reply

    def err(self, body: dict[str, Any], code: int) -> str:
        reply = self.send(body)
        assert reply["type"] == "error" and reply["code"] == code, reply
        return str(reply["text"])

    def job(self, job_id: str) -> dict[str, Any]:
        return dict(self.ok({"type": "get_job", "job_id": job_id}, "job_info")["job"])


class NodeProcess:
    """A real ``python3 main.py`` child: one request line in, its reply line out."""

    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as the node
        self.proc = subprocess.Popen(
            [sys.executable, str(ROOT / "main.py"), *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            # A file, not a pipe: a node that logs much would fill an unread
            # pipe and block (seen with PostgreSQL fault tests).
            stderr=self._log,
            cwd=ROOT,
            env={**os.environ, **(env or {})},
        )

    def line(self, text: str) -> str:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(text.encode() + b"\n")
        self.proc.stdin.flush()
        out = self.proc.stdout.readline().decode()
        assert out.endswith("\n"), f"no reply to {text!r}; stderr: {self.stderr()}"
        return out[:-1]

    def send(self, body: dict[str, Any]) -> dict[str, Any]:
        reply = json.loads(self.line(json.dumps({"src": "c", "dest": "s", "body": body})))
        return dict(reply["body"])

    def stderr(self) -> str:
        self._log.seek(0)
        return self._log.read().decode(errors="replace")[-4000:]

    def close(self) -> int:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        return self.proc.wait(timeout=30)


def run_lines(lines: list[str], *args: str, timeout: float = 60) -> tuple[list[str], str, int]:
    """Feed lines to a fresh main.py, return (stdout lines, stderr, exit code)."""
    proc = subprocess.run(
        [sys.executable, str(ROOT / "main.py"), *args],
        input="".join(line + "\n" for line in lines).encode(),
        capture_output=True,
        cwd=ROOT,
        timeout=timeout,
    )
    return proc.stdout.decode().splitlines(), proc.stderr.decode(), proc.returncode


def assert_mypy_strict(path: Path) -> None:
    """``mypy --strict`` passes on ``path`` (a documented example), run from the repository."""
    checked = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", str(path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
