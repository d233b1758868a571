"""End to end: the real ``main.py`` in a subprocess."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time

from tests.harness import ROOT, NodeProcess, run_lines

# The two reference samples of SPEC section 1, verbatim.
SAMPLES = [
    (
        '{"src":"client","dest":"scheduler","body":{"type":"schedule_job","msg_id":1,"task":"send-email","payload":{"to":"user@example.com"},"delay_ms":60000}}',
        '{"type": "job_scheduled", "in_reply_to": 1, "job_id": ".*", "scheduled_at": ".*"}',
    ),
    (
        '{"src":"client","dest":"scheduler","body":{"type":"schedule_job","msg_id":1,"task":"cleanup","cron":"0 0 * * *","payload":{"days":30}}}',
        '{"type": "job_scheduled", "in_reply_to": 1, "job_id": ".*", "next_run": ".*"}',
    ),
]
ISO_OUT = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z")


def test_reference_samples_field_by_field_and_as_text() -> None:
    for request, expected in SAMPLES:
        out, err, code = run_lines([request])
        assert code == 0, err
        assert len(out) == 1
        # As text: the expected line, read as a regex, is found in the raw output.
        assert re.search(expected, out[0]), out[0]
        reply = json.loads(out[0])
        assert list(reply) == ["src", "dest", "body"]
        assert (reply["src"], reply["dest"]) == ("scheduler", "client")
        want = json.loads(expected)
        body = reply["body"]
        assert list(body) == list(want)
        for key, value in want.items():
            assert re.fullmatch(value, body[key]) if value == ".*" else body[key] == value
        time_field = list(want)[-1]
        assert ISO_OUT.fullmatch(body[time_field])


def test_cron_sample_next_run_is_the_next_midnight_utc() -> None:
    req = json.loads(SAMPLES[1][0])
    req["body"]["current_time"] = "2024-01-15T09:00:00Z"
    out, _, _ = run_lines([json.dumps(req)])
    assert json.loads(out[0])["body"]["next_run"] == "2024-01-16T00:00:00.000Z"


def test_a_whole_session_through_one_process() -> None:
    node = NodeProcess()
    try:
        t = "2024-01-15T09:00:00Z"
        a = node.send(
            {"type": "schedule_job", "msg_id": 1, "task": "a", "delay_ms": 1000, "current_time": t}
        )
        b = node.send(
            {
                "type": "schedule_job",
                "msg_id": 2,
                "task": "b",
                "cron": "*/15 * * * *",
                "current_time": t,
            }
        )
        assert b["next_run"] == "2024-01-15T09:15:00.000Z"
        ran = node.send(
            {"type": "execute_jobs", "msg_id": 3, "current_time": "2024-01-15T09:20:00Z"}
        )
        assert ran["jobs"] == [a["job_id"], b["job_id"]] and ran["count"] == 2
        job_b = node.send({"type": "get_job", "msg_id": 4, "job_id": b["job_id"]})["job"]
        assert job_b["due_at"] == "2024-01-15T09:30:00.000Z" and job_b["runs"] == 1
        failed = node.send(
            {"type": "execute_job", "msg_id": 5, "job_id": b["job_id"], "force_fail": True}
        )
        assert failed == {
            "type": "job_failed",
            "in_reply_to": 5,
            "job_id": b["job_id"],
            "retry_scheduled": True,
            "backoff_ms": 2000,
        }
        assert (
            node.send({"type": "pause_job", "msg_id": 6, "job_id": b["job_id"]})["type"]
            == "job_paused"
        )
        assert (
            node.send({"type": "cancel_job", "msg_id": 7, "job_id": b["job_id"]})["type"]
            == "job_cancelled"
        )
        stats = node.send({"type": "stats", "msg_id": 8})
        assert (
            stats["jobs"]["completed"] == 1
            and stats["jobs"]["cancelled"] == 1
            and stats["total"] == 2
        )
        listed = node.send({"type": "list_jobs", "msg_id": 9, "state": "completed"})
        assert [j["job_id"] for j in listed["jobs"]] == [a["job_id"]]
        assert node.send({"type": "nope", "msg_id": 10})["code"] == 10
        assert node.close() == 0
    finally:
        node.proc.kill()


def test_stdout_has_protocol_lines_only_and_eof_exits_zero() -> None:
    lines = [
        "",
        "   ",
        '{"type": "stats"}',
        "garbage",
        '{"src":"c","dest":"s","body":{"type":"stats","msg_id":2}}',
    ]
    out, _err, code = run_lines(lines, "--log-level", "DEBUG")
    assert code == 0
    assert len(out) == 3  # blank lines get no answer
    for line in out:
        json.loads(line)


def test_last_line_without_newline_is_answered() -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "main.py")],
        input=b'{"type": "stats", "msg_id": 1}',
        capture_output=True,
        timeout=30,
    )
    assert proc.returncode == 0
    assert json.loads(proc.stdout)["type"] == "stats"


def test_invalid_utf8_gets_a_bare_12_and_the_node_goes_on() -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "main.py")],
        input=b'\xff\xfe{"type"}\n{"type": "stats", "msg_id": 2}\n',
        capture_output=True,
        timeout=30,
    )
    first, second = proc.stdout.decode().splitlines()
    assert json.loads(first)["code"] == 12
    assert json.loads(second)["in_reply_to"] == 2


def test_sigterm_exits_zero_after_answering_what_it_read() -> None:
    node = NodeProcess()
    try:
        assert node.send({"type": "stats", "msg_id": 1})["type"] == "stats"
        node.proc.send_signal(signal.SIGTERM)
        assert node.proc.wait(timeout=10) == 0
    finally:
        node.proc.kill()


def test_sigterm_answers_a_last_line_without_its_newline_as_eof_does() -> None:
    node = NodeProcess()
    try:
        assert node.proc.stdin is not None and node.proc.stdout is not None
        assert node.send({"type": "stats", "msg_id": 1})["type"] == "stats"
        node.proc.stdin.write(b'{"type": "stats", "msg_id": 2}')  # no newline
        node.proc.stdin.flush()
        time.sleep(0.3)  # read by the node, waiting for its newline
        node.proc.send_signal(signal.SIGTERM)
        assert json.loads(node.proc.stdout.readline())["in_reply_to"] == 2
        assert node.proc.wait(timeout=10) == 0
    finally:
        node.proc.kill()


def test_pipelined_requests_are_answered_in_order() -> None:
    lines = [
        json.dumps(
            {
                "src": "c",
                "dest": "s",
                "body": {"type": "schedule_job", "msg_id": i, "task": "t", "delay_ms": i},
            }
        )
        for i in range(5000)
    ]
    start = time.monotonic()
    out, err, code = run_lines(lines)
    assert code == 0, err
    assert [json.loads(line)["body"]["in_reply_to"] for line in out] == list(range(5000))
    assert time.monotonic() - start < 60


def test_help_lists_the_flags() -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "main.py"), "--help"], capture_output=True, timeout=30
    )
    assert proc.returncode == 0 and b"--db" in proc.stdout


def test_a_recurring_job_s_last_failure_leaves_the_node_up() -> None:
    """A differential run found it: on the memory store a recurring job whose
    manual run failed for the last time (due again at the same occurrence)
    made the node exit 1 without a reply, every job lost."""
    at = "2024-01-15T09:00:00Z"
    lines = [
        json.dumps({"type": "schedule_job", "msg_id": 1, "task": "t", "job_id": "a",
                    "interval_ms": 60000, "max_attempts": 1, "current_time": at}),
        json.dumps({"type": "execute_job", "msg_id": 2, "job_id": "a", "force_fail": True,
                    "current_time": at}),
        json.dumps({"type": "execute_jobs", "msg_id": 3, "current_time": "2024-01-15T09:01:00Z"}),
    ]  # fmt: skip
    out, err, code = run_lines(lines)
    assert code == 0, err
    replies = [json.loads(line) for line in out]
    assert [r["type"] for r in replies] == ["job_scheduled", "job_failed", "jobs_executed"]
    assert replies[1]["retry_scheduled"] is False and replies[2]["jobs"] == ["a"]
