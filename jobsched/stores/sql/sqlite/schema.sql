-- The current schema, for a new database in one step. It must equal what every
-- migration applied in order gives (tests/test_sqlite_migrations.py checks it).
-- Changing the schema: add the next NNN_name.sql migration AND update this file.

CREATE TABLE jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id TEXT NOT NULL UNIQUE,
    task TEXT NOT NULL,
    payload TEXT NOT NULL,
    state TEXT NOT NULL,
    due_at INTEGER,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    sched_kind TEXT NOT NULL,
    cron TEXT,
    timezone TEXT,
    interval_ms INTEGER,
    anchor_ms INTEGER,
    max_attempts INTEGER NOT NULL,
    base_ms INTEGER NOT NULL,
    max_backoff_ms INTEGER,
    jitter INTEGER NOT NULL,
    timeout_ms INTEGER,
    overlap TEXT NOT NULL,
    misfire TEXT NOT NULL,
    catchup_window_ms INTEGER,
    attempts INTEGER NOT NULL,
    runs INTEGER NOT NULL,
    last_run_at INTEGER,
    last_error TEXT,
    paused_from TEXT,
    first_due INTEGER,
    spec_key TEXT,
    skipped INTEGER NOT NULL,
    locked_by TEXT,
    locked_until INTEGER,
    touched_ms INTEGER NOT NULL,
    queue TEXT NOT NULL DEFAULT 'default',
    priority INTEGER NOT NULL DEFAULT 0,
    unique_key TEXT,
    unique_for_ms INTEGER
);

-- Claims take runnable jobs in (priority, due_at, seq) order: one range of
-- due jobs per priority (0-9), each already in order.
CREATE INDEX jobs_due ON jobs (priority, due_at, seq) WHERE state IN ('scheduled', 'retrying');
-- list_jobs by state or by task, in seq order.
CREATE INDEX jobs_state ON jobs (state, seq);
CREATE INDEX jobs_task ON jobs (task, seq);
-- Leases: only running jobs have one.
CREATE INDEX jobs_lease ON jobs (locked_until) WHERE state = 'running';

CREATE TABLE runs (
    id INTEGER PRIMARY KEY,
    job_id TEXT NOT NULL,
    started_at INTEGER NOT NULL,
    finished_at INTEGER NOT NULL,
    outcome TEXT NOT NULL,
    error TEXT,
    node TEXT,
    recorded_ms INTEGER NOT NULL
);

CREATE INDEX runs_job ON runs (job_id, id);
CREATE INDEX runs_recorded ON runs (recorded_ms);
CREATE INDEX jobs_final ON jobs (touched_ms) WHERE state IN ('completed', 'dead', 'cancelled');

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
    held_until INTEGER NOT NULL
);
CREATE INDEX unique_keys_until ON unique_keys (held_until);
-- Queue settings, for the whole cluster. rate_max runs per rate_per_ms.
CREATE TABLE queues (
    name TEXT PRIMARY KEY,
    concurrency INTEGER,
    rate_max INTEGER,
    rate_per_ms INTEGER,
    paused INTEGER NOT NULL DEFAULT 0
);
-- Run starts of rate-limited queues, counted per window and pruned by claims.
CREATE TABLE queue_starts (
    queue TEXT NOT NULL,
    at INTEGER NOT NULL
);
CREATE INDEX queue_starts_at ON queue_starts (queue, at);
