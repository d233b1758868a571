"""Every bench/ script runs: it exits 0, prints a figure, and leaves nothing behind.

Each script runs in a subprocess, in its --quick mode where that takes a few seconds
and in its --smoke mode (tiny sizes: it only proves the script runs) where --quick
takes longer; and, if it compares with a peer library, once more in --smoke mode with
the peers made unimportable, as in CI, where only the `test` extra is installed
(croniter and cronsim, but not APScheduler, SQLAlchemy or Procrastinate). Timing figures are
printed by the scripts, never asserted here. postgres_bench and queues_bench need the
server: when it is unreachable the script exits 2 and the test fails (PostgreSQL
tests never skip); the databases they create must be gone afterwards.
"""

from __future__ import annotations

import importlib.util
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.backend_postgres import admin, base_dsn

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
TIMEOUT_S = 60

# The mode each script runs in, and the peers whose figures it prints.
SCRIPTS = {
    "cron_bench.py": ("--quick", ("croniter", "cronsim")),
    "catchup_bench.py": ("--quick", ("apscheduler",)),
    "sqlite_bench.py": ("--smoke", ("apscheduler", "sqlalchemy")),  # --quick: ~10 s
    "node_bench.py": ("--smoke", ("apscheduler",)),  # --quick: ~10 s
    "dispatch_bench.py": ("--smoke", ("apscheduler", "sqlalchemy")),  # --quick: ~10 s
    "postgres_bench.py": ("--smoke", ("procrastinate",)),  # --quick: 20-40 s
    "dashboard_bench.py": ("--quick", ()),  # no peer: once is enough
    "client_bench.py": ("--smoke", ("apscheduler", "sqlalchemy")),  # --quick: ~15 s
    "http_bench.py": ("--smoke", ()),  # no peer (ab is optional); --quick: ~20 s
    "queues_bench.py": ("--smoke", ()),  # no peer; --quick: 20-60 s
    "memory_bench.py": ("--smoke", ("apscheduler",)),  # --quick: 100,000 jobs
    "batch_bench.py": ("--smoke", ()),  # no peer; --quick: ~10 s
}
# The scripts that create databases on the PostgreSQL server (all must be gone after).
ON_POSTGRES = ("postgres_bench.py", "queues_bench.py")
PEERS = ("apscheduler", "sqlalchemy", "procrastinate", "croniter", "cronsim")
# Modules of bench/ that are not scripts: what the scripts import.
HELPERS = {"peers.py", "pg_common.py"}

# Runs a script (argv[1]) as __main__ with the peers unimportable.
WITHOUT_PEERS = f"""
import os, runpy, sys

class Hide:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in {PEERS!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        return None

sys.meta_path.insert(0, Hide())
sys.argv = sys.argv[1:]
sys.path[0] = os.path.dirname(sys.argv[0])
runpy.run_path(sys.argv[0], run_name="__main__")
"""

RATIO = re.compile(r"\d\.?\d*x\b")
# A number with a unit, or a number alone in a table cell (microseconds per call).
FIGURE = re.compile(r"\d[\d,]*(\.\d+)? ?(/s|ms|us|s|B/job)\b|\|\s*\d[\d,]*\.\d+\s*\|")


def entries() -> set[Path]:
    """What a script could leave in the repository: top-level entries and bench/."""
    found = set(ROOT.iterdir()) | set(BENCH.rglob("*"))
    return {p for p in found if "__pycache__" not in p.parts}


def run(script: str, mode: str, peers: bool, tmp_path: Path) -> tuple[str, int]:
    """Run the script; assert it exits 0 and leaves no file; return its output and pid."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env = {**os.environ, "TMPDIR": str(tmp), "JOBSCHED_BENCH_PG": base_dsn()}
    env.pop("BENCH_TMP", None)
    path = str(BENCH / script)
    cmd = (
        [sys.executable, path, mode] if peers else [sys.executable, "-c", WITHOUT_PEERS, path, mode]
    )
    before = entries()
    proc = subprocess.Popen(
        cmd,
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group: a timeout ends its children too
    )
    try:
        out, _ = proc.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail(f"{script} {mode} ran over {TIMEOUT_S} s:\n{out}")
    assert proc.returncode == 0, out
    assert entries() == before, f"left in the repository: {entries() - before}"
    assert not list(tmp.iterdir()), f"left in the temp dir: {list(tmp.iterdir())}"
    assert FIGURE.search(out), out
    return out, proc.pid


def installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_runs_with_the_peers_installed(script: str, tmp_path: Path) -> None:
    mode, peers = SCRIPTS[script]
    out, pid = run(script, mode, True, tmp_path)
    if all(installed(p) for p in peers):
        assert not peers or RATIO.search(out), out
        assert "peer skipped" not in out, out
    else:  # CI: the scripts say what is missing and measure ours
        assert "peer skipped" in out, out
    if script in ON_POSTGRES:
        assert_databases_gone(pid)


@pytest.mark.parametrize("script", sorted(s for s, (_, peers) in SCRIPTS.items() if peers))
def test_runs_without_the_peers(script: str, tmp_path: Path) -> None:
    out, pid = run(script, "--smoke", False, tmp_path)
    lines = [line for line in out.splitlines() if line.startswith("peer skipped: ")]
    assert lines, out
    assert all("install" in line and "pip install" in line for line in lines), lines
    assert "Traceback" not in out, out
    if script in ON_POSTGRES:
        assert_databases_gone(pid)


def assert_databases_gone(pid: int) -> None:
    with admin() as db:
        rows = db.execute(
            "SELECT datname FROM pg_database WHERE datname LIKE %s", (f"%_bench_{pid}",)
        ).fetchall()
    assert rows == [], rows


def test_every_script_is_covered() -> None:
    scripts = {p.name for p in BENCH.glob("*.py")} - HELPERS
    assert scripts == set(SCRIPTS)
