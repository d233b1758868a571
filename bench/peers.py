"""The peer libraries the benchmarks measure us against, imported only if installed.

A missing peer is not an error: the script prints one line saying which package is
missing and how to install it, skips that peer's rows and still measures ours. The
peers are the `bench` extra of pyproject.toml; CI installs only `test` (which has
croniter and cronsim), so the smoke test (tests/test_bench_smoke.py) runs without
APScheduler, SQLAlchemy and Procrastinate.

It also holds what several scripts share: the argument type of their sizes
(``positive``), a process's resident memory (``rss_self``), and a measurement run
in a fresh child process of the script (``in_child``).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, version
from types import ModuleType
from typing import Any

INSTALL = (
    "make bench-deps, or .venv/bin/pip install 'apscheduler<4' sqlalchemy procrastinate"
    " croniter cronsim"
)


def peer(module: str, package: str, major: str | None = None) -> ModuleType | None:
    """`module` imported, or None after one line on stdout saying what to install.

    `major`: the version prefix we compare against (APScheduler 4 is another API)."""
    try:
        found = importlib.import_module(module)
    except ImportError as exc:
        lacking = "" if exc.name in (None, module) else f" (it needs {exc.name})"
        missing(f"{package} is not installed{lacking}")
        return None
    if major is not None and not installed(package).startswith(major):
        missing(f"{package} {installed(package)} is installed, {major}x is needed")
        return None
    return found


def missing(why: str) -> None:
    print(f"peer skipped: {why}, so its figures are left out; install: {INSTALL}", flush=True)


def installed(package: str) -> str:
    try:
        return version(package)
    except PackageNotFoundError:
        return "?"


def positive(text: str) -> int:
    """An argparse type: a size of at least 1 (smaller sizes crashed the scripts)."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def rss_self() -> int:
    """This process's resident memory in bytes (Linux)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def in_child(script: str, kind: str, n: int) -> dict[str, Any]:
    """Run ``script --child KIND N`` in a fresh interpreter; its last stdout
    line is the measurement, as JSON (a fresh process: memory figures start clean)."""
    out = subprocess.run(
        [sys.executable, script, "--child", kind, str(n)],
        check=True,
        capture_output=True,
        text=True,
    )
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result
