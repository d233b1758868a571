"""Job ids (jobsched/ids.py): UUID v7 text, unique, increasing in one process
(across threads, a stepped-back clock, a used-up counter and a fork), and
timestamped with the wall clock."""

from __future__ import annotations

import os
import re
import threading
import time
import uuid

import pytest

from jobsched import ids
from jobsched.ids import uuid7, uuid7_many

CANONICAL = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")


def _ms(text: str) -> int:
    return uuid.UUID(text).int >> 80


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """A clock the test sets (ns), starting a minute ahead of any id made so far;
    the generator's state is put back afterwards, so that the ids of later
    tests follow the real clock again."""
    for name in ("_last_ms", "_counter", "_prefix"):
        monkeypatch.setattr(ids, name, getattr(ids, name))
    now = [max(time.time_ns(), ids._last_ms * 1_000_000) + 60 * 10**9]
    monkeypatch.setattr(ids.time, "time_ns", lambda: now[0])
    return now


def test_format_version_and_variant() -> None:
    for text in [uuid7(), *uuid7_many(1000)]:
        assert CANONICAL.fullmatch(text), text
        parsed = uuid.UUID(text)
        assert parsed.version == 7
        assert parsed.variant == uuid.RFC_4122
        assert str(parsed) == text


def test_unique_and_increasing_one_by_one_and_in_batches() -> None:
    made = [uuid7() for _ in range(20_000)]
    made += uuid7_many(20_000)
    made += [uuid7() for _ in range(10)]
    made += uuid7_many(1) + uuid7_many(0) + uuid7_many(5_000)
    assert len(set(made)) == len(made)
    assert made == sorted(made)  # text order is id order: fixed-width lower-case hex


def test_timestamp_is_the_wall_clock() -> None:
    before = time.time_ns() // 1_000_000
    one = uuid7()
    batch = uuid7_many(100)
    after = time.time_ns() // 1_000_000
    # Ids may run ahead of the clock only by the milliseconds a full counter
    # borrowed; 101 ids in a row cannot use up a counter that starts below 2048.
    for text in [one, *batch]:
        assert before <= _ms(text) <= after


def test_random_bits_differ(clock: list[int]) -> None:
    tails = {text[19:] for text in uuid7_many(10_000)}
    assert len(tails) == 10_000  # 62 random bits each: a repeat would be a bug
    # Each new millisecond starts the counter at a random value below 2048.
    now = clock
    starts = set()
    for _ in range(50):
        now[0] += 1_000_000_000  # past any millisecond the batch above borrowed
        starts.add(int(uuid7()[15:18], 16))
    assert len(starts) > 10 and max(starts) < 2048


def test_a_used_up_counter_borrows_the_next_millisecond(clock: list[int]) -> None:
    frozen = clock[0]
    made = uuid7_many(10_000)  # far more than one millisecond's counter holds
    made += [uuid7() for _ in range(5_000)]
    assert made == sorted(made) and len(set(made)) == len(made)
    stamps = sorted({_ms(t) for t in made})
    assert stamps[0] == frozen // 1_000_000
    assert len(stamps) >= 4  # 15,000 ids, at most 4,096 per millisecond
    assert stamps == list(range(stamps[0], stamps[0] + len(stamps)))  # no gaps


def test_a_clock_stepping_back_never_makes_a_smaller_id(clock: list[int]) -> None:
    now = clock
    first = uuid7()
    now[0] -= 5_000_000_000  # NTP steps the clock back 5 s
    later = [uuid7() for _ in range(100)] + uuid7_many(100)
    assert all(first < t for t in later)
    assert later == sorted(later)


def test_threads_get_unique_increasing_ids() -> None:
    per_thread: list[list[str]] = [[] for _ in range(4)]
    go = threading.Barrier(4)

    def make(out: list[str]) -> None:
        go.wait()
        for i in range(5_000):
            out.append(uuid7())
            if i % 500 == 0:
                out.extend(uuid7_many(50))

    threads = [threading.Thread(target=make, args=(out,)) for out in per_thread]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    every = [text for out in per_thread for text in out]
    assert len(set(every)) == len(every) == 4 * 5_500
    for out in per_thread:  # each thread sees ids increase, whatever the others do
        assert out == sorted(out)


def test_a_forked_child_does_not_repeat_the_parents_ids() -> None:
    uuid7()  # the parent has random bits drawn and unused
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its ids, then exit without running pytest's teardown
        try:
            os.write(write_end, "\n".join(uuid7_many(200)).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    parent = set(uuid7_many(200))
    chunks = []
    while chunk := os.read(read_end, 1 << 16):
        chunks.append(chunk)
    os.close(read_end)
    os.waitpid(pid, 0)
    child = set(b"".join(chunks).decode().split("\n"))
    assert len(child) == 200
    # The same millisecond and counter may occur in both; the random tails must not.
    assert not {t[19:] for t in parent} & {t[19:] for t in child}
