"""The command line: ``jobsched cron`` and the checks ``serve``/``node`` make at start."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from jobsched.cli import main

ROOT = Path(__file__).resolve().parent.parent


def test_cron_prints_occurrences_in_its_zone_and_in_utc(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["cron", "0 9 * * MON-FRI", "--tz", "Europe/Paris", "-n", "3"]
    assert main([*argv, "--after", "2024-03-29T00:00:00Z"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1:] == [
        "Fri 2024-03-29 09:00:00 +0100 (Europe/Paris)   2024-03-29T08:00:00.000Z",
        "Mon 2024-04-01 09:00:00 +0200 (Europe/Paris)   2024-04-01T07:00:00.000Z",
        "Tue 2024-04-02 09:00:00 +0200 (Europe/Paris)   2024-04-02T07:00:00.000Z",
    ]


def test_cron_shows_the_dst_gap_rule(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["cron", "30 2 * * *", "--tz", "Europe/Berlin", "-n", "2"]
    assert main([*argv, "--after", "2024-03-30T00:00:00Z"]) == 0
    out = capsys.readouterr().out
    assert "Sun 2024-03-31 03:00:00 +0200 (Europe/Berlin)   2024-03-31T01:00:00.000Z" in out


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["cron", "0 0 30 2 *"], "never fire"),
        (["cron", "* * * *"], "cron"),
        (["cron", "* * * * *", "--tz", "Mars/Base"], "timezone"),
    ],
)
def test_cron_refuses_bad_input(
    argv: list[str], words: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    assert words in capsys.readouterr().err


def test_unknown_command_and_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["frob"]) == 2
    assert main([]) == 0
    assert "jobsched serve" in capsys.readouterr().out


def test_a_task_module_that_fails_to_import_stops_the_start(tmp_path: Path) -> None:
    bad = tmp_path / "bad_tasks.py"
    bad.write_text("raise RuntimeError('broken module')\n")
    proc = subprocess.run(
        [sys.executable, str(ROOT / "main.py"), "--tasks", str(bad)],
        input=b"",
        capture_output=True,
        timeout=60,
    )
    assert proc.returncode == 2 and b"broken module" in proc.stderr


def test_serve_refuses_a_bad_listen_address(tmp_path: Path) -> None:
    argv = ["-m", "jobsched", "serve", "--db", str(tmp_path / "j.db"), "--listen", "nowhere"]
    proc = subprocess.run([sys.executable, *argv], capture_output=True, timeout=60, cwd=ROOT)
    assert proc.returncode == 2 and b"HOST:PORT" in proc.stderr
