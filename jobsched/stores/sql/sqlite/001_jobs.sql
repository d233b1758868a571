-- Jobs. seq is the scheduling order: AUTOINCREMENT so a value is never handed
-- out twice, even after the newest job has been pruned (list cursors rely on it).
-- touched_ms is the store's wall clock at the last write: retention counts real
-- time, not the jobs' logical times, which a caller's current_time sets at will.
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
    touched_ms INTEGER NOT NULL
);

-- Claiming and next_due read only runnable jobs, in (due_at, seq) order.
CREATE INDEX jobs_due ON jobs (due_at, seq) WHERE state IN ('scheduled', 'retrying');
-- list_jobs by state or by task, in seq order.
CREATE INDEX jobs_state ON jobs (state, seq);
CREATE INDEX jobs_task ON jobs (task, seq);
-- Leases: only running jobs have one.
CREATE INDEX jobs_lease ON jobs (locked_until) WHERE state = 'running';
