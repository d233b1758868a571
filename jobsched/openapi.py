"""The OpenAPI 3.1 description of ``jobsched serve``, served at ``GET /v1/openapi.json``.

One Python dict, built once: every route of ``server.Service`` and of the
dashboard (``web.routes``). tests/test_openapi.py fails when a route exists
that this document does not describe, validates the document, and checks real
responses against its schemas. Job fields are the protocol's (docs/protocol.md);
the schemas name the fields clients rely on and allow more, so a new field is
not a breaking change.
"""

from __future__ import annotations

import json
from functools import cache
from typing import Any

from jobsched.version import __version__

Schema = dict[str, Any]


def _ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: Schema, description: str) -> Schema:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*statuses: int) -> dict[str, Schema]:
    text = {400: "malformed request (code 12)", 401: "no valid token", 404: "no such job or route",
            405: "method not allowed", 409: "conflict (codes 21, 22)",
            503: "storage unavailable (code 11)"}  # fmt: skip
    return {str(s): _json(_ref("Error"), text[s]) for s in (401, *statuses)}


def _op(summary: str, ok: dict[str, Schema], *errors: int, **extra: Any) -> Schema:
    return {"summary": summary, "responses": {**ok, **_errors(*errors)}, **extra}


def _body(schema: Schema) -> Schema:
    return {"required": True, "content": {"application/json": {"schema": schema}}}


JOB_ID = {"name": "job_id", "in": "path", "required": True, "schema": {"type": "string"}}


def _query(name: str, kind: str = "string") -> Schema:
    return {"name": name, "in": "query", "required": False, "schema": {"type": kind}}


SCHEMAS: dict[str, Schema] = {
    "Error": {
        "type": "object",
        "required": ["type", "code", "text"],
        "properties": {
            "type": {"const": "error"},
            "code": {"type": "integer"},
            "text": {"type": "string"},
        },
    },
    "JobSpec": {
        "type": "object",
        "required": ["task"],
        "description": "the fields of schedule_job (docs/protocol.md)",
        "properties": {
            "task": {"type": "string"},
            "payload": {},
            "job_id": {"type": "string"},
            "delay_ms": {"type": "integer"},
            "run_at": {"type": ["integer", "string"]},
            "cron": {"type": "string"},
            "interval_ms": {"type": "integer"},
            "timezone": {"type": "string"},
            "max_attempts": {"type": "integer"},
            "timeout_ms": {"type": "integer"},
        },
    },
    "Reply": {
        "type": "object",
        "required": ["type"],
        "description": "a protocol reply (docs/protocol.md): job_scheduled, job_info, error, ...",
        "properties": {"type": {"type": "string"}},
    },
    "Scheduled": {
        "type": "object",
        "required": ["type", "job_id"],
        "properties": {"type": {"const": "job_scheduled"}, "job_id": {"type": "string"}},
    },
    "ScheduledBatch": {
        "type": "object",
        "required": ["type", "jobs"],
        "properties": {
            "type": {"const": "jobs_scheduled"},
            "jobs": {"type": "array", "items": {"type": "object", "required": ["job_id"]}},
        },
    },
    "Job": {
        "type": "object",
        "required": ["job_id", "task", "state"],
        "properties": {
            "job_id": {"type": "string"},
            "task": {"type": "string"},
            "state": {"type": "string"},
            "payload": {},
        },
    },
    "JobReply": {
        "type": "object",
        "required": ["type", "job"],
        "properties": {"type": {"type": "string"}, "job": _ref("Job")},
    },
    "JobList": {
        "type": "object",
        "required": ["type", "jobs"],
        "properties": {
            "type": {"const": "jobs_listed"},
            "jobs": {"type": "array", "items": _ref("Job")},
        },
    },
    "Queue": {
        "type": "object",
        "required": ["queue", "concurrency", "rate_limit", "paused"],
        "properties": {
            "queue": {"type": "string"},
            "concurrency": {"type": ["integer", "null"]},
            "rate_limit": {"oneOf": [{"type": "null"}, _ref("RateLimit")]},
            "paused": {"type": "boolean"},
            "jobs": {"type": "object", "additionalProperties": {"type": "integer"}},
            "running": {"type": "integer"},
        },
    },
    "RateLimit": {
        "type": "object",
        "required": ["max", "per_ms"],
        "properties": {"max": {"type": "integer"}, "per_ms": {"type": "integer"}},
    },
    "QueueSettings": {
        "type": "object",
        "description": "configure_queue's fields: one left out keeps its setting, null removes "
        "a limit (docs/queues.md)",
        "properties": {
            "concurrency": {"type": ["integer", "null"]},
            "rate_limit": {"oneOf": [{"type": "null"}, _ref("RateLimit")]},
            "paused": {"type": "boolean"},
        },
    },
    "QueueConfigured": {
        "type": "object",
        "required": ["type", "queue"],
        "properties": {"type": {"const": "queue_configured"}, "queue": _ref("Queue")},
    },
    "QueueList": {
        "type": "object",
        "required": ["type", "queues"],
        "properties": {
            "type": {"const": "queues_listed"},
            "queues": {"type": "array", "items": _ref("Queue")},
        },
    },
    "Object": {"type": "object"},
}

QUEUE = {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}

_TEXT = {"description": "text", "content": {"text/plain": {"schema": {"type": "string"}}}}
_HTML = {"description": "the dashboard page", "content": {"text/html": {"schema": {}}}}


def _action(summary: str) -> Schema:
    return {"post": _op(summary, {"200": _json(_ref("Reply"), "the reply")}, 400, 404, 409,
                        parameters=[JOB_ID])}  # fmt: skip


_TEXT_PARAMS = {"expr", "tz", "state", "task", "queue", "after"}


def _dashboard(summary: str, *params: str) -> Schema:
    query = [_query(p, "string" if p in _TEXT_PARAMS else "integer") for p in params]
    ok = {"200": _json(_ref("Object"), summary)}
    return {"get": _op(summary, ok, 400, parameters=query)}


def _paths() -> dict[str, Schema]:
    ok = {"200": _json(_ref("Reply"), "the reply")}
    return {
        "/healthz": {"get": {"summary": "liveness (no token)", "security": [],
                             "responses": {"200": _json(_ref("Object"), "ok"),
                                           "503": _json(_ref("Error"), "storage down")}}},
        "/metrics": {"get": _op("Prometheus metrics", {"200": _TEXT})},
        "/v1/openapi.json": {"get": _op("this document",
                                        {"200": _json(_ref("Object"), "OpenAPI 3.1")})},
        "/v1/messages": {"post": _op("any protocol message (docs/protocol.md)", ok, 400, 404, 409,
                                     503, requestBody=_body(_ref("Object")))},
        "/v1/jobs": {
            "get": _op("list jobs", {"200": _json(_ref("JobList"), "a page of jobs")}, 400,
                       parameters=[_query("state"), _query("task"), _query("queue"),
                                   _query("after"), _query("limit", "integer")]),
            "post": _op("schedule a job (schedule_job)",
                        {"201": _json(_ref("Scheduled"), "scheduled")}, 400, 409, 503,
                        requestBody=_body(_ref("JobSpec"))),
        },
        "/v1/jobs/batch": {"post": _op(
            "schedule jobs, all or nothing (schedule_jobs); an error names the index",
            {"201": _json(_ref("ScheduledBatch"), "scheduled")}, 400, 409, 503,
            requestBody=_body({"oneOf": [
                {"type": "array", "items": _ref("JobSpec")},
                {"type": "object", "required": ["jobs"],
                 "properties": {"jobs": {"type": "array", "items": _ref("JobSpec")}}}]}))},
        "/v1/jobs/{job_id}": {
            "get": _op("a job and its latest runs", {"200": _json(_ref("JobReply"), "the job")},
                       404, parameters=[JOB_ID]),
            "delete": _op("cancel a job", ok, 404, 409, parameters=[JOB_ID]),
        },
        "/v1/jobs/{job_id}/run": _action("run the job now (execute_job)"),
        "/v1/jobs/{job_id}/pause": _action("pause the job"),
        "/v1/jobs/{job_id}/resume": _action("resume a paused job"),
        "/v1/jobs/{job_id}/retry": _action("retry a dead job"),
        "/v1/queues": {"get": _op("every queue with settings or jobs (list_queues)",
                                  {"200": _json(_ref("QueueList"), "the queues")})},
        "/v1/queues/{name}": {"put": _op(
            "set a queue's concurrency, rate limit or pause (configure_queue)",
            {"200": _json(_ref("QueueConfigured"), "its settings now")}, 400, 503,
            parameters=[QUEUE], requestBody=_body(_ref("QueueSettings")))},
        "/v1/events": {"get": _op("run events as server-sent events", {"200": {
            "description": "an event stream",
            "content": {"text/event-stream": {"schema": {"type": "string"}}}}},
            parameters=[_query("last_event_id")])},
        "/v1/dashboard/overview": _dashboard("counts and recent activity"),
        "/v1/dashboard/upcoming": _dashboard("jobs due soon", "hours", "limit"),
        "/v1/dashboard/failures": _dashboard("failed and dead jobs", "limit"),
        "/v1/dashboard/queues": _dashboard("queues: settings, runs in flight, jobs by state"),
        "/v1/cron/explain": _dashboard("the next occurrences of a cron expression", "expr",
                                       "tz", "n"),
        "/v1/session": {
            "get": {"summary": "dashboard session state", "security": [],
                    "responses": {"200": _json(_ref("Object"), "session")}},
            "post": {"summary": "sign in with the token (sets a cookie)", "security": [],
                     "requestBody": _body(_ref("Object")),
                     "responses": {"200": _json(_ref("Object"), "signed in"),
                                   **_errors(400), "403": _json(_ref("Error"), "wrong origin")}},
            "delete": {"summary": "sign out", "security": [],
                       "responses": {"200": _json(_ref("Object"), "signed out")}},
        },
        "/": {"get": {"summary": "the dashboard", "security": [], "responses": {"200": _HTML}}},
        "/ui": {"get": {"summary": "the dashboard", "security": [], "responses": {"200": _HTML}}},
        "/ui/{file}": {"get": {"summary": "the dashboard's files", "security": [],
                               "parameters": [{"name": "file", "in": "path", "required": True,
                                               "schema": {"type": "string"}}],
                               "responses": {"200": _HTML}}},
    }  # fmt: skip


@cache
def document() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {"title": "jobsched", "version": __version__,
                 "description": "The jobsched HTTP service (docs/service.md). A request "
                 "body may carry a msg_id (any JSON value): the reply then carries it "
                 "back as in_reply_to, on every route."},
        "paths": _paths(),
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
    }  # fmt: skip


@cache
def document_bytes() -> bytes:
    return json.dumps(document()).encode()
