-- Queues, priorities and unique jobs (docs/queues.md). New columns have
-- defaults, so the jobs of an older file land in queue 'default', priority 0.
ALTER TABLE jobs ADD COLUMN queue TEXT NOT NULL DEFAULT 'default';
ALTER TABLE jobs ADD COLUMN priority INTEGER NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN unique_key TEXT;
ALTER TABLE jobs ADD COLUMN unique_for_ms BIGINT;
-- Claims take runnable jobs in (priority, due_at, seq) order: one range of
-- due jobs per priority (0-9), each already in order.
DROP INDEX jobs_due;
CREATE INDEX jobs_due ON jobs (priority, due_at, seq) WHERE state IN ('scheduled', 'retrying');
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
