-- Run history, and the index retention prunes final jobs by.
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
