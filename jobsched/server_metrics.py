"""The service's ``GET /metrics``: the Prometheus text exposition format
(version 0.0.4), from the store's job counts, this process's run counters
(``jobsched.metrics``) and, on a shared store, the cluster's nodes."""

from __future__ import annotations

from jobsched.metrics import LATENESS_BUCKETS, Metrics

PROM = "text/plain; version=0.0.4; charset=utf-8"


def render_metrics(counts: dict[str, int], m: Metrics) -> str:
    """The Prometheus text exposition format (version 0.0.4)."""
    out: list[str] = []

    def family(name: str, kind: str, help_text: str) -> None:
        out.append(f"# HELP {name} {help_text}")
        out.append(f"# TYPE {name} {kind}")

    family("jobsched_jobs", "gauge", "Jobs in the store, by state.")
    out.extend(f'jobsched_jobs{{state="{s}"}} {n}' for s, n in counts.items())
    with m.lock:
        runs, retries, skipped = dict(m.runs), m.retries, m.skipped
        buckets, total, count = list(m.buckets), m.lateness_sum, m.lateness_count
    family("jobsched_runs_total", "counter", "Real-time runs of this process, by outcome.")
    out.extend(f'jobsched_runs_total{{outcome="{k}"}} {v}' for k, v in sorted(runs.items()))
    family("jobsched_run_failures_total", "counter", "Real-time runs that failed (any cause).")
    out.append(f"jobsched_run_failures_total {sum(v for k, v in runs.items() if k != 'succeeded')}")
    family("jobsched_retries_total", "counter", "Failed runs that scheduled a retry.")
    out.append(f"jobsched_retries_total {retries}")
    family(
        "jobsched_skipped_occurrences_total", "counter", "Occurrences skipped by overlap/misfire."
    )
    out.append(f"jobsched_skipped_occurrences_total {skipped}")
    family(
        "jobsched_dispatch_lateness_seconds",
        "histogram",
        "Handler start minus due time, real-time runs.",
    )
    cumulative = 0
    for bound, n in zip(LATENESS_BUCKETS, buckets, strict=True):
        cumulative += n
        out.append(f'jobsched_dispatch_lateness_seconds_bucket{{le="{bound}"}} {cumulative}')
    out.append(f'jobsched_dispatch_lateness_seconds_bucket{{le="+Inf"}} {count}')
    out.append(f"jobsched_dispatch_lateness_seconds_sum {total}")
    out.append(f"jobsched_dispatch_lateness_seconds_count {count}")
    return "\n".join(out) + "\n"


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
