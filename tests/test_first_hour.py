"""What a new user hits in the first hour, through the real command line."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=60
    )


def test_version_flags_print_the_package_version() -> None:
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    for args in (["-m", "jobsched", "--version"], ["main.py", "--version"],
                 ["-m", "jobsched", "serve", "--version"]):  # fmt: skip
        done = run(*args)
        assert done.returncode == 0 and done.stdout.strip().endswith(version), (args, done)


def test_a_wrong_log_level_is_a_clear_usage_error_not_a_traceback() -> None:
    done = run("-m", "jobsched", "node", "--log-level", "LOUD")
    assert done.returncode == 2
    assert "invalid choice: 'LOUD'" in done.stderr and "Traceback" not in done.stderr
    lower = subprocess.run(
        [sys.executable, "main.py", "--log-level", "debug"],
        cwd=ROOT, input='{"src":"c","dest":"n","body":{"type":"init","msg_id":1,'
        '"node_id":"n","node_ids":["n"]}}\n', capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert lower.returncode == 0 and json.loads(lower.stdout)["body"]["type"] == "init_ok"


def test_serve_help_names_the_default_it_really_uses() -> None:
    help_text = " ".join(run("-m", "jobsched", "serve", "--help").stdout.split())
    assert "Default: $JOBSCHED_DB, else jobsched.db" in help_text
    assert "omitted = in memory" not in help_text


def test_serve_without_tasks_refuses_a_task_it_has_no_handler_for(tmp_path: Path) -> None:
    from tests.test_server_http import Service

    svc = Service(tmp_path, tasks_text="")
    try:
        status, reply = svc.request("POST", "/v1/jobs", {"task": "sned-email"})
        assert status == 400 and reply["code"] == 12
        status, _ = svc.request("POST", "/v1/jobs", {"task": "webhook", "delay_ms": 60_000,
                                                     "payload": {"url": "http://127.0.0.1:9/"}})  # fmt: skip
        assert status == 201
    finally:
        assert svc.stop() == 0


def test_the_quick_start_works_from_any_directory_after_pip_install(tmp_path: Path) -> None:
    """pip install into a fresh venv, then the README's service command from a
    directory that is not the repository: the example tasks ship in the package."""
    import os
    import signal
    import urllib.request

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    py = str(venv / "bin" / "python")
    import shutil

    had_build = (ROOT / "build").exists()  # pip builds in the tree; leave it as found
    pip = subprocess.run(
        [py, "-m", "pip", "install", "-v", "--no-deps", str(ROOT)],
        capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    if not had_build:
        shutil.rmtree(ROOT / "build", ignore_errors=True)
    assert pip.returncode == 0, pip.stderr[-3000:]
    # The build says nothing is deprecated in our packaging (the license table was).
    noisy = [
        line
        for line in (pip.stdout + pip.stderr).splitlines()
        if "deprecat" in line.lower() and "license" in line.lower()
    ]
    assert not noisy, noisy
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    check = subprocess.run(
        [py, "-c", "import jobsched; print(jobsched.Client.__name__)"],
        cwd=work, capture_output=True, text=True, timeout=60, env=env,
    )  # fmt: skip
    assert check.stdout.strip() == "Client", check.stderr
    serve = subprocess.Popen(
        [str(venv / "bin" / "jobsched"), "serve", "--tasks", "jobsched.examples.tasks",
         "--db", str(work / "jobsched.db"), "--listen", "127.0.0.1:0"],
        cwd=work, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    try:
        assert serve.stderr is not None
        url = ""
        for line in serve.stderr:
            if line.startswith("jobsched: listening on http://"):
                url = line.split("listening on ")[1].strip()
                break
        assert url, "the service did not start"
        body = json.dumps({"task": "hello", "payload": {"name": "curl"}}).encode()
        with urllib.request.urlopen(urllib.request.Request(url + "/v1/jobs", body)) as resp:
            assert json.loads(resp.read())["type"] == "job_scheduled"
    finally:
        serve.send_signal(signal.SIGTERM)
        assert serve.wait(timeout=30) == 0


def test_a_postgresql_server_that_is_down_is_one_wait_notice_and_one_error() -> None:
    """It used to print a warning every 0.2 s for the whole wait and end with a
    line promising a "next attempt" that never came."""
    done = run("main.py", "--db", "postgresql://postgres@127.0.0.1:1/test")
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 2, lines
    assert "waiting up to" in lines[0]
    assert lines[1].startswith("jobsched: cannot open the store: PostgreSQL at 127.0.0.1:1")
    assert "next attempt" not in done.stderr
