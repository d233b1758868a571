"""Logs of ``jobsched serve`` people and machines can read: one INFO line per
finished run on ``jobsched.runs`` (``--no-run-log`` leaves it out), and
``--log-format json``: every line one JSON object."""

from __future__ import annotations

import json
import time
from pathlib import Path

from tests.test_server_http import Service, wait_state


def _lines(svc: Service, until: str) -> list[str]:
    end = time.monotonic() + 10
    while time.monotonic() < end and not any(until in line for line in svc.log):
        time.sleep(0.02)
    return list(svc.log)


def test_json_logs_carry_one_run_line_per_finished_run(tmp_path: Path) -> None:
    svc = Service(tmp_path, "--log-format", "json", "--log-level", "INFO", db="")
    try:
        _, ok = svc.request("POST", "/v1/jobs", {"task": "ok"})
        _, boom = svc.request("POST", "/v1/jobs", {"task": "boom", "max_attempts": 1})
        wait_state(svc, boom["job_id"], "dead")
        lines = _lines(svc, boom["job_id"])
    finally:
        assert svc.stop() == 0
    records = [json.loads(line) for line in lines if line.startswith("{")]
    assert records and all({"ts", "level", "logger", "message"} <= r.keys() for r in records)
    assert all(r["ts"].endswith("Z") and len(r["ts"]) == 24 for r in records)
    assert not [line for line in lines if line.strip() and not line.startswith(("{", "jobsched: "))]
    runs = {r["job_id"]: r for r in records if r["logger"] == "jobsched.runs"}
    done, failed = runs[ok["job_id"]], runs[boom["job_id"]]
    assert done["level"] == "INFO" and done["outcome"] == "succeeded" and done["task"] == "ok"
    assert done["duration_ms"] >= 0 and done["lateness_ms"] >= 0 and "due_at" in done
    assert done["message"].startswith(f"run {ok['job_id']} (ok) succeeded in ")
    assert failed["outcome"] == "failed" and failed["error"] == "RuntimeError: boom"
    assert len([r for r in records if r["logger"] == "jobsched.runs"]) == 2  # one per run


def test_no_run_log_leaves_the_run_lines_out(tmp_path: Path) -> None:
    svc = Service(tmp_path, "--no-run-log", "--log-level", "INFO", db="")
    try:
        _, ok = svc.request("POST", "/v1/jobs", {"task": "ok"})
        wait_state(svc, ok["job_id"], "completed")
        time.sleep(0.1)
        lines = list(svc.log)
    finally:
        assert svc.stop() == 0
    assert any("jobsched.serve INFO listening" in line for line in lines)  # INFO is on
    assert not [line for line in lines if "jobsched.runs" in line]
