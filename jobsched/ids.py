"""Job ids: UUID version 7 (RFC 9562), time-ordered, from the standard library.

A v7 id starts with the millisecond timestamp, so ids sort in creation order
and index well in a B-tree; the rest is random, so ids stay unique across
restarts and across nodes without coordination.

Layout (RFC 9562 section 6.2, method 1, "fixed-length dedicated counter"):
48 bits of Unix milliseconds, the version (7), a 12-bit counter in ``rand_a``,
the variant (``10``), and 62 random bits in ``rand_b``. At each new
millisecond the counter starts at a random value below 2048, leaving at least
2048 steps; within the millisecond it counts up, so ids of one process are
strictly increasing, across threads too (one lock). When the counter runs
out, or the clock steps back, the timestamp is carried forward by one
millisecond instead: ids never go backwards, and the clock catches up.

Cheap: the random bits come from one ``os.urandom`` call per 512 ids, and the
text of the timestamp part is built once per millisecond (an id costs a
fraction of a microsecond, where one ``urandom`` call each cost ~1 us).
``uuid7_many`` makes a batch under one lock. After ``fork`` the child drops
the parent's unused random bits, so parent and child never share them.
"""

from __future__ import annotations

import os
import threading
import time
from array import array

_POOL = 512  # random tails drawn per os.urandom call
# The first byte of a tail: the variant bits 10, then 6 random bits.
_VARIANT = bytes(0x80 | (b & 0x3F) for b in range(256))
_HEX3 = [f"{c:03x}" for c in range(0x1000)]  # the counter's three hex digits
_COUNTER_MAX = 0xFFF

_lock = threading.Lock()
_last_ms = -1
_counter = 0
_prefix = ""  # "tttttttt-tttt-7" for _last_ms
# Unused random tails "-vxxx-xxxxxxxxxxxx" (variant and 62 random bits), and
# random counter starts; both drawn in bulk.
_tails: list[str] = []
_starts: list[int] = []


def _refill() -> None:
    raw = bytearray(os.urandom(8 * _POOL))
    raw[0::8] = raw[0::8].translate(_VARIANT)
    h = raw.hex()
    _tails.extend([f"-{h[i : i + 4]}-{h[i + 4 : i + 16]}" for i in range(0, 16 * _POOL, 16)])


def _refill_starts() -> None:
    # A random start below 2048 leaves the counter at least 2048 steps.
    _starts.extend([w & 0x7FF for w in array("H", os.urandom(2 * _POOL))])


def _forget_after_fork() -> None:
    """In a forked child: the parent's unused random bits would repeat there."""
    global _lock
    _lock = threading.Lock()  # the parent may have held it while forking
    _tails.clear()
    _starts.clear()


os.register_at_fork(after_in_child=_forget_after_fork)


def _advance(ms: int) -> None:
    """A new millisecond, or the counter ran out (or the clock stepped back
    that far): call with _lock held."""
    global _last_ms, _counter, _prefix
    if ms > _last_ms:
        _last_ms = ms
        if not _starts:
            _refill_starts()
        _counter = _starts.pop()
    else:
        _last_ms += 1  # borrow the next millisecond: ids never go backwards
        _counter = 0
    t = f"{_last_ms & 0xFFFFFFFFFFFF:012x}"
    _prefix = f"{t[:8]}-{t[8:]}-7"


def uuid7() -> str:
    """A new UUID v7 in its canonical 36-character text form."""
    global _counter
    with _lock:
        ms = time.time_ns() // 1_000_000
        if ms <= _last_ms and _counter < _COUNTER_MAX:
            _counter += 1  # same millisecond (or the clock stepped back)
        else:
            _advance(ms)
        if not _tails:
            _refill()
        return _prefix + _HEX3[_counter] + _tails.pop()


def uuid7_many(n: int) -> list[str]:
    """``n`` new ids, increasing, as ``uuid7()`` would make them one after the
    other: one lock, one clock read, random bits drawn in bulk."""
    global _counter
    out: list[str] = []
    with _lock:
        while len(_tails) < n:
            _refill()
        tails = _tails[len(_tails) - n :] if n > 0 else []
        del _tails[len(_tails) - len(tails) :]
        ms = time.time_ns() // 1_000_000
        done = 0
        while done < n:
            if ms <= _last_ms and _counter < _COUNTER_MAX:
                _counter += 1
            else:
                _advance(ms)
            take = min(n - done, _COUNTER_MAX + 1 - _counter)  # up to the counter's end
            prefix, first = _prefix, _counter
            out += [prefix + _HEX3[first + k] + tails[done + k] for k in range(take)]
            _counter += take - 1
            done += take
    return out
