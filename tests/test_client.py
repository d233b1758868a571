"""jobsched.Client and AsyncClient: one suite, the same calls and the same
expected results on every target: a SQLite file, a PostgreSQL database (both
written directly through the engine), and a real ``python -m jobsched serve``
on a free port (over HTTP, ``POST /v1/messages``).

The service is shared by the module's tests (it runs jobs in real time, so
every job here is due far in the future), so each test names its jobs and
tasks with a prefix of its own, and reads ``stats`` as differences."""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import FrozenInstanceError
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import psycopg
import pytest

from jobsched import (
    AsyncClient,
    Client,
    Job,
    JobPage,
    JobSchedule,
    JobSpec,
    JobState,
    RateLimit,
    ScheduledJob,
)
from jobsched.client_types import InvalidArgument, WrongConnection
from jobsched.errors import JobExists, JobNotFound, JobschedError, Malformed, PreconditionFailed
from tests.backend_postgres import base_dsn, fresh_schema, with_schema
from tests.harness import assert_mypy_strict

ROOT = Path(__file__).resolve().parent.parent
TOKEN = "client-test-token"
TARGETS = ("sqlite", "postgres", "http")
LATER = datetime(2031, 3, 1, 12, 30, tzinfo=UTC)


class Service:
    """A real ``python -m jobsched serve`` on a free loopback port, on SQLite."""

    def __init__(self, tmp: Path, *extra: str) -> None:
        args = [sys.executable, "-m", "jobsched", "serve", "--db", str(tmp / "svc.db")]
        args += ["--listen", "127.0.0.1:0", "--log-level", "WARNING", "--token", TOKEN, *extra]
        # The suite's task names are per test; their handlers are the no-op.
        args += ["--noop-tasks"]
        self.proc = subprocess.Popen(args, cwd=ROOT, stderr=subprocess.PIPE, text=True)
        assert self.proc.stderr is not None
        self.log: list[str] = []
        for line in self.proc.stderr:
            self.log.append(line)
            if line.startswith("jobsched: listening on http://"):
                self.url = line.split("listening on ")[1].strip()
                break
        else:
            raise AssertionError(f"the service did not start: {''.join(self.log)}")
        threading.Thread(
            target=lambda: self.log.extend(self.proc.stderr or ()), daemon=True
        ).start()

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=30)


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    s = Service(tmp_path_factory.mktemp("svc"))
    yield s
    assert s.stop() == 0, "".join(s.log)


@pytest.fixture
def pg_dsn() -> Iterator[str]:
    with fresh_schema() as schema:
        yield with_schema(base_dsn(), schema)


def _target(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> tuple[str, str | None]:
    if kind == "sqlite":
        return str(tmp_path / "jobs.db"), None
    if kind == "postgres":
        return str(request.getfixturevalue("pg_dsn")), None
    return str(request.getfixturevalue("service").url), TOKEN


@pytest.fixture(params=TARGETS)
def target(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, str | None]:
    return _target(str(request.param), tmp_path, request)


@pytest.fixture
def client(target: tuple[str, str | None]) -> Iterator[Client]:
    c = Client(target[0], token=target[1])
    yield c
    c.close()


@pytest.fixture
def p() -> str:
    """A prefix for this test's job ids and task names (the service is shared)."""
    return f"c{uuid.uuid4().hex[:10]}"


def _next_new_year(now: datetime) -> datetime:
    return datetime(now.year + 1, 1, 1, tzinfo=UTC)


# -- scheduling -----------------------------------------------------------------------


def test_schedule_answers_the_job_id_and_when_it_is_due(client: Client, p: str) -> None:
    paris = timezone(timedelta(hours=2))
    once = client.schedule(f"{p}-t", {"n": 1}, run_at=LATER.astimezone(paris), job_id=f"{p}-1")
    assert once == ScheduledJob(f"{p}-1", LATER, recurring=False)
    assert once.due_at is not None and once.due_at.tzinfo is not None
    yearly = client.schedule(f"{p}-t", cron="0 0 1 1 *")
    assert yearly.recurring and yearly.due_at == _next_new_year(datetime.now(UTC))
    assert len(yearly.job_id) == 36  # a UUID v7 made by jobsched
    ms = client.schedule(f"{p}-t", run_at=int(LATER.timestamp() * 1000) + 5)
    assert ms.due_at == LATER + timedelta(milliseconds=5)
    with pytest.raises(FrozenInstanceError):
        once.job_id = "x"  # type: ignore[misc]


def test_a_resend_is_idempotent_and_another_spec_is_21(client: Client, p: str) -> None:
    first = client.schedule(f"{p}-t", {"a": 1}, run_at=LATER, job_id=f"{p}-same", max_attempts=5)
    again = client.schedule(f"{p}-t", {"a": 1}, run_at=LATER, job_id=f"{p}-same", max_attempts=5)
    assert again == first
    with pytest.raises(JobExists) as err:
        client.schedule(f"{p}-t", {"a": 2}, run_at=LATER, job_id=f"{p}-same")
    assert (err.value.code, err.value.job_id) == (21, f"{p}-same")
    assert err.value.text == f"job '{p}-same' already exists with a different spec"


def test_bad_arguments_are_refused_with_the_field_named(client: Client, p: str) -> None:
    with pytest.raises(InvalidArgument) as naive:
        client.schedule(f"{p}-t", run_at=datetime(2031, 1, 1))
    assert isinstance(naive.value, ValueError) and naive.value.code == 12
    assert naive.value.field == "run_at" and "naive datetime" in naive.value.text
    with pytest.raises(Malformed) as both:
        client.schedule(f"{p}-t", delay_ms=5, cron="* * * * *")
    assert both.value.text == (
        "cron: give at most one of delay_ms, run_at, cron, interval_ms (got delay_ms and cron)"
    )
    assert both.value.field == "cron"
    with pytest.raises(Malformed, match=r"^state: must be one of scheduled, running"):
        client.list(state="sleeping")
    with pytest.raises(Malformed, match=r"^job_id: must be 1-200 characters"):
        client.get("bad id")
    assert client.list(task=f"{p}-t").jobs == ()


def _nested(levels: int) -> Any:
    value: Any = 1
    for _ in range(levels):
        value = [value]
    return value


def test_values_json_cannot_carry_are_refused_alike_everywhere(client: Client, p: str) -> None:
    """Every target answers the same InvalidArgument naming the field: a
    service's encoder used to raise ValueError or TypeError (RecursionError
    for a deep payload), a store its own texts or the encoder's errors."""
    task = f"{p}-t"
    cases: list[tuple[Callable[[], Any], str]] = [
        (lambda: client.schedule(task, delay_ms=float("inf")), "delay_ms: must be a finite number, not inf"),
        (lambda: client.schedule(task, unique_key="k", unique_for_ms=float("nan")), "unique_for_ms: must be a finite number, not nan"),
        (lambda: client.configure_queue(f"{p}-q", concurrency=float("inf")), "concurrency: must be a finite number, not inf"),  # type: ignore[arg-type]
        (lambda: client.list(limit=float("nan")), "limit: must be a finite number, not nan"),  # type: ignore[arg-type]
        (lambda: client.schedule(task, {"x": [1.5, float("-inf")]}), "payload: ['x'][1] must be a finite number, not -inf"),
        (lambda: client.schedule(task, {"x": {1, 2}}), "payload: ['x'] must be a dict, list, str, int, float, bool or None (JSON), not a set"),
        (lambda: client.schedule(task, object()), "payload: must be a dict, list, str, int, float, bool or None (JSON), not an object"),
        (lambda: client.schedule(task, {"k": {(1, 2): 3}}), "payload: ['k'] has a key (1, 2), a tuple: JSON keys must be str, int, float, bool or None"),
        (lambda: client.schedule(task, {"n": 10**5000}), "payload: ['n'] must have at most 4300 digits (sys.get_int_max_str_digits()), not 5000"),
        (lambda: client.schedule(task, _nested(5000)), "payload: is nested more than 64 levels deep (arrays and objects)"),
        # The payload's problem, not the task's (which a store reads first).
        (lambda: client.schedule("", {"x": float("nan")}), "payload: ['x'] must be a finite number, not nan"),
        (lambda: client.schedule_many([JobSpec(task), JobSpec(task, {"x": {1}})]), "jobs[1].payload: ['x'] must be a dict, list, str, int, float, bool or None (JSON), not a set"),
        # A field the protocol ignores: a store took it, a service could not be sent it.
        (lambda: client.schedule_many([{"task": task, "note": float("nan")}]), "jobs[0].note: must be a finite number, not nan"),
        (lambda: client.schedule_many([{"task": task, (1,): 2}]), "jobs[0]: has a key (1,), a tuple: JSON keys must be str, int, float, bool or None"),
    ]  # fmt: skip
    for call, text in cases:
        with pytest.raises(InvalidArgument) as err:
            call()
        assert err.value.text == text
        assert err.value.code == 12 and err.value.field == text.split(": ")[0]
    assert client.list(task=task).jobs == ()


class _Level(enum.IntEnum):
    HIGH = 2


def test_values_json_takes_are_not_refused(client: Client, p: str) -> None:
    # What json.dumps writes (tuples, number keys, int enums) is sent as JSON...
    odd = {1: (2, 3), "level": _Level.HIGH, "deep": _nested(62)}
    # ...and a call failing for another reason keeps its own error.
    with pytest.raises(Malformed) as err:
        client.schedule(f"{p}-t", odd, delay_ms=-1)
    assert type(err.value) is Malformed
    assert err.value.text == "delay_ms: must be at least 0, not -1"
    job = client.schedule(f"{p}-t", odd, run_at=LATER)
    assert client.get(job.job_id).payload == {"1": [2, 3], "level": 2, "deep": _nested(62)}


# -- reading ------------------------------------------------------------------------------


def test_get_gives_a_typed_immutable_job(client: Client, p: str) -> None:
    before = datetime.now(UTC) - timedelta(seconds=5)
    client.schedule(
        f"{p}-t", {"to": "ü@example.com"}, cron="30 2 * * *", timezone="Europe/London",
        job_id=f"{p}-j", max_attempts=4, base_ms=10, max_backoff_ms=99, jitter=True,
        timeout_ms=5000, overlap="allow", misfire="all", catchup_window_ms=60_000,
    )  # fmt: skip
    job = client.get(f"{p}-j")
    assert isinstance(job, Job) and job.state is JobState.SCHEDULED and job.state == "scheduled"
    assert job.schedule == JobSchedule("cron", "30 2 * * *", "Europe/London")
    assert job.payload == {"to": "ü@example.com"}
    fields = (job.task, job.attempts, job.max_attempts, job.base_ms, job.max_backoff_ms)
    assert fields == (f"{p}-t", 0, 4, 10, 99)
    assert (job.jitter, job.runs, job.timeout_ms, job.overlap, job.misfire) == (
        True, 0, 5000, "allow", "all",
    )  # fmt: skip
    assert (job.last_run_at, job.last_error, job.skipped, job.locked_by) == (None, None, 0, None)
    assert job.recent_runs == ()
    assert job.due_at is not None and job.due_at > before and job.due_at.tzinfo is not None
    assert before < job.created_at == job.updated_at < datetime.now(UTC) + timedelta(seconds=5)
    with pytest.raises(FrozenInstanceError):
        job.state = JobState.PAUSED  # type: ignore[misc]


def test_get_of_an_unknown_job_is_job_not_found(client: Client, p: str) -> None:
    with pytest.raises(JobNotFound) as err:
        client.get(f"{p}-nope")
    assert (err.value.code, err.value.job_id) == (20, f"{p}-nope")
    assert err.value.text == f"job '{p}-nope' does not exist"
    assert isinstance(err.value, JobschedError)


def test_list_pages_and_iter_jobs_follows_them(client: Client, p: str) -> None:
    made = [client.schedule(f"{p}-t", {"i": i}, run_at=LATER).job_id for i in range(5)]
    client.schedule(f"{p}-other", run_at=LATER)
    page = client.list(task=f"{p}-t", limit=2)
    assert [j.job_id for j in page.jobs] == made[:2] and page.next == made[1]
    assert page.jobs[0].recent_runs is None  # list shows no run history
    rest = client.list(task=f"{p}-t", limit=10, after=page.next)
    assert [j.job_id for j in rest.jobs] == made[2:] and rest.next is None
    assert [j.job_id for j in client.iter_jobs(task=f"{p}-t", page_size=2)] == made
    client.pause(made[3])
    paused = client.list(JobState.PAUSED, task=f"{p}-t")
    assert [j.job_id for j in paused.jobs] == [made[3]]
    assert [j.payload for j in client.iter_jobs("scheduled", f"{p}-t")] == [
        {"i": 0}, {"i": 1}, {"i": 2}, {"i": 4},
    ]  # fmt: skip
    # A filter of the wrong type is named, not turned into text that matches nothing.
    for field, value in (("task", {1}), ("after", 1.5), ("state", 7)):
        with pytest.raises(JobschedError, match=rf"^{field}: "):
            client.list(**{field: value})


def test_list_and_iter_jobs_take_a_queue(
    client: Client, target: tuple[str, str | None], p: str
) -> None:
    mail = [client.schedule(f"{p}-t", run_at=LATER, queue=f"{p}-mail").job_id for _ in range(3)]
    client.schedule(f"{p}-t", run_at=LATER, queue=f"{p}-other")
    client.schedule(f"{p}-t", run_at=LATER)  # the default queue
    page = client.list(task=f"{p}-t", queue=f"{p}-mail", limit=2)
    assert [j.job_id for j in page.jobs] == mail[:2] and page.next == mail[1]
    assert {j.queue for j in page.jobs} == {f"{p}-mail"}
    assert [j.job_id for j in client.iter_jobs(queue=f"{p}-mail", page_size=2)] == mail
    client.pause(mail[1])
    assert [j.job_id for j in client.iter_jobs("paused", queue=f"{p}-mail")] == [mail[1]]
    assert client.list(queue=f"{p}-none").jobs == ()
    with pytest.raises(Malformed, match=r"^queue: "):
        client.list(queue="")
    with pytest.raises(Malformed, match=r"^queue: must be a non-empty string, not 5$"):
        client.list(queue=5)  # type: ignore[arg-type]

    async def listed() -> list[str]:
        async with AsyncClient(target[0], token=target[1]) as c:
            return [j.job_id async for j in c.iter_jobs(queue=f"{p}-mail", page_size=1)]

    assert asyncio.run(listed()) == mail


# -- changes ------------------------------------------------------------------------------


def test_pause_resume_cancel_retry(client: Client, p: str) -> None:
    jid = client.schedule(f"{p}-t", run_at=LATER, job_id=f"{p}-c").job_id
    client.pause(jid)
    assert client.get(jid).state is JobState.PAUSED
    with pytest.raises(PreconditionFailed) as twice:
        client.pause(jid)
    assert twice.value.code == 22 and twice.value.job_id == jid
    assert client.resume(jid) == ScheduledJob(jid, LATER, recurring=False)
    with pytest.raises(PreconditionFailed, match="only a dead job can be retried"):
        client.retry(jid)
    client.cancel(jid)
    assert client.get(jid).state is JobState.CANCELLED
    with pytest.raises(PreconditionFailed) as final:
        client.cancel(jid)
    assert final.value.text.startswith(f"job '{jid}': ")
    with pytest.raises(JobNotFound):
        client.cancel(f"{p}-ghost")


def test_configure_queue_takes_a_rate_limit_in_three_shapes(client: Client, p: str) -> None:
    q = f"{p}-q"
    assert client.configure_queue(q, rate_limit=RateLimit(5, 1000)).rate_limit == RateLimit(5, 1000)
    assert client.configure_queue(q, rate_limit=(6, 2000)).rate_limit == RateLimit(6, 2000)
    by_map = client.configure_queue(q, rate_limit={"max": 7, "per_ms": 3000})
    assert by_map.rate_limit == RateLimit(7, 3000)
    assert client.configure_queue(q, concurrency=2).rate_limit == RateLimit(7, 3000)  # kept
    with pytest.raises(Malformed, match=r"^rate_limit\.max: must be at least 1, not 0$"):
        client.configure_queue(q, rate_limit=(0, 1000))  # the protocol checks the numbers
    assert client.configure_queue(q, rate_limit=None).rate_limit is None


_BAD_RATE_LIMITS: list[tuple[Any, str]] = [
    ([5, 1000], "a list"),
    ("5/s", "a str"),
    (10**5000, "an int"),  # whose repr fails
    ((5,), "a tuple of 1"),
    ((5, 1000, 7), "a tuple of 3"),
    ({"max": 5}, "a mapping of 'max'"),
    ({"max": 5, "per_ms": 1000, "burst": 2}, "a mapping of 'burst', 'max', 'per_ms'"),
    ({}, "a mapping of no keys"),
]


@pytest.mark.parametrize(
    ("rate_limit", "given"), _BAD_RATE_LIMITS, ids=[given for _, given in _BAD_RATE_LIMITS]
)
def test_configure_queue_refuses_any_other_rate_limit(
    client: Client, p: str, rate_limit: Any, given: str
) -> None:
    q = f"{p}-q"
    client.configure_queue(q, rate_limit=(5, 1000))
    with pytest.raises(InvalidArgument) as err:
        client.configure_queue(q, rate_limit=rate_limit, concurrency=3)
    assert (err.value.code, err.value.field) == (12, "rate_limit")
    assert err.value.problem == (
        "must be a RateLimit(max, per_ms), a (max, per_ms) tuple, a mapping "
        f"{{'max': ..., 'per_ms': ...}} or None, not {given}"
    )
    [config] = [info.config for info in client.list_queues() if info.name == q]
    assert (config.rate_limit, config.concurrency) == (RateLimit(5, 1000), None)  # nothing sent


def test_stats_count_every_state(client: Client, p: str) -> None:
    before = client.stats()
    assert list(before.counts) == list(JobState)
    ids = [client.schedule(f"{p}-t", run_at=LATER).job_id for _ in range(3)]
    client.pause(ids[1])
    client.cancel(ids[2])
    after = client.stats()
    change = {
        s: after.counts[s] - before.counts[s]
        for s in JobState
        if after.counts[s] != before.counts[s]
    }
    assert change == {JobState.SCHEDULED: 1, JobState.PAUSED: 1, JobState.CANCELLED: 1}
    assert after.total == before.total + 3
    assert (after.nodes is None) == (not client.target.startswith("postgresql"))


# -- batches ------------------------------------------------------------------------------


def test_schedule_many_answers_in_order_all_or_nothing(client: Client, p: str) -> None:
    specs: list[Any] = [
        JobSpec(f"{p}-t", {"i": 0}, run_at=LATER, job_id=f"{p}-b0"),
        {"task": f"{p}-t", "payload": {"i": 1}, "run_at": LATER, "job_id": f"{p}-b1"},
        {"task": f"{p}-t", "cron": "0 0 1 1 *", "job_id": f"{p}-b2"},
    ]
    got = client.schedule_many(specs)
    assert got == [
        ScheduledJob(f"{p}-b0", LATER, False),
        ScheduledJob(f"{p}-b1", LATER, False),
        ScheduledJob(f"{p}-b2", _next_new_year(datetime.now(UTC)), True),
    ]
    assert client.schedule_many(specs) == got  # re-sent: the same answers, nothing new
    assert len(client.list(task=f"{p}-t").jobs) == 3
    bad = [JobSpec(f"{p}-u", run_at=LATER)] * 3 + [JobSpec(f"{p}-u", delay_ms=-1)]
    with pytest.raises(Malformed) as err:
        client.schedule_many(bad)
    assert err.value.text == "jobs[3].delay_ms: must be at least 0, not -1"
    assert err.value.field == "jobs[3].delay_ms"
    twice = [JobSpec(f"{p}-u", job_id=f"{p}-x"), JobSpec(f"{p}-u", job_id=f"{p}-x")]
    with pytest.raises(Malformed, match=r"^jobs\[1\]\.job_id: "):
        client.schedule_many(twice)
    with pytest.raises(JobExists, match=r"\(jobs\[1\]\)$"):
        client.schedule_many([JobSpec(f"{p}-u"), JobSpec(f"{p}-other", job_id=f"{p}-b0")])
    with pytest.raises(InvalidArgument, match=r"^jobs\[0\]: must be a JobSpec or a mapping"):
        client.schedule_many(["task"])  # type: ignore[list-item]
    with pytest.raises(InvalidArgument, match=r"^jobs\[1\]\.run_at: .* is a naive datetime"):
        client.schedule_many(
            [JobSpec(f"{p}-u"), {"task": f"{p}-u", "run_at": datetime(2031, 1, 1)}]
        )
    assert client.list(task=f"{p}-u").jobs == ()
    assert client.schedule_many([]) == []


# -- targets and connections ------------------------------------------------------------


def test_a_connection_the_target_cannot_use_is_refused(
    client: Client, target: tuple[str, str | None], tmp_path: Path, p: str
) -> None:
    db = sqlite3.connect(tmp_path / "other.db")
    try:
        if target[0].startswith("http"):
            with pytest.raises(WrongConnection, match="over HTTP, which cannot write inside"):
                client.schedule(f"{p}-t", connection=db)
        elif target[0].startswith("postgresql"):
            with pytest.raises(WrongConnection, match=r"takes a psycopg\.Connection, not sqlite3"):
                client.schedule(f"{p}-t", connection=db)
        else:
            with psycopg.connect(base_dsn()) as pg, pytest.raises(WrongConnection) as err:
                client.schedule(f"{p}-t", connection=pg)
            assert "takes a sqlite3.Connection, not psycopg" in err.value.text
            assert isinstance(err.value, TypeError) and err.value.code == 12
    finally:
        db.close()
    assert client.list(task=f"{p}-t").jobs == ()


@pytest.mark.parametrize(
    ("target", "problem"),
    [
        (":memory:", "an in-memory store lives and dies with this client"),
        ("jobs", "'jobs' is neither a SQLite file"),
        ("ftp://example.com/x", "is neither a SQLite file"),
    ],
)
def test_targets_that_name_nothing_useful_are_refused(target: str, problem: str) -> None:
    with pytest.raises(WrongConnection, match=problem):
        Client(target)


def test_a_token_is_only_for_a_service(tmp_path: Path) -> None:
    with pytest.raises(WrongConnection, match=r"^token: is for an http"):
        Client(tmp_path / "jobs.db", token="x")
    with Client(f"sqlite:///{tmp_path / 'jobs.db'}") as c:
        assert c.schedule("t", run_at=LATER, job_id="via-url").job_id == "via-url"
    with Client(tmp_path / "jobs.db") as c:
        assert c.get("via-url").due_at == LATER


def test_a_wrong_token_is_refused_by_the_service(service: Service) -> None:
    with Client(service.url, token="wrong") as c, pytest.raises(Malformed) as err:
        c.stats()
    assert err.value.text.startswith("Authorization: a valid 'Bearer <token>' header")


def test_a_kept_alive_connection_the_service_closed_is_replaced(tmp_path: Path) -> None:
    svc = Service(tmp_path, "--idle-timeout", "0.3")
    try:
        with Client(svc.url, token=TOKEN) as c:
            c.schedule("t", run_at=LATER, job_id="first")
            time.sleep(1.0)  # the service closes the idle connection
            c.schedule("t", run_at=LATER, job_id="second")
            assert [j.job_id for j in c.iter_jobs()] == ["first", "second"]
    finally:
        assert svc.stop() == 0, "".join(svc.log)


def test_an_unreachable_service_is_unavailable() -> None:
    from jobsched.errors import Unavailable

    with Client("http://127.0.0.1:9") as c, pytest.raises(Unavailable, match="cannot reach"):
        c.stats()


# -- asyncio -------------------------------------------------------------------------------


def test_the_async_client_gives_the_same_results(target: tuple[str, str | None], p: str) -> None:
    async def scenario() -> tuple[Any, ...]:
        async with AsyncClient(target[0], token=target[1]) as c:
            one, many = await asyncio.gather(
                c.schedule(f"{p}-t", run_at=LATER, job_id=f"{p}-a"),
                c.schedule_many([JobSpec(f"{p}-t", run_at=LATER, job_id=f"{p}-b")]),
            )
            await c.pause(f"{p}-a")
            job = await c.get(f"{p}-a")
            listed = [j.job_id async for j in c.iter_jobs(task=f"{p}-t", page_size=1)]
            try:
                await c.get(f"{p}-none")
            except JobNotFound as exc:
                missing = exc.text
            return one, many, job.state, sorted(listed), missing

    one, many, state, listed, missing = asyncio.run(scenario())
    assert one == ScheduledJob(f"{p}-a", LATER, False)
    assert many == [ScheduledJob(f"{p}-b", LATER, False)]
    assert (state, listed) == (JobState.PAUSED, [f"{p}-a", f"{p}-b"])
    assert missing == f"job '{p}-none' does not exist"


# -- the same results everywhere ------------------------------------------------------------


def _scenario(c: Client, p: str) -> list[Any]:
    """A run of calls, every result or error recorded, with this run's prefix
    and the ids and times jobsched makes up taken out."""
    out: list[Any] = []

    def record(call: Callable[[], Any]) -> None:
        try:
            result = call()
        except JobschedError as exc:
            result = ("error", exc.code, exc.text.replace(p, "P"))
        out.append(_normal(result, p))

    record(lambda: c.schedule(f"{p}-t", {"k": [1, "é", None]}, run_at=LATER, job_id=f"{p}-1"))
    record(lambda: c.schedule(f"{p}-t", {"k": [1, "é", None]}, run_at=LATER, job_id=f"{p}-1"))
    record(lambda: c.schedule(f"{p}-t", run_at=LATER, job_id=f"{p}-1"))
    record(lambda: c.schedule(f"{p}-t", cron="0 12 * * MON", timezone="Asia/Tokyo"))
    record(lambda: c.schedule(f"{p}-t", cron="0 0 31 2 *"))
    record(lambda: c.schedule(f"{p}-t", interval_ms=0))
    record(lambda: c.schedule(f"{p}-t", timezone="Mars/Olympus", cron="* * * * *"))
    record(lambda: c.schedule("", run_at=LATER))
    record(lambda: c.schedule(f"{p}-t", {"x": "y" * 70_000}))
    record(lambda: c.schedule(f"{p}-t", overlap="sometimes"))
    record(lambda: c.schedule_many([{"task": f"{p}-t", "run_at": LATER}, {"task": 5}]))
    record(lambda: c.schedule_many([{"task": f"{p}-t", "run_at": LATER, "job_id": f"{p}-2"}]))
    record(lambda: c.pause(f"{p}-1"))
    record(lambda: c.resume(f"{p}-1"))
    record(lambda: c.retry(f"{p}-1"))
    record(lambda: c.cancel(f"{p}-1"))
    record(lambda: c.cancel(f"{p}-1"))
    record(lambda: c.get(f"{p}-1"))
    record(lambda: c.get(f"{p}-missing"))
    record(lambda: c.list(limit=0))
    record(lambda: c.list(after=f"{p}-missing"))
    record(lambda: c.list(task=f"{p}-t", limit=2))
    return out


_MADE_UP = datetime(2000, 1, 1, tzinfo=UTC)


def _normal(value: Any, p: str) -> Any:
    if isinstance(value, ScheduledJob):
        jid = value.job_id.replace(p, "P") if value.job_id.startswith(p) else "made-up"
        return dataclasses.replace(value, job_id=jid)
    if isinstance(value, Job):
        jid = value.job_id.replace(p, "P") if value.job_id.startswith(p) else "made-up"
        return dataclasses.replace(
            value,
            job_id=jid,
            task=value.task.replace(p, "P"),
            created_at=_MADE_UP,
            updated_at=_MADE_UP,
            due_at=value.due_at if value.schedule.kind == "once" else _MADE_UP,
        )
    if isinstance(value, JobPage):
        return [_normal(j, p) for j in value.jobs], value.next and _normal_id(value.next, p)
    if isinstance(value, list):
        return [_normal(v, p) for v in value]
    return value


def _normal_id(job_id: str, p: str) -> str:
    return job_id.replace(p, "P") if job_id.startswith(p) else "made-up"


def test_every_target_gives_the_same_results(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    results = {}
    for kind in TARGETS:
        where, token = _target(kind, tmp_path, request)
        with Client(where, token=token) as c:
            results[kind] = _scenario(c, f"c{uuid.uuid4().hex[:10]}")
    assert results["sqlite"] == results["postgres"] == results["http"]
    first = results["sqlite"]
    assert first[0] == first[1] == ScheduledJob("P-1", LATER, False)
    assert first[2] == ("error", 21, "job 'P-1' already exists with a different spec")
    assert [r[1] for r in first if isinstance(r, tuple) and r[0] == "error"] == [
        21, 12, 12, 12, 12, 12, 12, 12, 22, 22, 20, 12, 20,
    ]  # fmt: skip
    job = first[-5]
    assert job.state is JobState.CANCELLED and job.payload == {"k": [1, "é", None]}


# -- the documented examples -------------------------------------------------------------------


def test_the_client_example_passes_mypy_strict_and_runs(tmp_path: Path) -> None:
    example = ROOT / "examples" / "client_app.py"
    assert_mypy_strict(example)
    ran = subprocess.run(
        [sys.executable, str(example), str(tmp_path / "app.db")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert "scheduled" in ran.stdout
