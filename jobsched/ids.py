"""Job ids: UUID version 7 (RFC 9562), time-ordered, from the standard library.

A v7 id starts with the millisecond timestamp, so ids sort in creation order
and index well in a B-tree; the rest is random, so ids stay unique across
restarts and across nodes without coordination. Within one process, ids made in
the same millisecond are kept increasing by a counter in the random bits.
"""

from __future__ import annotations

import os
import threading
import time

_lock = threading.Lock()
_last_ms = 0
_counter = 0


def uuid7() -> str:
    """A new UUID v7 in its canonical 36-character text form."""
    global _last_ms, _counter
    rand = int.from_bytes(os.urandom(10), "big")
    with _lock:
        ms = time.time_ns() // 1_000_000
        if ms > _last_ms:
            _last_ms = ms
            # 12-bit counter seeded low with random bits, leaving room to count up
            _counter = rand >> 69
        else:
            # Same millisecond (or the clock stepped back): keep ids increasing.
            _counter += 1
            if _counter > 0xFFF:
                _last_ms += 1
                _counter = 0
        ms, counter = _last_ms, _counter
    high = (ms & 0xFFFFFFFFFFFF) << 16 | 0x7000 | counter  # 48-bit time, version, counter
    low = 0x8000000000000000 | (rand & 0x3FFFFFFFFFFFFFFF)  # variant 10, 62 random bits
    h = f"{high:016x}{low:016x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
