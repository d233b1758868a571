"""JSON in and out through the C accelerators, bound once.

``json.dumps``/``json.loads`` rebuild an encoder or walk Python-level
wrappers on every call; on a line protocol that is a large share of the time
per request. These build the C encoder and scanner once with the exact
settings of ``json.dumps`` (default separators) and of compact JSON.

What JSON can write but jobsched could not answer is refused here, at decode
time, before anything runs: ``NaN``/``Infinity`` and numbers a double cannot
hold (``1e400`` would decode to infinity, which no reply can encode). How
deeply a value nests is bounded by the callers with ``too_deep``.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from json.encoder import c_make_encoder as _c_make_encoder  # type: ignore[attr-defined]
from json.scanner import make_scanner as _make_scanner
from typing import Any

# None on interpreters without the C accelerators; then json's own paths serve.
_make_encoder: Any = _c_make_encoder


#: How many arrays/objects a value may nest (a scalar is 0, ``[]`` is 1).
MAX_DEPTH = 64


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if value - value != 0.0:  # inf - inf and nan - nan are nan; a finite x - x is 0
        raise ValueError(f"the number {text[:40]} is out of range: numbers must be finite")
    return value


def _encoder(
    item_sep: str, key_sep: str, ascii_only: bool, sort_keys: bool = False
) -> Callable[[Any], str]:
    if _make_encoder is None:  # pragma: no cover
        enc = json.JSONEncoder(
            separators=(item_sep, key_sep), ensure_ascii=ascii_only, sort_keys=sort_keys
        )
        return enc.encode
    from json.encoder import encode_basestring, encode_basestring_ascii

    def default(obj: Any) -> Any:
        raise TypeError(f"{type(obj).__name__} is not JSON serializable")

    c_encode = _make_encoder(
        None,  # no circular check: everything encoded came from JSON or from us
        default,
        encode_basestring_ascii if ascii_only else encode_basestring,
        None,
        key_sep,
        item_sep,
        sort_keys,
        False,
        False,  # allow_nan=False: NaN and Infinity are not JSON
    )

    def encode(obj: Any) -> str:
        return "".join(c_encode(obj, 0))

    return encode


#: Exactly ``json.dumps(obj)``: the wire format of replies.
dumps = _encoder(", ", ": ", True)
#: Compact UTF-8 JSON: how payloads are measured and stored.
dumps_compact = _encoder(",", ":", False)
#: Compact, non-ASCII escaped: for payloads that are not valid UTF-8 (lone surrogates).
dumps_compact_ascii = _encoder(",", ":", True)
#: Compact, non-ASCII escaped, keys sorted: one text for every key order (idempotency).
dumps_canonical = _encoder(",", ":", True, sort_keys=True)

_decoder = json.JSONDecoder(parse_constant=_no_constants, parse_float=_finite_float)
_scan: Any = _make_scanner(_decoder) if _make_encoder is not None else None  # type: ignore[arg-type]
_WS = " \t\n\r"
_WS_FIRST = frozenset(_WS)


def loads(text: str) -> Any:
    """``json.loads`` that refuses NaN, Infinity and non-finite numbers, via the
    C scanner. ValueError for anything it refuses, including text nested too
    deeply for the interpreter's stack to decode."""
    if _scan is None:  # pragma: no cover
        return _decoder.decode(text)
    # Most lines start with "{": only then is the text's start worth a copy.
    start = len(text) - len(text.lstrip(_WS)) if text[:1] in _WS_FIRST else 0
    try:
        obj, end = _scan(text, start)
    except StopIteration as exc:
        raise ValueError(f"Expecting value at char {exc.value}") from None
    except RecursionError:
        raise ValueError("arrays and objects nested too deeply to decode") from None
    except ValueError as exc:
        if "integer string conversion" not in str(exc):
            raise
        # Python's own text names sys.set_int_max_str_digits: not the sender's business.
        digits = sys.get_int_max_str_digits()
        raise ValueError(f"an integer has more than {digits} digits") from None
    if text[end:].strip(_WS):
        raise ValueError(f"extra data at char {end}")
    return obj


def too_deep(value: Any, limit: int = MAX_DEPTH) -> bool:
    """Does ``value`` nest more than ``limit`` arrays/objects? Iterative: it
    must answer for values too deep for a recursive walk."""
    if type(value) is not list and type(value) is not dict:
        return False
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        container, depth = stack.pop()
        items = container.values() if type(container) is dict else container
        for item in items:
            if type(item) is list or type(item) is dict:
                if depth >= limit:
                    return True
                stack.append((item, depth + 1))
    return False


def may_be_too_deep(text: str, limit: int = MAX_DEPTH) -> bool:
    """A cheap test before ``too_deep``: a text with at most ``limit`` opening
    brackets (strings' too) cannot nest deeper than that."""
    return text.count("[") + text.count("{") > limit
