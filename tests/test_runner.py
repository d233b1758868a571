"""Task handlers: the registry, timeouts, async handlers, the pool and the webhook task."""

from __future__ import annotations

import asyncio
import json
import queue
import sys
import threading
import time
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
        if self.path.startswith("/moved/"):  # a redirect to a page that answers 200 to a GET
            self.send_response(int(self.path.rsplit("/", 1)[1]))
            self.send_header("Location", "/landing")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if self.path == "/trickle":  # 200, then a body a byte every 0.2 s
            self.send_response(200)
            self.send_header("Content-Length", "100")
            self.end_headers()
            for _ in range(100):
                self.wfile.write(b"x")
                self.wfile.flush()
                time.sleep(0.2)
            return
        status = 500 if self.path == "/fail" else 204
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_GET(self) -> None:
        self.received.append((self.path, "", b""))
        self.send_response(200)
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


@pytest.mark.parametrize("status", [302, 303, 307])
def test_a_webhook_redirect_is_a_failure_not_followed(hook_url: str, status: int) -> None:
    """urllib follows a 301-303 as a GET without the body: the target's 200
    made the run a success though the hook never got its POST."""
    with pytest.raises(WebhookError, match=f"HTTP {status}"):
        webhook({"url": f"{hook_url}/moved/{status}"})
    assert [r[0] for r in _Hook.received] == [f"/moved/{status}"]


def test_a_webhook_s_answer_body_cannot_hold_the_run(hook_url: str) -> None:
    """Only the status counts: a 2xx whose body trickles in (each read
    within the client's timeout) ends the run at once."""
    started = time.monotonic()
    assert webhook({"url": f"{hook_url}/trickle", "timeout_ms": 1000}) == 200
    assert time.monotonic() - started < 2


# -- what a handler cannot do to the runner ---------------------------------------


def _collect(runner: Runner, tasks: list[str]) -> dict[str, list[Outcome]]:
    """Submit each task once; wait until each reported; every report, by task."""
    seen: dict[str, list[Outcome]] = {t: [] for t in tasks}
    ended = threading.Semaphore(0)

    def done_for(task: str) -> Any:
        def done(outcome: Outcome, started: float) -> None:
            seen[task].append(outcome)
            ended.release()

        return done

    for task in tasks:
        runner.submit(task, "{}", None, done_for(task))
    for _ in tasks:
        assert ended.acquire(timeout=WAIT)
    return seen


def test_base_exceptions_fail_the_run_and_every_worker_survives() -> None:
    reg = TaskRegistry()
    reg.register("exit", lambda payload: sys.exit(2))

    @reg.task("interrupt")
    def interrupt(payload: Any) -> None:
        raise KeyboardInterrupt

    @reg.task("async-exit")
    async def async_exit(payload: Any) -> None:
        raise SystemExit("async bye")

    strays: list[asyncio.Task[None]] = []

    @reg.task("stray")
    async def stray(payload: Any) -> None:
        async def die() -> None:
            raise SystemExit(4)

        strays.append(asyncio.get_running_loop().create_task(die()))
        await asyncio.sleep(0.02)

    reg.register("ok", lambda payload: None)

    @reg.task("async-ok")
    async def async_ok(payload: Any) -> None:
        pass

    runner = Runner(reg, workers=1)  # one worker: it must outlive both failures
    runner.start()
    try:
        seen = _collect(runner, ["exit", "interrupt", "async-exit", "stray", "ok", "async-ok"])
        time.sleep(0.05)  # a second report would come now
    finally:
        runner.stop()
    assert seen == {
        "exit": [Outcome(False, "SystemExit: 2")],
        "interrupt": [Outcome(False, "KeyboardInterrupt")],
        "async-exit": [Outcome(False, "SystemExit: async bye")],
        "stray": [Outcome(True)],
        "ok": [Outcome(True)],
        "async-ok": [Outcome(True)],
    }
    # Retrieved: otherwise its traceback is logged whenever it is garbage
    # collected, and on 3.11 that can land inside pytest's own ast.parse.
    assert isinstance(strays[0].exception(), SystemExit)


def test_a_done_callback_that_raises_does_not_kill_the_worker() -> None:
    reg = TaskRegistry()
    reg.register("ok", lambda payload: None)
    runner = Runner(reg, workers=1)
    runner.start()
    try:

        def bad_done(outcome: Outcome, started: float) -> None:
            raise SystemExit("from the callback")

        runner.submit("ok", "{}", None, bad_done)
        assert _submit(runner, "ok").ok
    finally:
        runner.stop()


def test_timed_reports_wall_start_and_monotonic_duration() -> None:
    reg = TaskRegistry()
    reg.register("nap", lambda payload: time.sleep(0.05))

    @reg.task("async-nap")
    async def async_nap(payload: Any) -> None:
        await asyncio.sleep(0.05)

    box: queue.SimpleQueue[tuple[Outcome, float, float]] = queue.SimpleQueue()
    runner = Runner(reg, workers=1)
    runner.start()
    try:
        for task, least in (("nap", 50.0), ("async-nap", 50.0), ("unknown", 0.0)):
            before = time.time() * 1000
            runner.submit(task, "{}", None, lambda o, s, d: box.put((o, s, d)), timed=True)
            outcome, started, duration = box.get(timeout=WAIT)
            assert before - 1 <= started <= time.time() * 1000, task
            assert least <= duration < 5000, (task, duration)
            assert outcome.ok == (task != "unknown")
    finally:
        runner.stop()


def test_stop_cancels_coroutines_and_lets_them_clean_up() -> None:
    reg, cleaned = TaskRegistry(), threading.Event()

    @reg.task("forever")
    async def forever(payload: Any) -> None:
        try:
            await asyncio.sleep(WAIT)
        finally:
            await asyncio.sleep(0)  # cleanup that itself awaits
            cleaned.set()

    runner = Runner(reg, workers=1)
    runner.start()
    box: queue.SimpleQueue[Outcome] = queue.SimpleQueue()
    runner.submit("forever", "{}", None, lambda outcome, started: box.put(outcome))
    time.sleep(0.05)
    runner.stop()
    assert cleaned.is_set()
    assert box.get(timeout=WAIT) == Outcome(False, "cancelled (the event loop stopped)")
    runner.submit("forever", "{}", None, lambda outcome, started: box.put(outcome))
    assert box.get(timeout=WAIT) == Outcome(False, "cancelled (the runner stopped)")


def test_exception_text_is_safe_whatever_the_exception_holds() -> None:
    class NoText(Exception):
        def __str__(self) -> str:
            raise SystemExit("not even this")

    reg = TaskRegistry()

    @reg.task("no-text")
    def no_text(payload: Any) -> None:
        raise NoText()

    @reg.task("odd")
    def odd(payload: Any) -> None:
        raise ValueError("\udcff\x00" + "y" * 3000)

    assert reg.run("no-text", "{}") == Outcome(False, "NoText")
    error = reg.run("odd", "{}").error or ""
    assert error.startswith("ValueError: \\udcff\\x00yyy") and len(error) == 2000
    error.encode("utf-8")  # storable and sendable


# -- handles: .schedule() and the context -----------------------------------------


def test_a_context_handler_gets_the_job_id_attempt_due_time_and_a_logger(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from jobsched.handles import TaskContext, context_for

    reg = TaskRegistry()
    seen: list[tuple[Any, TaskContext]] = []

    @reg.task("ctx", pass_context=True)
    def handler(payload: Any, ctx: TaskContext) -> None:
        ctx.logger.warning("hello")
        seen.append((payload, ctx))

    engine = Engine(MemoryStore(), reg)
    job = engine.schedule(ScheduleSpec(task="ctx", payload_json='{"n": 1}', delay_ms=0), 1_000)
    assert reg.run("ctx", '{"n": 1}', context=context_for(job)) == Outcome(True)
    payload, ctx = seen[0]
    assert payload == {"n": 1}
    assert (ctx.job_id, ctx.task, ctx.attempt, ctx.due_at) == (job.job_id, "ctx", 1, 1_000)
    assert f"[ctx {job.job_id}] hello" in caplog.text
    with pytest.raises(AttributeError):
        ctx.attempt = 2  # type: ignore[misc]  # frozen
    # Without a context from the caller the handler still runs, with None fields.
    assert reg.run("ctx", "2") == Outcome(True) and seen[1][1].job_id is None


def test_runner_passes_the_context_to_sync_and_async_handlers() -> None:
    from jobsched.handles import TaskContext, make_context

    reg = TaskRegistry()
    got: queue.Queue[Any] = queue.Queue()

    @reg.task("s", pass_context=True)
    def sync(payload: Any, ctx: TaskContext) -> None:
        got.put((payload, ctx.job_id, ctx.attempt))

    @reg.task("a", pass_context=True)
    async def coro(payload: Any, ctx: TaskContext) -> None:
        got.put((payload, ctx.job_id, ctx.attempt))

    runner = Runner(reg, workers=1)
    runner.start()
    outcomes: queue.Queue[Outcome] = queue.Queue()
    try:
        runner.submit(
            "s", "1", None, lambda o, _: outcomes.put(o), context=make_context("s", "j1", 3)
        )
        runner.submit(
            "a", "2", None, lambda o, _: outcomes.put(o), context=make_context("a", "j2", 1)
        )
        assert [outcomes.get(timeout=WAIT) for _ in range(2)] == [Outcome(True)] * 2
    finally:
        runner.stop()
    assert sorted([got.get_nowait(), got.get_nowait()]) == [(1, "j1", 3), (2, "j2", 1)]


def test_a_task_handle_schedules_through_the_configured_client(tmp_path: Any) -> None:
    import jobsched
    from jobsched.client import Client
    from jobsched.handles import NotConfigured

    reg = TaskRegistry()

    @reg.task("send-email")
    def send(payload: Any) -> str:
        return f"sent {payload}"

    assert send("x") == "sent x"  # still the function
    jobsched.configure(None)
    with pytest.raises(NotConfigured):
        send.schedule({"to": "a"})
    with Client(str(tmp_path / "j.db")) as client:
        jobsched.configure(client)
        try:
            one = send.schedule({"to": "a"}, delay_ms=60_000)
            many = send.schedule_many([{"to": "b"}, {"to": "c"}], delay_ms=1000)
            jobs = {j.job_id: j for j in client.list().jobs}
        finally:
            jobsched.set_default_client(None)
    assert len(many) == 2 and set(jobs) == {one.job_id, *(m.job_id for m in many)}
    assert sorted(j.payload["to"] for j in jobs.values()) == ["a", "b", "c"]
    assert {j.task for j in jobs.values()} == {"send-email"}


def test_an_async_handler_run_in_the_caller_s_thread_is_bounded_by_its_timeout() -> None:
    """execute_job and execute_jobs run a handler in the request's thread
    (TaskRegistry.run): a coroutine that blocks its loop, or that catches its
    cancellation and returns, was a success after as long as it liked."""
    import asyncio

    reg = TaskRegistry()

    @reg.task("blocks")
    async def blocks(payload: Any) -> None:
        time.sleep(1.0)  # the loop cannot cancel what it never gets back to

    @reg.task("shrugs")
    async def shrugs(payload: Any) -> None:
        try:
            await asyncio.sleep(5)
        except asyncio.CancelledError:
            return  # "succeeds" after the cancel

    @reg.task("quick")
    async def quick(payload: Any) -> None:
        await asyncio.sleep(0.01)

    for task in ("blocks", "shrugs"):
        started = time.monotonic()
        outcome = reg.run(task, "{}", 200)
        assert outcome.timed_out and not outcome.ok, (task, outcome)
        assert time.monotonic() - started < 0.9, task
    assert reg.run("quick", "{}", 2000).ok


def test_a_generator_handler_s_body_runs_and_its_errors_fail_the_run() -> None:
    """A generator function called returns a generator without running a line
    of it: such a handler was 'succeeded' whatever its body would have done."""
    reg = TaskRegistry()
    ran: list[str] = []

    @reg.task("gen-ok")
    def gen_ok(payload: Any) -> Iterator[int]:
        ran.append("ok")
        yield 1

    @reg.task("gen-boom")
    def gen_boom(payload: Any) -> Iterator[int]:
        yield 1
        raise RuntimeError("late")

    assert reg.run("gen-ok", "{}").ok and ran == ["ok"]
    failed = reg.run("gen-boom", "{}")
    assert not failed.ok and "late" in (failed.error or "")
