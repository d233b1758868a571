"""Run metrics by queue (jobsched/metrics.py): real runs through the real
dispatcher on SQLite, read back through Prometheus's own parser; the bound
on how many queues are labelled by name (docs/queues.md)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from jobsched.dispatcher import Dispatcher
from jobsched.engine import Engine
from jobsched.metrics import MAX_QUEUE_LABELS, OVERFLOW, Metrics
from jobsched.runner import Runner, TaskRegistry
from jobsched.spec import ScheduleSpec
from jobsched.stores.sqlite import SQLiteStore
from jobsched.timefmt import now_ms

Samples = dict[str, dict[tuple[tuple[str, str], ...], float]]
ODD = 'we"ird\\queue'  # a name that must be escaped in a label


def parsed(m: Metrics) -> Samples:
    out: Samples = {}
    for family in text_string_to_metric_families(m.render()):
        for s in family.samples:
            out.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return out


def of(samples: Samples, name: str, queue: str, **labels: str) -> float:
    return samples[name][tuple(sorted({"queue": queue, **labels}.items()))]


@pytest.fixture
def node(tmp_path: Path) -> Iterator[tuple[Engine, Dispatcher, threading.Event]]:
    gate = threading.Event()

    def hold(payload: Any) -> None:
        assert gate.wait(10)

    def boom(payload: Any) -> None:
        raise RuntimeError("no")

    reg = TaskRegistry()
    reg.register("hold", hold)
    reg.register("boom", boom)
    store = SQLiteStore(str(tmp_path / "j.db"))
    engine = Engine(store, reg)
    runner = Runner(reg, 4)
    runner.start()
    d = Dispatcher(engine, runner)
    yield engine, d, gate
    gate.set()
    d.runner.stop()
    store.close()


def schedule(engine: Engine, task: str, queue: str, n: int) -> None:
    for _ in range(n):
        engine.schedule(ScheduleSpec(task=task, payload_json="{}", queue=queue), now_ms())


def test_runs_failures_retries_running_and_lateness_carry_the_queue(
    node: tuple[Engine, Dispatcher, threading.Event],
) -> None:
    engine, d, gate = node
    schedule(engine, "hold", "mail", 2)
    schedule(engine, "boom", ODD, 1)
    now = now_ms()
    d.step(now)
    running = parsed(d.metrics)
    assert of(running, "jobsched_running", "mail") == 2
    assert of(running, "jobsched_running", "default") == 0
    gate.set()
    d.run_until_idle(now)
    m = parsed(d.metrics)
    assert of(m, "jobsched_running", "mail") == 0 and of(m, "jobsched_running", ODD) == 0
    assert of(m, "jobsched_runs_total", "mail", outcome="succeeded") == 2
    assert of(m, "jobsched_runs_total", ODD, outcome="failed") == 1
    assert of(m, "jobsched_run_failures_total", "mail") == 0
    assert of(m, "jobsched_run_failures_total", ODD) == 1
    assert of(m, "jobsched_retries_total", ODD) == 1
    assert of(m, "jobsched_dispatch_lateness_seconds_count", "mail") == 2
    assert of(m, "jobsched_dispatch_lateness_seconds_bucket", ODD, le="+Inf") == 1
    # The default queue is always there (its families are never empty), and
    # the totals the older readers use sum the queues.
    assert of(m, "jobsched_runs_total", "default", outcome="succeeded") == 0
    assert d.metrics.runs["succeeded"] == 2 and d.metrics.runs["failed"] == 1
    assert d.metrics.retries == 1 and d.metrics.lateness_count == 3


def test_queues_past_the_label_bound_are_counted_together() -> None:
    m = Metrics()
    names = [f"q{i:03}" for i in range(MAX_QUEUE_LABELS + 10)]
    for name in names:
        m.run("succeeded", queue=name)
        m.lateness(5.0, name)
    m.run("failed", queue="default")
    samples = parsed(m)
    queues = {dict(k)["queue"] for k in samples["jobsched_runs_total"]}
    # default counts as one of the bound: the first 49 other names, then the overflow.
    assert queues == {"default", OVERFLOW, *names[: MAX_QUEUE_LABELS - 1]}
    assert of(samples, "jobsched_runs_total", OVERFLOW, outcome="succeeded") == 11
    assert of(samples, "jobsched_dispatch_lateness_seconds_count", OVERFLOW) == 11
    assert m.runs["succeeded"] == len(names) and m.lateness_count == len(names)
