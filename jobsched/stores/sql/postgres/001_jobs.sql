-- Jobs and their run history. Times are UTC epoch milliseconds (BIGINT), as
-- everywhere in jobsched. seq is the scheduling order: an identity column, so a
-- value is never handed out twice (list cursors rely on it). touched_ms is the
-- store's wall clock at the last write: retention counts real time, never the
-- jobs' logical times, which a caller's current_time sets at will.
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
    touched_ms BIGINT NOT NULL
);

-- Claiming and next_due read only runnable jobs, in (due_at, seq) order.
CREATE INDEX jobs_due ON jobs (due_at, seq) WHERE state IN ('scheduled', 'retrying');
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
