"""The stdio loop's batches: every line gets one reply even when the store
cannot begin or commit the batch, and then nothing is acknowledged."""

from __future__ import annotations

import io
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager

from jobsched.engine import Engine
from jobsched.errors import Unavailable
from jobsched.messages import Context
from jobsched.node import StdioNode
from jobsched.stores.memory import MemoryStore
from tests.harness import Clock


class FlakyStore(MemoryStore):
    """A memory store whose transactions fail at begin or at commit on demand."""

    def __init__(self) -> None:
        super().__init__()
        self.fail_at: str | None = None
        self.depth = 0

    @contextmanager
    def _flaky(self) -> Iterator[None]:
        outermost = self.depth == 0
        if outermost and self.fail_at == "begin":
            raise Unavailable("cannot begin: connection refused")
        self.depth += 1
        try:
            yield
        finally:
            self.depth -= 1
        if outermost and self.fail_at == "commit":
            raise Unavailable("cannot commit: disk full")

    def transaction(self):  # type: ignore[no-untyped-def]
        return self._flaky()


def _run(store: FlakyStore, lines: list[str]) -> list[dict[str, object]]:
    ctx = Context(Engine(store), clock=Clock())
    out = io.BytesIO()
    r, w = os.pipe()
    os.write(w, "".join(line + "\n" for line in lines).encode())
    os.close(w)
    try:
        StdioNode(ctx, r, out).run()
    finally:
        os.close(r)
    return [json.loads(line) for line in out.getvalue().decode().splitlines()]


LINES = [
    '{"src": "c", "dest": "s", "body": {"type": "schedule_job", "msg_id": 1, "task": "a"}}',
    "",
    '{"type": "schedule_job", "msg_id": 2, "task": "b"}',
    "not json",
    '{"src": "c", "dest": "s", "body": {"type": "stats", "msg_id": 3}}',
]


def test_a_batch_that_cannot_begin_answers_every_line_with_11_or_its_parse_error() -> None:
    store = FlakyStore()
    store.fail_at = "begin"
    replies = _run(store, LINES)
    assert len(replies) == 4
    assert replies[0]["body"] == {
        "type": "error",
        "in_reply_to": 1,
        "code": 11,
        "text": replies[0]["body"]["text"],
    }  # type: ignore[index]
    assert replies[1]["code"] == 11 and replies[1]["in_reply_to"] == 2
    assert replies[2]["code"] == 12  # not JSON: answered as such
    assert replies[3]["body"]["code"] == 11  # type: ignore[index]


def test_a_batch_that_cannot_commit_acknowledges_no_change() -> None:
    store = FlakyStore()
    store.fail_at = "commit"
    replies = _run(store, LINES)
    assert [r.get("body", r)["type"] for r in replies] == ["error", "error", "error", "stats"]  # type: ignore[union-attr]
    assert [r.get("body", r).get("code") for r in replies[:3]] == [11, 11, 12]  # type: ignore[union-attr]


def test_a_healthy_batch_answers_in_order() -> None:
    replies = _run(FlakyStore(), LINES)
    assert [r.get("body", r)["type"] for r in replies] == [
        "job_scheduled",
        "job_scheduled",
        "error",
        "stats",
    ]  # type: ignore[union-attr]
