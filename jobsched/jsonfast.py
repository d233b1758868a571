"""JSON in and out through the C accelerators, bound once.

``json.dumps``/``json.loads`` rebuild an encoder or walk Python-level
wrappers on every call; on a line protocol that is a large share of the time
per request. These build the C encoder and scanner once with the exact
settings of ``json.dumps`` (default separators) and of compact JSON.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from json.encoder import c_make_encoder as _c_make_encoder  # type: ignore[attr-defined]
from json.scanner import make_scanner as _make_scanner
from typing import Any

# None on interpreters without the C accelerators; then json's own paths serve.
_make_encoder: Any = _c_make_encoder


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _encoder(item_sep: str, key_sep: str, ascii_only: bool) -> Callable[[Any], str]:
    if _make_encoder is None:  # pragma: no cover
        enc = json.JSONEncoder(separators=(item_sep, key_sep), ensure_ascii=ascii_only)
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
        False,
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

_decoder = json.JSONDecoder(parse_constant=_no_constants)
_scan: Any = _make_scanner(_decoder) if _make_encoder is not None else None  # type: ignore[arg-type]
_WS = " \t\n\r"


def loads(text: str) -> Any:
    """``json.loads`` that refuses NaN and Infinity, via the C scanner."""
    if _scan is None:  # pragma: no cover
        return _decoder.decode(text)
    start = len(text) - len(text.lstrip(_WS))
    try:
        obj, end = _scan(text, start)
    except StopIteration as exc:
        raise ValueError(f"Expecting value at char {exc.value}") from None
    if text[end:].strip(_WS):
        raise ValueError(f"extra data at char {end}")
    return obj
