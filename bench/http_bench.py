"""The HTTP service: POST /v1/jobs over keep-alive connections, jobsched serve
beside a bare http.server echo server, in one run.

    .venv/bin/python bench/http_bench.py            # 5 rounds of 3 s per server: ~1 min
    .venv/bin/python bench/http_bench.py --quick    # 3 rounds of 1 s: ~15 s
    .venv/bin/python bench/http_bench.py --smoke    # 1 round of 0.2 s: proves it runs
    .venv/bin/python bench/http_bench.py --clients 8 --seconds 5 --rounds 3   # any sizes

Three servers, each its own process, started once and measured in turn, the
order rotated each round (median and range of the rounds):

- ``http.server`` echo: ``ThreadingHTTPServer`` with ``disable_nagle_algorithm``
  (TCP_NODELAY), HTTP/1.1, answering each POST with its own body (and
  ``Connection: keep-alive``, which ``ab -k`` needs to reuse the connection);
- ``jobsched serve --db :memory:``;
- ``jobsched serve --db FILE`` (SQLite, ``--synchronous FULL``, the default).

The client: ``--clients`` (4) keep-alive connections driven by one selector
loop in this process, each with one request in flight (send, read the whole
answer, send the next). Each POST schedules a new job (no job id, due in an
hour, so the dispatcher of the service runs none of them). Its own CPU time
per request is printed beside the figures with the rate it alone could drive:
it must be far above the servers' rates for them to be the servers' figures.
At the end every job acknowledged must be in each service's count.

``ab -k`` (Debian's apache2-utils) runs as a second client against each
server when it is installed (else one line says so); it must complete.

Files live in a TemporaryDirectory ($BENCH_TMP or the system's), removed at the
end; every server process is stopped. The machine is shared: figures are noisy.
"""

from __future__ import annotations

import argparse
import http.server
import os
import re
import selectors
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field, replace
from pathlib import Path

from node_bench import table
from peers import positive

ROOT = Path(__file__).resolve().parent.parent
BODY = b'{"task": "send-email", "payload": {"to": "user@example.com"}, "delay_ms": 3600000}'
START_S = 30.0  # a server that has not said where it listens by then is broken
STALL_S = 10.0  # a client connection with no answer for this long: the server is stuck


@dataclass(frozen=True)
class Sizes:
    clients: int
    seconds: float  # timed, per figure
    warmup: float
    rounds: int


FULL = Sizes(clients=4, seconds=3.0, warmup=0.5, rounds=5)
QUICK = Sizes(clients=4, seconds=1.0, warmup=0.3, rounds=3)
SMOKE = Sizes(clients=4, seconds=0.2, warmup=0.05, rounds=1)


# -- the servers ---------------------------------------------------------------


class Echo(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # TCP_NODELAY, as the service sets it

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(201)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "keep-alive")
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        self.do_POST()

    def log_message(self, format: str, *args: object) -> None:
        pass


def echo_child() -> None:
    """The echo server, run as this script's child: says its port, serves until killed."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Echo)
    server.daemon_threads = True
    print(f"listening on http://127.0.0.1:{server.server_address[1]}", flush=True)
    server.serve_forever()


@dataclass
class Server:
    name: str
    proc: subprocess.Popen[str]
    url: str = ""
    stored: int | None = None  # jobs the service says it holds at the end
    log: list[str] = field(default_factory=list)

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])


def start(name: str, args: list[str], tmp: str) -> Server:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    proc = subprocess.Popen(
        [sys.executable, *args],
        cwd=tmp,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    server = Server(name, proc)
    timer = threading.Timer(START_S, proc.kill)  # a child that never says where it listens
    timer.start()
    assert proc.stdout is not None
    for line in proc.stdout:
        server.log.append(line)
        if m := re.search(r"listening on (http://\S+)", line):
            server.url = m.group(1)
            break
    timer.cancel()
    if not server.url:
        stop(server)
        sys.exit(f"{name} did not start:\n{''.join(server.log)}")
    # Drain its output so that it never blocks on a full pipe.
    threading.Thread(target=lambda: server.log.extend(proc.stdout or ()), daemon=True).start()
    return server


def servers(tmp: str) -> list[Server]:
    serve = ["-m", "jobsched", "serve", "--listen", "127.0.0.1:0", "--noop-tasks"]
    serve += ["--log-level", "WARNING"]
    started: list[Server] = []
    try:
        started.append(start("http.server echo", [__file__, "--echo-child"], tmp))
        started.append(start("jobsched, memory", [*serve, "--db", ":memory:"], tmp))
        db = os.path.join(tmp, "jobs.db")
        started.append(start("jobsched, SQLite FULL", [*serve, "--db", db], tmp))
    except BaseException:
        for server in started:
            stop(server)
        raise
    return started


def stop(server: Server) -> None:
    if server.proc.poll() is None:
        server.proc.terminate()
        try:
            server.proc.wait(10)
        except subprocess.TimeoutExpired:
            server.proc.kill()
            server.proc.wait()


def count_jobs(server: Server) -> int:
    with urllib.request.urlopen(server.url + "/metrics", timeout=STALL_S) as resp:
        text = resp.read().decode()
    return sum(int(float(n)) for n in re.findall(r"^jobsched_jobs\{[^}]*\} (\S+)$", text, re.M))


# -- the client ------------------------------------------------------------------


def request(port: int) -> bytes:
    head = f"POST /v1/jobs HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
    head += f"Content-Type: application/json\r\nContent-Length: {len(BODY)}\r\n\r\n"
    return head.encode() + BODY


class Conn:
    __slots__ = ("buf", "sock", "want")

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=STALL_S)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.setblocking(False)
        self.buf = b""
        self.want = -1  # bytes of the answer in progress, once its head is in

    def answered(self) -> int:
        """The status of the answer complete in the buffer (taken out of it), or 0."""
        buf = self.buf
        if self.want < 0:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return 0
            at = buf.find(b"\r\nContent-Length: ", 0, end)  # both servers spell it so
            if at < 0:
                raise RuntimeError(f"an answer without Content-Length: {buf[:end]!r}")
            self.want = end + 4 + int(buf[at + 18 : buf.index(b"\r", at + 18)])
        if len(buf) < self.want:
            return 0
        status = int(buf[9:12])
        self.buf, self.want = buf[self.want :], -1
        return status


@dataclass
class Run:
    rate: float  # answers per second in the timed part
    answers: int  # every answer, warm-up included (those in flight at the end are not)
    failed: int  # answers other than 2xx
    cpu_us: float  # this client's CPU time per answer


def drive(port: int, clients: int, warmup: float, seconds: float) -> Run:
    """Each connection keeps one request in flight; after ``warmup`` seconds,
    count the answers for ``seconds``."""
    data = request(port)
    sel = selectors.DefaultSelector()
    conns = [Conn(port) for _ in range(clients)]
    for conn in conns:
        sel.register(conn.sock, selectors.EVENT_READ, conn)
        conn.sock.sendall(data)
    answers = failed = timed = 0
    began = time.perf_counter()
    timing_from, until = began + warmup, began + warmup + seconds
    cpu0, timing, last = 0.0, False, began
    try:
        while (now := time.perf_counter()) < until:
            if not timing and now >= timing_from:
                cpu0, timing_from, timed, timing = time.process_time(), now, 0, True
            events = sel.select(0.5)
            if not events and now - last > STALL_S:
                raise RuntimeError(f"no answer on port {port} for {STALL_S:g} s")
            for key, _ in events:
                conn = key.data
                chunk = conn.sock.recv(1 << 16)
                if not chunk:
                    raise RuntimeError(f"port {port} closed a keep-alive connection")
                conn.buf += chunk
                while status := conn.answered():
                    answers, timed, last = answers + 1, timed + 1, now
                    failed += not 200 <= status < 300
                    conn.sock.send(data)  # small: fits the socket buffer
        cpu = time.process_time() - cpu0
        elapsed = time.perf_counter() - timing_from
    finally:
        for conn in conns:
            sel.unregister(conn.sock)
            conn.sock.close()
        sel.close()
    rate = timed / elapsed if elapsed > 0 else 0.0
    return Run(rate, answers, failed, cpu * 1e6 / max(timed, 1))


# -- ab -k ------------------------------------------------------------------------


def ab(server: Server, clients: int, requests: int, tmp: str) -> str:
    """``ab -k``'s figure for one server, or why there is none."""
    body = os.path.join(tmp, "body.json")
    Path(body).write_bytes(BODY)
    cmd = ["ab", "-k", "-q", "-c", str(clients), "-n", str(requests), "-s", str(int(STALL_S))]
    cmd += ["-p", body, "-T", "application/json", server.url + "/v1/jobs"]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=60).stdout
    except subprocess.TimeoutExpired:
        return "did not complete within 60 s"
    done = re.search(r"Complete requests:\s+(\d+)", out)
    rate = re.search(r"Requests per second:\s+([\d.]+)", out)
    if done is None or rate is None or int(done.group(1)) != requests:
        return "did not complete: " + (out.strip().splitlines() or ["no output"])[-1]
    bad = re.search(r"Non-2xx responses:\s+(\d+)", out)
    kept = re.search(r"Keep-Alive requests:\s+(\d+)", out)
    failed = re.search(r"Failed requests:\s+(\d+)", out)
    notes = f"{kept.group(1) if kept else 0} kept alive"
    if bad or (failed and failed.group(1) != "0"):
        notes += (
            f", {bad.group(1) if bad else 0} non-2xx, {failed.group(1) if failed else '?'} failed"
        )
    return f"{float(rate.group(1)):,.0f}/s ({notes})"


# -- the run ---------------------------------------------------------------------


def measure(all_servers: list[Server], s: Sizes) -> dict[str, list[Run]]:
    runs: dict[str, list[Run]] = {server.name: [] for server in all_servers}
    acked = dict.fromkeys(runs, 0)
    for r in range(s.rounds):
        turn = all_servers[r % len(all_servers) :] + all_servers[: r % len(all_servers)]
        for server in turn:
            run = drive(server.port, s.clients, s.warmup, s.seconds)
            runs[server.name].append(run)
            acked[server.name] += run.answers
    for server in all_servers[1:]:
        server.stored = count_jobs(server)
        if server.stored < acked[server.name]:
            sys.exit(f"{server.name}: {acked[server.name]} acknowledged, {server.stored} stored")
    return runs


def report(all_servers: list[Server], runs: dict[str, list[Run]], s: Sizes) -> None:
    print(f"### POST /v1/jobs, {s.clients} keep-alive connections, {s.rounds} x {s.seconds:g} s\n")
    echo = statistics.median(run.rate for run in runs[all_servers[0].name])
    rows = []
    for server in all_servers:
        rates = sorted(run.rate for run in runs[server.name])
        med = statistics.median(rates)
        cpu = statistics.median(run.cpu_us for run in runs[server.name])
        failed = sum(run.failed for run in runs[server.name])
        ratio = f"{med / echo:.2f}x" if echo else "n/a"
        rows.append([server.name, f"{med:,.0f}/s", f"{rates[0]:,.0f}-{rates[-1]:,.0f}", ratio,
                     f"{cpu:.0f} us", str(failed)])  # fmt: skip
    head = ["server", "median", "range", "of echo", "client CPU/req", "non-2xx"]
    table(head, rows)
    slowest_cpu = max(statistics.median(run.cpu_us for run in v) for v in runs.values())
    print(f"(the client alone could drive ~{1e6 / max(slowest_cpu, 1e-3):,.0f} req/s: its CPU time")
    print(" per request; each server's figure must be well below that to be the server's)")
    stored = ", ".join(f"{x.name}: {x.stored:,}" for x in all_servers[1:])
    print(f"(jobs stored at the end: {stored}; every acknowledged one is there)\n")


def run_ab(all_servers: list[Server], runs: dict[str, list[Run]], s: Sizes, tmp: str) -> None:
    if shutil.which("ab") is None:
        print("ab skipped: not installed (Debian: apt-get install apache2-utils)\n")
        return
    best = max(statistics.median(run.rate for run in v) for v in runs.values())
    requests = max(int(best * s.seconds), 100)
    print(f"### ab -k -c {s.clients} -n {requests:,} (POST /v1/jobs)\n")
    rows = [[server.name, ab(server, s.clients, requests, tmp)] for server in all_servers]
    table(["server", "ab -k"], rows)


def arguments() -> tuple[argparse.Namespace, Sizes]:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 rounds of 1 s: ~15 s")
    parser.add_argument("--smoke", action="store_true", help="1 round of 0.2 s: proves it runs")
    parser.add_argument("--clients", type=positive, help="keep-alive connections (default 4)")
    parser.add_argument("--seconds", type=float, help="timed seconds per figure")
    parser.add_argument("--rounds", type=positive, help="rounds (each server once per round)")
    parser.add_argument("--no-ab", action="store_true", help="leave ab out")
    parser.add_argument("--echo-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    s = SMOKE if args.smoke else QUICK if args.quick else FULL
    if args.clients:
        s = replace(s, clients=args.clients)
    if args.seconds is not None:
        s = replace(s, seconds=max(args.seconds, 0.05))
    if args.rounds:
        s = replace(s, rounds=args.rounds)
    return args, s


def main() -> None:
    args, s = arguments()
    if args.echo_child:
        echo_child()
        return
    py = ".".join(map(str, sys.version_info[:3]))
    print(f"Python {py}; {os.cpu_count()} cores; client and servers on this machine\n")
    began = time.perf_counter()
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP")) as tmp:
        all_servers = servers(tmp)
        try:
            runs = measure(all_servers, s)
            report(all_servers, runs, s)
            if not args.no_ab:
                run_ab(all_servers, runs, s, tmp)
        finally:
            for server in all_servers:
                stop(server)
    print(f"(whole run: {time.perf_counter() - began:.0f} s)")


if __name__ == "__main__":
    main()
