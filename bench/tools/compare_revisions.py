"""Run one bench script against two revisions of jobsched, alternating, in one run.

    .venv/bin/python bench/tools/compare_revisions.py BASE [--rounds 3] -- SCRIPT [ARGS...]

BASE is any git revision (e.g. the previous landed commit). The script and the
rest of bench/ are taken from the working tree for both sides, so the same
measuring code runs against the old and the new jobsched; only the package and
main.py differ. Rounds alternate (base, current, base, current, ...) so that a
change in the machine's load hits both sides alike. Each run's output is
printed under a header; compare the figures side by side.

The base revision is checked out into a temporary git worktree, removed at the end.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _worktree(rev: str, where: Path) -> None:
    subprocess.run(
        ["git", "-C", str(ROOT), "worktree", "add", "--detach", "-f", str(where), rev],
        check=True,
        capture_output=True,
    )
    # The measuring code is the working tree's, for both sides.
    shutil.rmtree(where / "bench", ignore_errors=True)
    shutil.copytree(ROOT / "bench", where / "bench", ignore=shutil.ignore_patterns("__pycache__"))


def _run(tree: Path, script: str, args: list[str]) -> str:
    proc = subprocess.run(
        [sys.executable, str(tree / "bench" / script), *args],
        cwd=tree,
        capture_output=True,
        text=True,
    )
    out = proc.stdout
    if proc.returncode != 0:
        out += f"\n[exit {proc.returncode}]\n{proc.stderr[-2000:]}"
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("base", help="git revision to compare against")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("script", help="a script under bench/, e.g. node_bench.py")
    p.add_argument("args", nargs=argparse.REMAINDER)
    ns = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="jobsched-base-") as tmp:
        base = Path(tmp) / "base"
        try:
            _worktree(ns.base, base)
            for i in range(1, ns.rounds + 1):
                for label, tree in ((f"base {ns.base}", base), ("current", ROOT)):
                    print(f"===== round {i}: {label} =====", flush=True)
                    print(_run(tree, ns.script, ns.args), flush=True)
        finally:
            subprocess.run(
                ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(base)],
                capture_output=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
