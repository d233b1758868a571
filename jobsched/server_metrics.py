"""The service's ``GET /metrics``: the Prometheus text exposition format
(version 0.0.4), from the store's job counts, this process's run counters
(``jobsched.metrics``) and, on a shared store, the cluster's nodes."""

from __future__ import annotations

from jobsched.metrics import Metrics

PROM = "text/plain; version=0.0.4; charset=utf-8"


def render_metrics(counts: dict[str, int], m: Metrics) -> str:
    """The Prometheus text exposition format (version 0.0.4): the store's jobs
    by state, then this process's run families, a sample per queue
    (``Metrics.render``; docs/queues.md bounds the queue labels)."""
    out = ["# HELP jobsched_jobs Jobs in the store, by state.", "# TYPE jobsched_jobs gauge"]
    out.extend(f'jobsched_jobs{{state="{s}"}} {n}' for s, n in counts.items())
    return "\n".join(out) + "\n" + m.render()


def render_nodes(nodes: list[tuple[str, int, int]]) -> str:
    """Cluster nodes seen in the last minute, and the jobs each holds."""
    out = [
        "# HELP jobsched_nodes Nodes whose heartbeat was seen in the last minute.",
        "# TYPE jobsched_nodes gauge",
        f"jobsched_nodes {len(nodes)}",
        "# HELP jobsched_node_jobs_held Running jobs each node holds a lease on.",
        "# TYPE jobsched_node_jobs_held gauge",
    ]
    for node_id, _, held in nodes:
        node = node_id.replace("\\", "\\\\").replace('"', '\\"')
        out.append(f'jobsched_node_jobs_held{{node="{node}"}} {held}')
    return "\n".join(out) + "\n"


def render_writes(groups: int, writes: int) -> str:
    """The HTTP writes' group commit (``jobsched.server_commit``): writes per
    transaction is the ratio of the two."""
    return (
        "\n".join(
            [
                "# HELP jobsched_http_write_groups_total Transactions that committed HTTP writes.",
                "# TYPE jobsched_http_write_groups_total counter",
                f"jobsched_http_write_groups_total {groups}",
                "# HELP jobsched_http_writes_total HTTP requests committed in those transactions.",
                "# TYPE jobsched_http_writes_total counter",
                f"jobsched_http_writes_total {writes}",
            ]
        )
        + "\n"
    )
