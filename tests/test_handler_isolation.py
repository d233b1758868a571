"""User handlers cannot break the scheduler that runs them, through the real
``main.py`` and a real ``jobsched serve``: a handler that raises SystemExit or
KeyboardInterrupt is a failed run; one that prints does not write on the
protocol's stdout, one that reads stdin does not steal requests; a handler that
forks does not duplicate replies; an async handler cut at shutdown is cancelled
cleanly; an exception whose text cannot be read or stored still fails the run."""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
BOUND_S = 10.0

TASKS = """
import argparse, asyncio, os, subprocess, sys, time
from pathlib import Path
from jobsched import task


class Custom(BaseException):
    pass


class NoText(Exception):
    def __str__(self):
        raise RuntimeError("no text")


@task("argparse")
def bad_args(payload):
    argparse.ArgumentParser(prog="h").parse_args(["--nope"])


@task("interrupt")
def interrupt(payload):
    raise KeyboardInterrupt


@task("generator-exit")
def generator_exit(payload):
    raise GeneratorExit("closed")


@task("custom")
def custom(payload):
    raise Custom("custom base")


@task("async-exit")
async def async_exit(payload):
    await asyncio.sleep(0)
    raise SystemExit(3)


@task("stray-task")
async def stray_task(payload):
    async def die():
        raise SystemExit(4)

    asyncio.get_running_loop().create_task(die())
    await asyncio.sleep(0.05)


@task("no-text")
def no_text(payload):
    raise NoText()


@task("odd-text")
def odd_text(payload):
    raise ValueError("bad \\udcff byte, a \\x00 nul, " + "x" * 5000)


@task("ok")
def ok(payload):
    pass


@task("async-ok")
async def async_ok(payload):
    await asyncio.sleep(0)


@task("nap")
def nap(payload):
    Path(payload["marker"]).write_text("started")
    time.sleep(payload["seconds"])


@task("printer")
def printer(payload):
    print('{"src": "s", "dest": "c", "body": {"type": "job_scheduled", "in_reply_to": 1, "job_id": "forged"}}')
    sys.stdout.write("written to sys.stdout\\n")
    os.write(1, b"written to fd 1\\n")
    subprocess.run(["echo", "echoed by a child process"], check=True)


@task("reader")
def reader(payload):
    data = os.read(0, 1 << 16)
    if data:
        raise ValueError(f"read the protocol's input: {data!r}")


@task("leak")
def leak(payload):
    import threading
    threading.Thread(target=time.sleep, args=(600,)).start()  # not a daemon: never joined


@task("fork")
def fork(payload):
    pid = os.fork()
    if pid == 0:
        with open(payload["marker"], "a") as f:
            f.write(f"{os.getpid()}\\n")
        return  # the child neither exits nor execs: it returns into the scheduler
    os.waitpid(pid, 0)


@task("async-fork")
async def async_fork(payload):
    fork(payload)


@task("sleep-async")
async def sleep_async(payload):
    Path(payload["marker"]).write_text("started\\n")
    try:
        await asyncio.sleep(60)
    finally:
        with open(payload["marker"], "a") as f:
            f.write("cancelled\\n")
"""

# task -> the run's error text
BASE_EXCEPTIONS = {
    "argparse": "SystemExit: 2",
    "interrupt": "KeyboardInterrupt",
    "generator-exit": "GeneratorExit: closed",
    "custom": "Custom: custom base",
    "async-exit": "SystemExit: 3",
}


@pytest.fixture
def tasks(tmp_path: Path) -> str:
    path = tmp_path / "isolation_tasks.py"
    path.write_text(TASKS)
    return str(path)


def line(msg_id: int, body: dict[str, Any]) -> str:
    return json.dumps({"src": "c", "dest": "s", "body": {"msg_id": msg_id, **body}})


def replies(out: list[str], count: int) -> dict[int, dict[str, Any]]:
    """The reply bodies by in_reply_to; exactly one per request and nothing else."""
    bodies = [json.loads(text)["body"] for text in out]
    by_id = {b.get("in_reply_to"): b for b in bodies}
    assert sorted(b.get("in_reply_to") for b in bodies) == list(range(1, count + 1)), out
    return by_id


def schedule(task: str, **extra: Any) -> dict[str, Any]:
    return {"type": "schedule_job", "task": task, "job_id": task, "max_attempts": 1, **extra}


class Client:
    """A real main.py spoken to one request at a time, every wait bounded."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(ROOT / "main.py"), *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=ROOT,
            start_new_session=True,  # its own group: kill() reaches forked children too
        )
        self.msg_id = 0
        self._buf = b""

    def send(self, body: dict[str, Any]) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.msg_id += 1
        self.proc.stdin.write(line(self.msg_id, body).encode() + b"\n")
        self.proc.stdin.flush()
        reply = json.loads(self.read_line())["body"]
        assert reply.get("in_reply_to") == self.msg_id, reply
        return dict(reply)

    def read_line(self, timeout: float = BOUND_S) -> str:
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        end = time.monotonic() + timeout
        while b"\n" not in self._buf:
            left = end - time.monotonic()
            assert left > 0 and select.select([fd], [], [], left)[0], "no reply in time"
            chunk = os.read(fd, 1 << 16)
            assert chunk, "the node closed its stdout"
            self._buf += chunk
        text, self._buf = self._buf.split(b"\n", 1)
        return text.decode()

    def close(self) -> tuple[bytes, str, int]:
        """Close stdin; what is left on stdout, the whole stderr, the exit status."""
        out, err = self.proc.communicate(timeout=BOUND_S * 2)
        return self._buf + out, err.decode(errors="replace"), self.proc.returncode

    def kill(self) -> None:
        # A stray child may hold the pipes open: never wait for their EOF here.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=BOUND_S)
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()


@pytest.fixture
def clients() -> Iterator[list[Client]]:
    made: list[Client] = []
    yield made
    for client in made:
        client.kill()


def run_lines(lines: list[str], *args: str, timeout: float = 30) -> tuple[list[str], str, int]:
    """Feed lines to a fresh main.py, return (stdout lines, stderr, exit code)."""
    proc = subprocess.run(
        [sys.executable, str(ROOT / "main.py"), *args],
        input="".join(text + "\n" for text in lines).encode(),
        capture_output=True,
        cwd=ROOT,
        timeout=timeout,
    )
    return proc.stdout.decode().splitlines(), proc.stderr.decode(), proc.returncode


# -- 1. BaseException ---------------------------------------------------------------


def test_stdio_base_exceptions_are_failed_runs_and_the_node_goes_on(
    tasks: str, tmp_path: Path
) -> None:
    lines, n = [], 0
    cases = {**BASE_EXCEPTIONS, "argparse-in-thread": "SystemExit: 2", "stray-task": None}
    for job_id in cases:
        task = job_id.removesuffix("-in-thread")
        extra = {"timeout_ms": 5000} if job_id.endswith("-in-thread") else {}
        lines.append(line(n + 1, {**schedule(task, **extra), "job_id": job_id}))
        lines.append(line(n + 2, {"type": "execute_job", "job_id": job_id}))
        lines.append(line(n + 3, {"type": "get_job", "job_id": job_id}))
        n += 3
    out, err, rc = run_lines(lines, "--tasks", tasks, "--db", str(tmp_path / "j.db"), timeout=30)
    assert rc == 0, err
    got = replies(out, n)
    for i, (job_id, text) in enumerate(cases.items()):
        assert got[3 * i + 2] == {
            "type": "job_failed",
            "in_reply_to": 3 * i + 2,
            "job_id": job_id,
            "retry_scheduled": False,
        }
        job = got[3 * i + 3]["job"]
        assert job["state"] == "dead"
        if text is not None:
            assert job["last_error"] == text
    assert "SystemExit: 4" in (got[3 * len(cases)]["job"]["last_error"] or "")


def test_exception_text_that_cannot_be_read_or_stored_still_fails_the_run(
    tasks: str, tmp_path: Path
) -> None:
    lines = []
    for i, task in enumerate(("no-text", "odd-text")):
        lines.append(line(3 * i + 1, schedule(task)))
        lines.append(line(3 * i + 2, {"type": "execute_job", "job_id": task}))
        lines.append(line(3 * i + 3, {"type": "get_job", "job_id": task}))
    out, err, rc = run_lines(lines, "--tasks", tasks, "--db", str(tmp_path / "j.db"))
    assert rc == 0, err
    got = replies(out, 6)
    assert got[2]["type"] == "job_failed" and got[5]["type"] == "job_failed", got
    assert got[3]["job"]["last_error"] == "NoText"
    odd = got[6]["job"]["last_error"]
    assert odd.startswith("ValueError: bad \\udcff byte, a \\x00 nul, xxx") and len(odd) == 2000


class Serve:
    """A real ``python -m jobsched serve`` on a free port, with the task module."""

    def __init__(self, tmp: Path, tasks: str, *extra: str) -> None:
        args = [sys.executable, "-m", "jobsched", "serve", "--db", str(tmp / "s.db")]
        args += ["--listen", "127.0.0.1:0", "--tasks", tasks, "--log-level", "WARNING"]
        self.proc = subprocess.Popen([*args, *extra], cwd=ROOT, stderr=subprocess.PIPE, text=True)
        self.log: list[str] = []
        assert self.proc.stderr is not None
        for text in self.proc.stderr:
            self.log.append(text)
            if text.startswith("jobsched: listening on http://"):
                self.url = text.split("listening on ")[1].strip()
                break
        else:
            raise AssertionError(f"the service did not start: {''.join(self.log)}")
        self._drain = threading.Thread(target=lambda: self.log.extend(self.proc.stderr or []))
        self._drain.start()

    def request(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method)
        with urllib.request.urlopen(req, timeout=BOUND_S) as resp:
            raw = resp.read()
            return raw.decode() if path == "/metrics" else json.loads(raw)

    def wait_state(self, job_id: str, state: str) -> dict[str, Any]:
        end = time.monotonic() + BOUND_S
        while True:
            job: dict[str, Any] = self.request("GET", f"/v1/jobs/{job_id}")["job"]
            if job["state"] == state or time.monotonic() > end:
                assert job["state"] == state, job
                return job
            time.sleep(0.02)

    def stop(self) -> tuple[int, str]:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        rc = self.proc.wait(timeout=30)
        self._drain.join(timeout=BOUND_S)
        return rc, "".join(self.log)


def test_serve_base_exceptions_fail_the_run_and_keep_every_worker(
    tasks: str, tmp_path: Path
) -> None:
    svc = Serve(tmp_path, tasks, "--workers", "2", "--grace", "1")
    try:
        for task in [*BASE_EXCEPTIONS, "stray-task"]:
            svc.request("POST", "/v1/jobs", schedule(task))
        for task, text in BASE_EXCEPTIONS.items():
            assert svc.wait_state(task, "dead")["last_error"] == text
        svc.wait_state("stray-task", "completed")
        for task in ("ok", "async-ok"):  # both kinds of worker are still there
            svc.request("POST", "/v1/jobs", schedule(task))
            svc.wait_state(task, "completed")
        metrics = svc.request("GET", "/metrics")
        assert 'jobsched_runs_total{outcome="failed",queue="default"} 5' in metrics, metrics
    finally:
        rc, log = svc.stop()
    assert rc == 0, log


def test_stdio_sigint_during_a_handler_stops_the_node_after_its_batch(
    tasks: str, tmp_path: Path, clients: list[Client]
) -> None:
    # The stdio node runs execute_job's handler on its main thread, where a real
    # Ctrl-C lands: it must stop the node gracefully, not become the run's failure.
    client = Client("--tasks", tasks)
    clients.append(client)
    marker = tmp_path / "marker"
    client.send(schedule("nap", payload={"marker": str(marker), "seconds": 0.5}))
    assert client.proc.stdin is not None
    client.proc.stdin.write((line(2, {"type": "execute_job", "job_id": "nap"}) + "\n").encode())
    client.proc.stdin.flush()
    end = time.monotonic() + BOUND_S
    while not marker.exists() and time.monotonic() < end:
        time.sleep(0.01)
    client.proc.send_signal(signal.SIGINT)
    assert json.loads(client.read_line())["body"]["type"] == "job_executed"
    out, err, rc = client.close()
    assert rc == 0 and out == b"" and "Traceback" not in err, err


# -- 2. stdout and stdin belong to the protocol ---------------------------------------


def test_a_handler_that_prints_does_not_write_on_the_protocol(tasks: str) -> None:
    lines = [
        line(1, schedule("printer")),
        line(2, {"type": "execute_job", "job_id": "printer"}),
        line(3, {**schedule("printer", timeout_ms=5000), "job_id": "in-thread"}),
        line(4, {"type": "execute_job", "job_id": "in-thread"}),
    ]
    out, err, rc = run_lines(lines, "--tasks", tasks)
    assert rc == 0, err
    got = replies(out, 4)
    assert got[2]["type"] == "job_executed" and got[4]["type"] == "job_executed", got
    for text in ("forged", "written to sys.stdout", "written to fd 1", "echoed by a child process"):
        assert err.count(text) == 2, err


def test_a_handler_that_reads_stdin_does_not_steal_requests(
    tasks: str, clients: list[Client]
) -> None:
    client = Client("--tasks", tasks)
    clients.append(client)
    client.send(schedule("reader"))
    assert client.send({"type": "execute_job", "job_id": "reader"})["type"] == "job_executed"
    assert client.send({"type": "get_job", "job_id": "reader"})["job"]["runs"] == 1
    out, err, rc = client.close()
    assert rc == 0 and out == b"", err


def test_the_protocol_writer_refuses_a_forked_child(tmp_path: Path) -> None:
    script = (
        "import os\n"
        "from jobsched.isolation import protect_stdout\n"
        "out = protect_stdout()\n"
        "pid = os.fork()\n"
        "if pid == 0:\n"
        "    try:\n"
        "        out.write(b'child\\n'); out.flush()\n"
        "    except Exception as exc:\n"
        "        print('refused:', type(exc).__name__)\n"
        "    os._exit(0)\n"
        "os.waitpid(pid, 0)\n"
        "out.write(b'parent\\n'); out.flush()\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, cwd=ROOT, timeout=BOUND_S
    )
    assert proc.stdout == b"parent\n", proc
    assert b"refused:" in proc.stderr, proc.stderr


# -- 3. fork ----------------------------------------------------------------------------


def _gone(marker: Path) -> list[int]:
    pids = [int(p) for p in marker.read_text().split()]
    assert pids
    return [p for p in pids if Path(f"/proc/{p}").exists()]


def test_a_forked_child_never_returns_into_the_node(tasks: str, tmp_path: Path) -> None:
    marker = tmp_path / "children"
    lines, n = [], 0
    for job_id, task, extra in [
        ("main-thread", "fork", {}),
        ("in-thread", "fork", {"timeout_ms": 5000}),
        ("async", "async-fork", {}),
    ]:
        body = {**schedule(task, payload={"marker": str(marker)}, **extra), "job_id": job_id}
        lines.append(line(n + 1, body))
        lines.append(line(n + 2, {"type": "execute_job", "job_id": job_id}))
        lines.append(line(n + 3, {"type": "get_job", "job_id": job_id}))
        n += 3
    out, err, rc = run_lines(lines, "--tasks", tasks, "--db", str(tmp_path / "j.db"), timeout=30)
    assert rc == 0, err
    got = replies(out, n)
    for i in range(3):
        assert got[3 * i + 2]["type"] == "job_executed", got
        job = got[3 * i + 3]["job"]
        assert job["runs"] == 1 and len(job["recent_runs"]) == 1, job
    assert len(marker.read_text().split()) == 3 and not _gone(marker)


def test_a_forked_child_never_returns_into_the_realtime_runner(
    tasks: str, tmp_path: Path, clients: list[Client]
) -> None:
    marker = tmp_path / "children"
    client = Client("--tasks", tasks, "--realtime", "--db", str(tmp_path / "j.db"))
    clients.append(client)
    for task in ("fork", "async-fork"):
        client.send(schedule(task, payload={"marker": str(marker)}))
    for task in ("fork", "async-fork"):
        end = time.monotonic() + BOUND_S
        while (job := client.send({"type": "get_job", "job_id": task})["job"])[
            "state"
        ] != "completed":
            assert time.monotonic() < end, job
            time.sleep(0.02)
        assert job["runs"] == 1 and len(job["recent_runs"]) == 1, job
    assert len(marker.read_text().split()) == 2 and not _gone(marker)
    out, err, rc = client.close()
    assert rc == 0 and out == b"", err


@pytest.mark.parametrize("command", ["main.py", "-m jobsched serve"])
def test_a_thread_a_handler_leaves_running_does_not_keep_the_process_alive(
    tasks: str, tmp_path: Path, command: str
) -> None:
    """A handler that starts a thread that is not a daemon: the node's work
    ends (EOF, or SIGTERM for serve) and the process exits 0 at once, instead
    of waiting forever for the handler's thread."""
    db = str(tmp_path / "j.db")
    if command == "main.py":
        client = Client("--tasks", tasks, "--realtime", "--db", db, "--grace", "1")
        client.send(schedule("leak"))
        end = time.monotonic() + BOUND_S
        while client.send({"type": "get_job", "job_id": "leak"})["job"]["state"] != "completed":
            assert time.monotonic() < end
            time.sleep(0.02)
        started = time.monotonic()
        _, err, rc = client.close()
    else:
        args = ["--tasks", tasks, "--db", db, "--listen", "127.0.0.1:0", "--grace", "1"]
        proc = subprocess.Popen(
            [sys.executable, "-m", "jobsched", "serve", *args],
            cwd=ROOT, stderr=subprocess.PIPE, start_new_session=True,
        )  # fmt: skip
        try:
            assert proc.stderr is not None
            url = ""
            for raw in proc.stderr:
                if raw.startswith(b"jobsched: listening on "):
                    url = raw.decode().split("listening on ")[1].strip()
                    break
            body = json.dumps({"task": "leak", "job_id": "leak"}).encode()
            urllib.request.urlopen(urllib.request.Request(f"{url}/v1/jobs", body), timeout=10)
            time.sleep(0.5)  # its dispatcher runs it
            started = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            rc = proc.wait(timeout=BOUND_S)
            err = ""
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
    assert rc == 0, err
    assert time.monotonic() - started < 8


# -- 4. shutdown of async handlers ------------------------------------------------------


def test_serve_sigterm_cancels_async_handlers_cleanly(tasks: str, tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    svc = Serve(tmp_path, tasks, "--grace", "0.2", "--log-level", "INFO")
    try:
        svc.request("POST", "/v1/jobs", schedule("sleep-async", payload={"marker": str(marker)}))
        end = time.monotonic() + BOUND_S
        while not marker.exists() and time.monotonic() < end:
            time.sleep(0.01)
    finally:
        rc, log = svc.stop()
    assert rc == 0, log
    assert "Task was destroyed" not in log and "Traceback" not in log, log
    # The handler saw its cancellation (its finally ran) before the loop closed.
    assert marker.read_text() == "started\ncancelled\n"
