"""Task handlers: the registry, timeouts, async handlers, the pool and the webhook task."""

from __future__ import annotations

import asyncio
import json
import queue
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from jobsched.engine import Engine
from jobsched.errors import Malformed
from jobsched.runner import Outcome, Runner, TaskRegistry
from jobsched.spec import ScheduleSpec
from jobsched.stores.memory import MemoryStore
from jobsched.tasks.webhook import WebhookError, webhook

WAIT = 10.0  # generous bound on real waits, seconds


def test_no_handlers_every_task_is_a_noop_success() -> None:
    reg = TaskRegistry()
    assert not reg.enabled and reg.knows("anything")
    assert reg.run("anything", "{}") == Outcome(True)


def test_decorator_registers_and_unknown_tasks_are_refused() -> None:
    reg = TaskRegistry()
    seen: list[Any] = []

    @reg.task("send-email")
    def send(payload: Any) -> None:
        seen.append(payload)

    @reg.task()
    def by_name(payload: Any) -> None:
        pass

    assert reg.knows("send-email") and reg.knows("by_name") and not reg.knows("other")
    assert reg.run("send-email", '{"to": "a@b"}').ok
    assert seen == [{"to": "a@b"}]
    engine = Engine(MemoryStore(), reg)
    with pytest.raises(Malformed) as err:
        engine.schedule(ScheduleSpec(task="other", payload_json="{}"), 0)
    assert err.value.code == 12 and err.value.field == "task"


def test_builtins_are_known_but_do_not_make_unknown_tasks_errors() -> None:
    reg = TaskRegistry()
    reg.add_builtins()
    assert not reg.enabled and reg.knows("webhook") and reg.knows("anything")
    assert reg.handler("webhook") is webhook


def test_a_handler_that_raises_is_a_failure_with_its_text() -> None:
    reg = TaskRegistry()

    @reg.task("boom")
    def boom(payload: Any) -> None:
        raise ValueError("no address")

    outcome = reg.run("boom", "{}")
    assert not outcome.ok and outcome.error == "ValueError: no address"


def test_a_handler_that_hangs_past_its_timeout_fails() -> None:
    reg, release = TaskRegistry(), threading.Event()
    reg.register("hang", lambda payload: release.wait(WAIT))
    try:
        outcome = reg.run("hang", "{}", timeout_ms=50)
        assert not outcome.ok and outcome.timed_out
        assert outcome.error == "timed out after 50 ms"
    finally:
        release.set()


def test_async_handlers_run_and_fail_and_time_out() -> None:
    reg = TaskRegistry()
    seen: list[Any] = []

    @reg.task("ok")
    async def ok(payload: Any) -> None:
        await asyncio.sleep(0)
        seen.append(payload)

    @reg.task("bad")
    async def bad(payload: Any) -> None:
        raise RuntimeError("async failure")

    @reg.task("slow")
    async def slow(payload: Any) -> None:
        await asyncio.sleep(WAIT)

    assert reg.run("ok", "[1]").ok and seen == [[1]]
    assert reg.run("bad", "{}").error == "RuntimeError: async failure"
    timed = reg.run("slow", "{}", timeout_ms=30)
    assert timed.timed_out and not timed.ok


def _submit(runner: Runner, task: str, timeout_ms: int | None = None) -> Outcome:
    box: queue.SimpleQueue[Outcome] = queue.SimpleQueue()
    runner.submit(task, "{}", timeout_ms, lambda outcome, started: box.put(outcome))
    return box.get(timeout=WAIT)


def test_runner_runs_plain_and_async_handlers_off_the_calling_thread() -> None:
    reg = TaskRegistry()
    threads: list[str] = []

    @reg.task("plain")
    def plain(payload: Any) -> None:
        threads.append(threading.current_thread().name)

    @reg.task("coro")
    async def coro(payload: Any) -> None:
        threads.append(threading.current_thread().name)

    @reg.task("slow")
    async def slow(payload: Any) -> None:
        await asyncio.sleep(WAIT)

    runner = Runner(reg, workers=2)
    runner.start()
    try:
        assert _submit(runner, "plain").ok
        assert _submit(runner, "coro").ok
        assert _submit(runner, "slow", timeout_ms=20).timed_out  # cancelled on the loop
        assert _submit(runner, "unknown").error == "no handler for 'unknown'"
    finally:
        runner.stop()
    assert threads[0].startswith("jobsched-worker-") and threads[1] == "jobsched-async"


# -- the webhook task -----------------------------------------------------------------


class _Hook(BaseHTTPRequestHandler):
    received: list[tuple[str, str, bytes]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.received.append((self.path, self.headers["Content-Type"], body))
        status = 500 if self.path == "/fail" else 204
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def hook_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _Hook.received = []
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_webhook_posts_the_body_as_json_and_2xx_is_success(hook_url: str) -> None:
    assert webhook({"url": f"{hook_url}/ok", "body": {"event": "paid", "n": 1}}) == 204
    path, ctype, body = _Hook.received[0]
    assert path == "/ok" and ctype == "application/json"
    assert json.loads(body) == {"event": "paid", "n": 1}


def test_webhook_non_2xx_and_refused_connections_are_failures(hook_url: str) -> None:
    reg = TaskRegistry()
    reg.add_builtins()
    failed = reg.run("webhook", json.dumps({"url": f"{hook_url}/fail"}))
    assert not failed.ok and "HTTP 500" in (failed.error or "")
    with pytest.raises(WebhookError):
        webhook({"url": "http://127.0.0.1:9/closed", "timeout_ms": 2000})
    with pytest.raises(WebhookError, match=r"payload\.url"):
        webhook({"url": "file:///etc/passwd"})
