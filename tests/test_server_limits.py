"""The service under load and abuse, against a real ``python -m jobsched serve``:
keep-alive without the Nagle/delayed-ACK stall, the connection bound, request and
idle timeouts, trickling clients under a small file-descriptor limit, clients
that hang up (a quiet log line, never a traceback); and what it must not hold:
a store transaction while a user's handler runs, or a claim after it has said
that claims stopped."""

from __future__ import annotations

import contextlib
import http.client
import json
import resource
import select
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from jobsched.stores.sqlite import SQLiteStore
from jobsched.timefmt import format_ms, now_ms
from tests.test_server_http import BOUND_S, ROOT, TOKEN, Service

AUTH = {"Authorization": f"Bearer {TOKEN}"}
SLOW_TASKS = """
import time
from jobsched import task

@task("nap")
def nap(payload):
    time.sleep(payload.get("seconds", 1.0))
"""


@pytest.fixture(scope="module")
def mem(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    s = Service(tmp_path_factory.mktemp("mem"), db="")
    yield s
    assert s.stop() == 0


def raw(svc: Service) -> socket.socket:
    sock = socket.create_connection(svc.address, timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def read_response(sock: socket.socket) -> tuple[bytes, bytes]:
    """(head, body) of one response framed by Content-Length."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"closed after {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk
        body += chunk
    return head, body


def closed_within(sock: socket.socket, seconds: float) -> bytes:
    """Everything the server sent until it closed, failing if it stays open."""
    sock.settimeout(seconds)
    out = b""
    try:
        while chunk := sock.recv(65536):
            out += chunk
    except ConnectionResetError:
        return out
    except TimeoutError:
        pytest.fail(f"still open after {seconds} s (got {out!r})")
    return out


# -- keep-alive ----------------------------------------------------------------------


def test_a_keep_alive_client_is_not_stalled_per_request(mem: Service) -> None:
    conn = http.client.HTTPConnection(*mem.address, timeout=10)
    conn.connect()
    first = conn.sock
    body = json.dumps({"task": "ok", "delay_ms": 3_600_000})
    started = time.monotonic()
    for _ in range(100):
        conn.request("GET", "/healthz")
        assert conn.getresponse().read() == b'{"status": "ok"}'
        conn.request("POST", "/v1/jobs", body, AUTH)
        response = conn.getresponse()
        assert response.status == 201 and b"job_scheduled" in response.read()
    elapsed = time.monotonic() - started
    assert conn.sock is first, "the server closed the keep-alive connection"
    # 200 requests: with a ~40 ms stall each they take 8 s or more.
    assert elapsed < 3.0, f"{200 / elapsed:.0f} requests/s"


def test_a_response_leaves_in_one_write(mem: Service) -> None:
    with raw(mem) as sock:
        for _ in range(3):
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            select.select([sock], [], [], 10)
            data = sock.recv(65536)  # whatever the first segment holds
            assert data.startswith(b"HTTP/1.1 200 ") and data.endswith(b'{"status": "ok"}'), data


def test_http_1_0_keep_alive_is_announced(mem: Service) -> None:
    """``ab -k`` speaks HTTP/1.0 with ``Connection: Keep-Alive`` and waits for
    the server to close unless the answer says keep-alive."""
    with raw(mem) as sock:
        for _ in range(2):
            sock.sendall(b"GET /healthz HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n")
            head, body = read_response(sock)
            assert b"\r\nconnection: keep-alive" in head.lower() and body == b'{"status": "ok"}'
        sock.sendall(b"GET /healthz HTTP/1.0\r\n\r\n")  # no keep-alive: answered, then closed
        assert closed_within(sock, 5).endswith(b'{"status": "ok"}')


# -- timeouts and the connection bound --------------------------------------------------


def test_a_trickled_request_and_an_idle_connection_time_out(tmp_path: Path) -> None:
    svc = Service(tmp_path, "--request-timeout", "1", "--idle-timeout", "1", db="")
    try:
        with raw(svc) as trickle, raw(svc) as idle:
            idle.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            assert read_response(idle)[1] == b'{"status": "ok"}'
            started = time.monotonic()
            trickle.sendall(b"GET /healthz HTTP/1.1\r\n")
            for _ in range(2):  # a byte now and then does not extend the deadline
                time.sleep(0.4)
                trickle.sendall(b"X")
            assert closed_within(trickle, 3).startswith(b"HTTP/1.1 408 ")
            assert time.monotonic() - started < 3
            assert closed_within(idle, 3) == b""
    finally:
        assert svc.stop() == 0


def test_past_the_bound_a_new_connection_gets_503_at_once(tmp_path: Path) -> None:
    svc = Service(tmp_path, "--max-connections", "2", db="", tasks_text=SLOW_TASKS)
    try:
        for job in ("a", "b"):
            spec = {"task": "nap", "job_id": job, "delay_ms": 3_600_000}
            assert svc.request("POST", "/v1/jobs", spec)[0] == 201
        busy = [raw(svc), raw(svc)]  # both in a request: neither can make room
        for sock, job in zip(busy, "ab", strict=True):
            sock.sendall(
                f"POST /v1/jobs/{job}/run HTTP/1.1\r\nAuthorization: Bearer {TOKEN}\r\n"
                "Content-Length: 0\r\n\r\n".encode()
            )
        time.sleep(0.3)
        started = time.monotonic()
        with raw(svc) as third:
            third.sendall(b"GET /healthz HTTP/1.1\r\n\r\n")
            assert closed_within(third, 2).startswith(b"HTTP/1.1 503 ")
        assert time.monotonic() - started < 1
        for sock in busy:
            assert b"job_executed" in read_response(sock)[1]
            sock.close()
        assert svc.request("GET", "/healthz", token=None) == (200, {"status": "ok"})
    finally:
        assert svc.stop() == 0


def test_at_the_bound_a_stalled_idle_connection_makes_room(tmp_path: Path) -> None:
    svc = Service(tmp_path, "--max-connections", "2", db="")
    ok, healthz = b'{"status": "ok"}', b"GET /healthz HTTP/1.1\r\n\r\n"
    try:
        with raw(svc) as stalled, raw(svc) as recent:
            stalled.sendall(healthz)
            assert read_response(stalled)[1] == ok
            time.sleep(1.2)  # idle for over a second: it may be closed to make room
            recent.sendall(healthz)
            assert read_response(recent)[1] == ok
            with raw(svc) as third:
                third.sendall(healthz)
                assert read_response(third)[1] == ok
            assert closed_within(stalled, 2) == b""
            recent.sendall(healthz)  # the connection that was just used is kept
            assert read_response(recent)[1] == ok
    finally:
        assert svc.stop() == 0


def _fd_limit() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))


def test_trickling_clients_do_not_starve_healthz_under_a_small_fd_limit(tmp_path: Path) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 600:  # this test's own sockets
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 1024), hard))
    svc = Service(tmp_path, preexec_fn=_fd_limit)
    socks: list[socket.socket] = []
    try:
        for _ in range(250):
            sock = socket.create_connection(svc.address, timeout=5)
            sock.sendall(b"GET /healthz HTTP/1.1\r\nX-Slow: ")
            socks.append(sock)
        for _ in range(2):  # a byte a second, as a slowloris client does
            time.sleep(1)
            for sock in socks:
                with contextlib.suppress(OSError):
                    sock.send(b"x")
        started = time.monotonic()
        with socket.create_connection(svc.address, timeout=5) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            sock.settimeout(2.5)
            head, body = read_response(sock)
        assert head.startswith(b"HTTP/1.1 200 ") and body == b'{"status": "ok"}'
        assert time.monotonic() - started < 2
    finally:
        for sock in socks:
            sock.close()
        assert svc.stop() == 0


# -- clients that hang up ---------------------------------------------------------------


def _hang_up(svc: Service, request: bytes, rounds: int) -> None:
    for _ in range(rounds):
        sock = socket.create_connection(svc.address, timeout=5)
        sock.sendall(request)
        # SO_LINGER 0: close with a reset, so the server's write meets a dead socket.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()


def test_clients_that_hang_up_leave_no_traceback(tmp_path: Path) -> None:
    svc = Service(tmp_path, "--log-level", "INFO", tasks_text=SLOW_TASKS)
    try:
        for i in range(40):
            spec = {"task": "nap", "job_id": f"n{i}", "delay_ms": 3_600_000}
            assert svc.request("POST", "/v1/jobs", spec)[0] == 201
        listing = f"GET /v1/jobs?limit=1000 HTTP/1.1\r\nAuthorization: Bearer {TOKEN}\r\n\r\n"
        run = (
            f"POST /v1/jobs/n0/run HTTP/1.1\r\nAuthorization: Bearer {TOKEN}\r\n"
            'Content-Length: 2\r\n\r\n{"'  # an incomplete body, then a reset
        )
        threads = [
            threading.Thread(target=_hang_up, args=(svc, req.encode(), 100))
            for req in (listing, listing, run)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert svc.request("GET", "/healthz", token=None) == (200, {"status": "ok"})
    finally:
        assert svc.stop() == 0
    text = "".join(svc.log)
    assert "Traceback" not in text, text[-3000:]
    assert "BrokenPipe" not in text and "ConnectionReset" not in text, text[-3000:]


# -- what the service must not hold ---------------------------------------------------


HOLD_TASKS = """
import time
from pathlib import Path
from jobsched import task

@task("hold")
def hold(payload):
    if "marker" in payload:
        Path(payload["marker"]).write_text("started")
    time.sleep(payload["seconds"])
"""


def _run_main(db: str, *bodies: dict[str, Any]) -> list[dict[str, Any]]:
    lines = "".join(json.dumps(b) + "\n" for b in bodies)
    proc = subprocess.run(
        [sys.executable, str(ROOT / "main.py"), "--db", db],
        input=lines,
        capture_output=True,
        text=True,
        timeout=30,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr
    return [json.loads(line) for line in proc.stdout.splitlines()]


def test_running_a_handler_holds_no_transaction(tmp_path: Path) -> None:
    """POST /v1/jobs/{id}/run runs user code: another process writing the same
    SQLite file must not wait for the handler."""
    svc = Service(tmp_path, tasks_text=HOLD_TASKS)
    marker = tmp_path / "started"
    try:
        payload = {"seconds": 4, "marker": str(marker)}
        body = {"task": "hold", "job_id": "long", "delay_ms": 3_600_000, "payload": payload}
        assert svc.request("POST", "/v1/jobs", body)[0] == 201
        result: list[tuple[int, Any]] = []
        run = threading.Thread(
            target=lambda: result.append(svc.request("POST", "/v1/jobs/long/run"))
        )
        run.start()
        deadline = time.monotonic() + BOUND_S
        while not marker.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        started = time.monotonic()
        reply = _run_main(svc.db, {"type": "schedule_job", "msg_id": 1, "task": "x"})
        elapsed = time.monotonic() - started
        assert reply[0]["type"] == "job_scheduled", reply
        assert run.is_alive() and elapsed < 2.0, f"the writer waited {elapsed:.1f} s"
        run.join()
        assert result == [(200, {"type": "job_executed", "job_id": "long"})]
    finally:
        assert svc.stop() == 0


def _log_ms(line: str) -> int:
    """The epoch ms of a log line (LOG_FORMAT: local asctime, then ",mmm")."""
    stamp = datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f")
    return int(stamp.timestamp() * 1000)


def test_sigterm_stops_claims_before_it_says_so(tmp_path: Path) -> None:
    """Jobs come due every 10 ms through the shutdown; every claim (the run
    record of a job put back at shutdown starts at its claim) is no later than
    the line that says claims have stopped."""
    db = str(tmp_path / "jobs.db")
    t0 = now_ms() + 2000
    jobs = [
        {
            "type": "schedule_job",
            "job_id": f"h{k}",
            "task": "hold",
            "payload": {"seconds": 30},
            "run_at": format_ms(t0 + 10 * k),
        }
        for k in range(200)
    ]
    assert len(_run_main(db, *jobs)) == 200
    svc = Service(
        tmp_path,
        "--workers",
        "150",
        "--grace",
        "0",
        "--log-level",
        "INFO",
        db=db,
        tasks_text=HOLD_TASKS,
    )
    time.sleep(max(t0 + 400 - now_ms(), 0) / 1000)
    assert svc.stop() == 0
    line = next(x for x in svc.log if "shutting down: no new requests or claims" in x)
    said = _log_ms(line)
    store = SQLiteStore(db)
    try:
        starts = [r.started_at for j in jobs for r in store.recent_runs(str(j["job_id"]))]
        unclaimed = [j for j in jobs if not store.recent_runs(str(j["job_id"]))]
    finally:
        store.close()
    assert len(starts) >= 20 and unclaimed, (len(starts), len(unclaimed))
    late = [format_ms(s) for s in starts if s > said]
    assert not late, f"claimed after {line.strip()}: {late}"
