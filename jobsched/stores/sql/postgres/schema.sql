-- The current schema in one piece: what every migration applied in order gives.
-- tests/test_postgres_migrations.py checks that they agree. Changing the schema:
-- add the next NNN_name.sql migration AND update this file.

CREATE TABLE jobs (
    seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job_id TEXT NOT NULL UNIQUE,
    task TEXT NOT NULL,
    payload TEXT NOT NULL,
    state TEXT NOT NULL,
    due_at BIGINT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    sched_kind TEXT NOT NULL,
    cron TEXT,
    timezone TEXT,
    interval_ms BIGINT,
    anchor_ms BIGINT,
    max_attempts INTEGER NOT NULL,
    base_ms BIGINT NOT NULL,
    max_backoff_ms BIGINT,
    jitter INTEGER NOT NULL,
    timeout_ms BIGINT,
    overlap TEXT NOT NULL,
    misfire TEXT NOT NULL,
    catchup_window_ms BIGINT,
    attempts INTEGER NOT NULL,
    runs BIGINT NOT NULL,
    last_run_at BIGINT,
    last_error TEXT,
    paused_from TEXT,
    first_due BIGINT,
    spec_key TEXT,
    skipped BIGINT NOT NULL,
    locked_by TEXT,
    locked_until BIGINT,
    touched_ms BIGINT NOT NULL,
    queue TEXT NOT NULL DEFAULT 'default',
    priority INTEGER NOT NULL DEFAULT 0,
    unique_key TEXT,
    unique_for_ms BIGINT
);

-- Claims take runnable jobs in (priority, due_at, seq) order: one range of
-- due jobs per priority (0-9), each already in order.
CREATE INDEX jobs_due ON jobs (priority, due_at, seq) WHERE state IN ('scheduled', 'retrying');
-- list_jobs by state or by task, in seq order.
CREATE INDEX jobs_state ON jobs (state, seq);
CREATE INDEX jobs_task ON jobs (task, seq);
-- Leases: only running jobs have one; extended by holder, rescued by expiry.
CREATE INDEX jobs_holder ON jobs (locked_by) WHERE state = 'running';
CREATE INDEX jobs_lease ON jobs (locked_until) WHERE state = 'running';
-- Retention prunes final jobs by the time they were last written.
CREATE INDEX jobs_final ON jobs (touched_ms) WHERE state IN ('completed', 'dead', 'cancelled');

CREATE TABLE runs (
    id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job_id TEXT NOT NULL,
    started_at BIGINT NOT NULL,
    finished_at BIGINT NOT NULL,
    outcome TEXT NOT NULL,
    error TEXT,
    node TEXT,
    recorded_ms BIGINT NOT NULL
);

CREATE INDEX runs_job ON runs (job_id, id);
CREATE INDEX runs_recorded ON runs (recorded_ms);

CREATE TABLE nodes (
    node_id TEXT PRIMARY KEY,
    first_seen BIGINT NOT NULL,
    last_seen BIGINT NOT NULL
);

-- Claims from one queue (limited queues, --queues), and list_jobs by queue.
CREATE INDEX jobs_queue_due ON jobs (queue, priority, due_at, seq)
    WHERE state IN ('scheduled', 'retrying');
CREATE INDEX jobs_queue ON jobs (queue, seq);
-- A queue's runs in flight, counted by every claim of a concurrency-limited queue.
CREATE INDEX jobs_queue_running ON jobs (queue) WHERE state = 'running';
-- At most one job per unique_key that is not final: the race-free part of
-- uniqueness (a second insert fails, whatever process makes it).
CREATE UNIQUE INDEX jobs_unique ON jobs (unique_key)
    WHERE unique_key IS NOT NULL AND state IN ('scheduled', 'running', 'retrying', 'paused');
-- Who last took each unique_key, and until when (created_at + unique_for_ms)
-- it blocks others even once final. Taken with INSERT ... ON CONFLICT DO
-- UPDATE ... WHERE held_until <= now, so two inserts never both take it.
CREATE TABLE unique_keys (
    key TEXT PRIMARY KEY,
    job_id TEXT NOT NULL,
    held_until BIGINT NOT NULL
);
CREATE INDEX unique_keys_until ON unique_keys (held_until);
-- Queue settings, for the whole cluster. rate_max runs per rate_per_ms.
CREATE TABLE queues (
    name TEXT PRIMARY KEY,
    concurrency INTEGER,
    rate_max INTEGER,
    rate_per_ms BIGINT,
    paused BOOLEAN NOT NULL DEFAULT false
);
-- Run starts of rate-limited queues, counted per window and pruned by claims.
CREATE TABLE queue_starts (
    queue TEXT NOT NULL,
    at BIGINT NOT NULL
);
CREATE INDEX queue_starts_at ON queue_starts (queue, at);
