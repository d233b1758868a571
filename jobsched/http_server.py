"""The socket side of the HTTP service: one loop owns every connection, a
fixed pool of threads serves complete requests.

Not a thread per connection (``ThreadingHTTPServer``, as before): there a
client sending its headers a byte a second held a thread and a descriptor as
long as it liked, a few hundred made the service unreachable, and each new
thread opened a store connection of its own. Here a connection that is idle
or still sending its request costs a socket in a selector; only a complete
request takes one of ``threads`` threads (``jobsched.http_pool``), and the loop
writes the answer they make in one write.

Limits (durations on ``time.monotonic``): a request's line, headers and body
must arrive within ``request_timeout`` of its first byte (408 and close; a
trickle does not extend it); a keep-alive connection idle for ``idle_timeout``
is closed; at ``max_connections`` (never more than the open-file limit leaves
room for) a newcomer closes the longest-waiting connection that has waited at
least ``STALLED_S`` and is not being served (idle ones first, then the slowest
sender), so stalled clients never hold the slot a healthy request needs. With
none such (a burst, or every connection busy) the newcomer gets 503 at once:
healthy clients that just sent a byte are not closed under each other's feet.

A streamed answer (Server-Sent Events) leaves its thread at once and is
written by the loop, under a bound of its own (``jobsched.http_stream``).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import selectors
import socket
import threading
import time
from dataclasses import dataclass, field

from jobsched.http_conn import MAX_HEAD, Limits, Response, error, find_head_end, parse_head, render
from jobsched.http_pool import Answer, Handler, Pool
from jobsched.http_stream import Stream, Streams

__all__ = ["Answer", "Handler", "HttpServer"]
log = logging.getLogger("jobsched.http")

RECV_SIZE = 1 << 16
SWEEP_S = 0.1  # how often deadlines are checked: the timeouts' resolution
STALLED_S = 1.0  # at the connection bound, who has waited this long may be closed
WARN_EVERY_S = 10.0
_OUT_OF_FDS = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)
READ, WRITE = selectors.EVENT_READ, selectors.EVENT_WRITE
IDLE, READING, BUSY, WRITING, STREAMING = range(5)  # a connection's state


@dataclass(eq=False, slots=True)
class _Conn:
    sock: socket.socket
    peer: str
    since: float  # when the current wait began: who waited longest goes first
    deadline: float
    state: int = READING  # a new connection owes its first request at once
    buf: bytearray = field(default_factory=bytearray)
    out: bytes = b""
    keep: bool = True
    cont: bool = False  # 100 Continue sent for the request being read
    ev: int = 0  # the selector events watched
    stream: Stream | None = None


def _send_quietly(sock: socket.socket, data: bytes) -> None:
    with contextlib.suppress(OSError):  # gone or not reading: nothing more is owed to it
        sock.send(data)


class HttpServer:
    """``serve_forever`` runs the loop; ``shutdown`` stops accepting and
    reading; ``server_close`` waits for answers in progress, then closes all."""

    def __init__(self, handler: Handler, host: str, port: int, limits: Limits) -> None:
        self.handler = handler
        self.limits = limits
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._listener = socket.create_server((host, port), family=family, backlog=128)
        self._listener.setblocking(False)
        self.server_address: tuple[str, int] = self._listener.getsockname()[:2]
        self._sel = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._conns: set[_Conn] = set()
        # Not in _conns: streams have their own bound.
        self._streams: Streams[_Conn] = Streams(
            limits.max_streams, limits.request_timeout, self._wake
        )
        self._stop = threading.Event()
        self._abort = False
        self._listening = True
        self._paused_until = 0.0  # accepting paused after running out of descriptors
        self._next_sweep = 0.0
        self._warned = 0.0
        self._running = False
        self._not_listening = threading.Event()
        self._exited = threading.Event()
        self._pool: Pool[_Conn] = Pool(handler, limits, self._stop, self._wake)

    # -- lifecycle ------------------------------------------------------------

    def serve_forever(self) -> None:
        self._running = True
        self._sel.register(self._listener, READ)
        self._sel.register(self._wake_r, READ)
        try:
            while not self._abort and (not self._stop.is_set() or self._in_flight()):
                if self._stop.is_set() and self._listening:
                    self._stop_listening()
                timeout = SWEEP_S if self._conns or self._streams or self._paused_until else None
                for key, mask in self._sel.select(timeout):
                    try:
                        self._event(key, mask)
                    except Exception:  # a bug must not take every connection down with it
                        log.exception("http: failed handling an event; closing its connection")
                        if key.data is not None:
                            self._close(key.data)
                self._finish_done()
                now = time.monotonic()
                if self._streams.due(now):
                    self._pull_streams(now)
                if now >= self._next_sweep:
                    self._next_sweep = now + SWEEP_S
                    self._sweep(now)
        finally:
            if self._listening:
                self._stop_listening()
            self._exited.set()

    def shutdown(self) -> None:
        """No new connections or requests from now on; requests being served
        are still answered (with ``Connection: close``)."""
        self._stop.set()
        self._wake()
        if self._running:
            self._not_listening.wait(5.0)

    def server_close(self, wait_s: float = 0.0) -> None:
        """Give answers in progress up to ``wait_s``, then close everything."""
        self._stop.set()
        self._wake()
        if self._running and not self._exited.wait(max(wait_s, 0.0)):
            busy = sum(1 for c in self._conns if c.state in (BUSY, WRITING))
            log.warning("shutdown: %d request(s) still being served are cut off", busy)
            self._abort = True
            self._wake()
            self._exited.wait(1.0)
        for conn in list(self._conns | self._streams.conns):
            self._streams.discard(conn)
            conn.sock.close()
        self._conns.clear()
        for sock in (self._listener, self._wake_r, self._wake_w):
            sock.close()
        self._sel.close()
        self._pool.close()

    def _stop_listening(self) -> None:
        self._listening = False
        if not self._paused_until:
            self._sel.unregister(self._listener)
        self._listener.close()
        for conn in [c for c in self._conns if c.state in (IDLE, READING)] + [*self._streams.conns]:
            self._close(conn, "closed: shutting down")
        self._not_listening.set()

    def _in_flight(self) -> bool:
        return any(c.state in (BUSY, WRITING) for c in self._conns)

    def _wake(self) -> None:
        with contextlib.suppress(OSError):  # full (a wake-up is pending) or closed (done)
            self._wake_w.send(b"x")

    # -- the loop's events ------------------------------------------------------

    def _event(self, key: selectors.SelectorKey, mask: int) -> None:
        conn: _Conn | None = key.data
        if conn is not None:
            if mask & WRITE:
                self._write(conn)
            else:
                self._read(conn)
        elif key.fileobj is self._listener:
            self._accept()
        else:
            with contextlib.suppress(OSError):
                self._wake_r.recv(4096)

    def _accept(self) -> None:
        for _ in range(64):  # then let the others have a turn
            try:
                sock, addr = self._listener.accept()
            except BlockingIOError:
                return
            except OSError as exc:
                if exc.errno in _OUT_OF_FDS:
                    self._out_of_fds(exc)
                return
            self._admit(sock, f"{addr[0]}:{addr[1]}")

    def _out_of_fds(self, exc: OSError) -> None:
        self._warn("cannot accept a connection (%s): closing the longest-stalled one", exc)
        if not self._make_room():
            # Every connection is being served: stop spinning on the listener a moment.
            self._sel.unregister(self._listener)
            self._paused_until = time.monotonic() + SWEEP_S

    def _admit(self, sock: socket.socket, peer: str) -> None:
        sock.setblocking(False)
        # Answers are one write each; without this the next one waits for an ACK.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if len(self._conns) >= self.limits.max_connections and not self._make_room():
            self._warn("at --max-connections %d, none stalled: answering 503", len(self._conns))
            busy = error(503, 11, "too many connections; try again")
            _send_quietly(sock, render(busy, None, False, 0))
            sock.close()
            return
        now = time.monotonic()
        conn = _Conn(sock, peer, now, now + self.limits.request_timeout)
        self._conns.add(conn)
        self._watch(conn, READ)

    def _make_room(self) -> bool:
        stalled = time.monotonic() - STALLED_S
        waiting = [c for c in self._conns if c.state in (IDLE, READING) and c.since <= stalled]
        if not waiting:
            return False
        victim = min(waiting, key=lambda c: (c.state != IDLE, c.since))
        self._warn("at --max-connections %d: closing the longest-stalled", len(self._conns))
        if victim.state == READING and victim.buf:
            self._fail(victim, error(503, 11, "too many connections; yours waited longest"))
        else:
            self._close(victim, "closed to make room for a new connection")
        return True

    def _read(self, conn: _Conn) -> None:
        try:
            data = conn.sock.recv(RECV_SIZE)
        except BlockingIOError:
            return
        except OSError as exc:
            self._close(conn, f"gone ({type(exc).__name__})")
            return
        if not data:
            self._close(conn, "closed by the client")
            return
        if conn.state == STREAMING:
            return  # a stream's client only ever hangs up; what it sends is dropped
        if conn.state == IDLE:
            conn.state, conn.since = READING, time.monotonic()
            conn.deadline = conn.since + self.limits.request_timeout
        conn.buf += data
        self._next_request(conn)

    def _next_request(self, conn: _Conn) -> None:
        while conn.buf and conn.buf[0] in b"\r\n":  # stray line ends between requests
            del conn.buf[:1]
        end, start = find_head_end(conn.buf)
        if end < 0 or end > MAX_HEAD:
            if end > MAX_HEAD or len(conn.buf) > MAX_HEAD:
                self._fail(conn, error(431, 12, f"headers: at most {MAX_HEAD} bytes"))
            return
        head = parse_head(bytes(conn.buf[:end]), self.limits.max_body)
        if isinstance(head, Response):
            self._fail(conn, head)
            return
        if len(conn.buf) < start + head.length:
            if head.expect_continue and not conn.cont:
                conn.cont = True
                _send_quietly(conn.sock, b"HTTP/1.1 100 Continue\r\n\r\n")
            return
        body = bytes(conn.buf[start : start + head.length])
        del conn.buf[: start + head.length]
        conn.state = BUSY
        self._watch(conn, 0)  # the threads own the request until its answer is made
        self._pool.put(conn, head, body)

    def _fail(self, conn: _Conn, response: Response) -> None:
        """Answer a request that will not be served, and close."""
        _send_quietly(conn.sock, render(response, None, False, 0))
        self._close(conn, f"answered {response.status} and closed")

    def _finish_done(self) -> None:
        """Send the answers the threads made (``http_pool`` says why here)."""
        for conn, data, keep, stream in self._pool.take():
            if conn not in self._conns:
                if stream is not None:
                    stream.close()
                continue
            if stream is not None:
                self._adopt(conn, data, stream)
                continue
            conn.out, conn.keep, conn.state = data, keep, WRITING
            conn.deadline = time.monotonic() + self.limits.request_timeout
            self._write(conn)
            if conn.state == WRITING and conn in self._conns:
                self._watch(conn, WRITE)  # the rest when the client reads

    def _answered(self, conn: _Conn) -> None:
        if conn.state == STREAMING:
            self._watch(conn, READ)  # a hang-up shows as readable; more comes from pull
            return
        if not conn.keep or self._stop.is_set():
            self._close(conn)
            return
        now = time.monotonic()
        conn.state, conn.since, conn.cont = IDLE, now, False
        conn.deadline = now + self.limits.idle_timeout
        self._watch(conn, READ)
        if conn.buf:  # pipelined: the next request is already here
            conn.state, conn.deadline = READING, now + self.limits.request_timeout
            self._next_request(conn)

    def _write(self, conn: _Conn) -> None:
        try:
            sent = conn.sock.send(conn.out)
        except BlockingIOError:
            return
        except OSError as exc:
            self._close(conn, f"gone before its answer ({type(exc).__name__})")
            return
        conn.out = conn.out[sent:]
        if not conn.out:
            self._answered(conn)
        elif conn.state == STREAMING and conn.ev != WRITE:
            self._watch(conn, WRITE)

    def _sweep(self, now: float) -> None:
        if self._paused_until and now >= self._paused_until:
            self._paused_until = 0.0
            if self._listening:
                self._sel.register(self._listener, READ)
        for conn in self._streams.stalled(now):
            self._close(conn, "stream: the client took nothing for too long")
        for conn in [c for c in self._conns if c.state != BUSY and now >= c.deadline]:
            if conn.state == READING and conn.buf:
                timeout = self.limits.request_timeout
                self._fail(conn, error(408, 12, f"request: not received within {timeout:g} s"))
            else:
                self._close(conn, "timed out")

    def _watch(self, conn: _Conn, events: int) -> None:
        if conn.ev == events:
            return
        if not conn.ev:
            self._sel.register(conn.sock, events, conn)
        elif not events:
            self._sel.unregister(conn.sock)
        else:
            self._sel.modify(conn.sock, events, conn)
        conn.ev = events

    def _close(self, conn: _Conn, why: str = "") -> None:
        if why:
            log.debug("%s: %s", conn.peer, why)
        self._watch(conn, 0)
        self._conns.discard(conn)
        self._streams.discard(conn)
        conn.sock.close()

    def _warn(self, text: str, *args: object) -> None:
        now = time.monotonic()
        if now >= self._warned:  # at most one line per WARN_EVERY_S: an attack is not a log flood
            self._warned = now + WARN_EVERY_S
            log.warning(text, *args)

    # -- streams ------------------------------------------------------------------

    def _adopt(self, conn: _Conn, head: bytes, stream: Stream) -> None:
        """A request answered with a stream leaves the request bounds for the
        streams' own (or gets 503 past ``max_streams``)."""
        if self._streams.full() or self._stop.is_set():
            stream.close()
            self._warn("at --max-event-streams %d: answering 503", len(self._streams))
            self._fail(conn, error(503, 11, "too many event streams open; try again later"))
            return
        self._conns.discard(conn)
        conn.state, conn.buf = STREAMING, bytearray()
        self._streams.adopt(conn, head, stream, time.monotonic())
        self._write(conn)

    def _pull_streams(self, now: float) -> None:
        ready, ended = self._streams.pull(now)
        for conn in ended:
            self._close(conn, "stream ended")
        for conn in ready:
            self._write(conn)
