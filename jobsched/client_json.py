"""What the Python client can send: the values JSON cannot carry, found and
named before or after a call, so that every target refuses them alike.

A store reached directly and a service reached over HTTP each fail on such a
value their own way (the service's encoder cannot send it; a store refuses
it with its own text, or meets another error first): ``json_problem`` gives
the one error every target answers, naming the field, and where in a payload.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Mapping
from itertools import chain
from typing import Any

from jobsched.client_types import SPEC_FIELDS, InvalidArgument
from jobsched.jsonfast import MAX_DEPTH

#: The protocol's own text for a field nesting deeper than it takes.
_DEEP = f"is nested more than {MAX_DEPTH} levels deep (arrays and objects)"
_SPEC_FIELD_NAMES = frozenset(SPEC_FIELDS)


def json_problem(body: Mapping[str, Any]) -> InvalidArgument | None:
    """The error for the first value of a request ``body`` that JSON cannot
    carry, naming its field (``payload``, ``jobs[3].delay_ms``); None if
    there is none. It is refused as ``json.dumps`` refuses it: NaN or an
    infinity, a set or any other object, a key that is not a string or a
    number, an integer with more digits than Python writes, or (in the
    protocol's text) nesting deeper than MAX_DEPTH, which is also how a
    walk through a value that contains itself ends.

    Every target must answer such a value alike, but each fails on it its own
    way: the service's encoder cannot send it, and a store refuses it with its
    own text, or meets another error first. ``Client._call`` looks for one only
    once a call has failed, so that a call that succeeds costs nothing more."""
    for name, value in body.items():
        if name == "jobs" and type(value) is list:
            found = _specs_problem(value)
        else:
            found = _refusal(name, name, _problem(value, MAX_DEPTH))
        if found is not None:
            return found
    return None


def batch_json_problem(jobs: list[Mapping[str, Any]]) -> InvalidArgument | None:
    """``json_problem`` of a batch about to be sent, when a spec has a field
    that is not a ``JobSpec`` one (else None at once). The protocol ignores a
    field it does not know: a store would take a value there that JSON cannot
    carry, and the service would never be sent it."""
    if _SPEC_FIELD_NAMES.issuperset(chain.from_iterable(jobs)):
        return None  # the protocol reads every field, and refuses a bad value
    return _specs_problem(jobs)


def _specs_problem(specs: list[Any]) -> InvalidArgument | None:
    """``json_problem`` of a batch: a spec's field is ``jobs[7].field``, and
    nesting is counted from ``jobs``, which is the first level as the protocol
    counts it (each spec is the second)."""
    for i, spec in enumerate(specs):
        if type(spec) is not dict:
            found = _refusal(f"jobs[{i}]", "jobs", _problem(spec, MAX_DEPTH - 1))
            if found is not None:
                return found
            continue
        for key, value in spec.items():
            bad_key = _key_problem(key)
            if bad_key is not None:
                return InvalidArgument(f"jobs[{i}]", bad_key)
            found = _refusal(f"jobs[{i}].{key}", "jobs", _problem(value, MAX_DEPTH - 2))
            if found is not None:
                return found
    return None


def _refusal(name: str, top: str, found: tuple[str, str] | None) -> InvalidArgument | None:
    if found is None:
        return None
    where, problem = found
    if problem == _DEEP:
        return InvalidArgument(top, _DEEP)  # the protocol names the whole field
    return InvalidArgument(name, f"{where} {problem}" if where else problem)


def _problem(value: Any, room: int) -> tuple[str, str] | None:
    """Where in ``value`` (``['x'][0]``, "" for itself) and what JSON cannot
    carry, checked as the C encoder checks it; None if nothing. ``room``: how
    many more arrays and objects may nest (bounding the walk as well)."""
    if isinstance(value, str) or value is None or isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        problem = _number_problem(value)
        return None if problem is None else ("", problem)
    if isinstance(value, dict):
        if room < 1:
            return "", _DEEP
        for key, item in value.items():
            bad_key = _key_problem(key)
            if bad_key is not None:
                return "", bad_key
            found = _problem(item, room - 1)
            if found is not None:
                return f"[{_shown(key)}]{found[0]}", found[1]
        return None
    if isinstance(value, list | tuple):
        if room < 1:
            return "", _DEEP
        for index, item in enumerate(value):
            found = _problem(item, room - 1)
            if found is not None:
                return f"[{index}]{found[0]}", found[1]
        return None
    return "", f"must be a dict, list, str, int, float, bool or None (JSON), not {a_type(value)}"


def a_type(value: object) -> str:
    """What type a value is, for an error text: "a set", "an int"."""
    what = type(value).__name__
    return f"{'an' if what[:1] in 'aeiouAEIOU' else 'a'} {what}"


def _key_problem(key: Any) -> str | None:
    """What is wrong with a dict key for JSON (which writes a number's as text)."""
    if isinstance(key, str) or key is None or isinstance(key, bool):
        return None
    if isinstance(key, int | float):
        problem = _number_problem(key)
        return None if problem is None else f"has a key that {problem}"
    kind = a_type(key)
    return f"has a key {_shown(key)}, {kind}: JSON keys must be str, int, float, bool or None"


def _number_problem(value: int | float) -> str | None:
    if isinstance(value, float):
        return None if math.isfinite(value) else f"must be a finite number, not {value!r}"
    try:
        int.__repr__(value)  # what the encoder writes; past sys.get_int_max_str_digits() it fails
    except ValueError:
        digits = int(value.bit_length() * math.log10(2))
        limit = sys.get_int_max_str_digits()
        return f"must have at most {limit} digits (sys.get_int_max_str_digits()), not {digits}"
    return None


def _shown(value: Any) -> str:
    """A key for an error text: repr, cut short."""
    try:
        shown = repr(value)
    except Exception:  # an int too long to write, or a broken __repr__
        return "(whose repr fails)"
    return shown if len(shown) <= 40 else f"{shown[:37]}..."
