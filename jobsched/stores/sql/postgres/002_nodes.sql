-- Cluster membership: one heartbeat row per node, for stats and /metrics.
-- Times are on the cluster's clock (the database's, in real-time mode).
CREATE TABLE nodes (
    node_id TEXT PRIMARY KEY,
    first_seen BIGINT NOT NULL,
    last_seen BIGINT NOT NULL
);
