"""Imports point one way: domain <- engine <- stores <- transports.

Each module has a rank; it may import only modules of its own rank or lower.
The engine knows stores only through their interface (stores.base), and no
store knows the engine. The stdio node must run on the standard library alone.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PKG = ROOT / "jobsched"

RANKS = {
    # 0: leaves every module may use
    "errors": 0,
    "jsonfast": 0,
    "ids": 0,
    "version": 0,
    "tasks": 0,
    "tasks.webhook": 0,
    # 1: the pure domain
    "timefmt": 1,
    "cron": 1,
    "cron.expr": 1,
    "cron.parse": 1,
    "cron.days": 1,
    "cron.tz": 1,
    "cron.count": 1,
    "jobs": 1,
    "spec": 1,
    "transitions": 1,
    "policies": 1,
    "queues": 1,
    # 2: user code, and the store interface
    "runner": 2,
    "registry": 2,
    "handles": 2,
    "isolation": 2,
    "metrics": 2,
    "stores": 2,
    "stores.base": 2,
    "stores.migrate": 2,
    # 3: the engine, and the store backends (neither imports the other)
    "engine": 3,
    "execution": 3,
    "execute": 3,
    "maintenance": 4,
    "stores.memory": 3,
    "stores.sqlite": 3,
    "stores.sqlite_schema": 3,
    "stores.sqlite_conn": 3,
    "stores.postgres_caller": 3,
    "stores.postgres": 3,
    "stores.postgres_conn": 3,
    "stores.postgres_listen": 3,
    "stores.sql_tx": 3,
    "stores.sql_queues": 3,
    "stores.memory_queues": 3,
    "stores.memory_compact": 3,
    "stores.memory_undo": 3,
    "stores.memory_runs": 3,
    "stores.postgres_sql": 3,
    "stores.postgres_cluster": 3,
    "stores.postgres_claim": 3,
    "stores.open": 3,
    "stores.postgres_dsn": 3,
    "stores.sqlite_sql": 3,
    # 4: transports
    "validate": 4,
    "fields": 4,
    "messages": 4,
    "wire": 4,
    "node": 4,
    "dispatcher": 4,
    "dispatch_runs": 4,
    "dispatch_wait": 4,
    "server": 4,
    "http_stream": 4,
    "web": 4,
    "web.cache": 4,
    "web.cronwords": 4,
    "web.dashboard": 4,
    "web.events": 4,
    "web.follow": 4,
    "web.queries": 4,
    "web.routes": 4,
    "web.runlog": 4,
    "web.session": 4,
    "web.sqlread": 4,
    "openapi": 4,
    "http_conn": 4,
    "http_server": 4,
    "http_pool": 4,
    "server_commit": 4,
    "server_metrics": 4,
    "client": 4,
    "client_types": 4,
    "client_json": 4,
    "client_transports": 4,
    "client_async": 4,
    "client_async_pg": 4,
    "cli": 5,
    "cli_args": 5,
    "embedded": 5,
    "__main__": 5,
    "__init__": 5,
    "examples": 5,
    "examples.tasks": 5,
}


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("jobsched"):
            if node.module == "jobsched":
                # A name of the package root that is no module (``task``) comes from __init__.
                found |= {a.name if a.name in RANKS else "__init__" for a in node.names}
            else:
                found.add(node.module.removeprefix("jobsched."))
        elif isinstance(node, ast.Import):
            found |= {
                a.name.removeprefix("jobsched.")
                for a in node.names
                if a.name.startswith("jobsched.")
            }
    return found


def _name(path: Path) -> str:
    return (
        ".".join(path.relative_to(PKG).with_suffix("").parts).removesuffix(".__init__")
        or "__init__"
    )


def test_every_module_has_a_rank() -> None:
    missing = [_name(p) for p in PKG.rglob("*.py") if _name(p) not in RANKS]
    assert not missing, f"give these modules a rank in tests/test_layers.py: {missing}"


def test_imports_point_one_way() -> None:
    wrong = []
    for path in PKG.rglob("*.py"):
        mod = _name(path)
        for dep in _imports(path):
            dep = dep if dep in RANKS else dep.rsplit(".", 1)[0]
            if RANKS.get(dep, 99) > RANKS[mod]:
                wrong.append(f"{mod} -> {dep}")
    assert not wrong, wrong


def test_engine_and_store_backends_do_not_know_each_other() -> None:
    assert not {
        d for d in _imports(PKG / "engine.py") if d.startswith("stores.") and d != "stores.base"
    }
    for backend in ("memory", "sqlite", "postgres"):
        assert "engine" not in _imports(PKG / "stores" / f"{backend}.py")


def test_main_py_runs_on_the_standard_library_alone() -> None:
    # -S skips site-packages (where psycopg and friends live); -I ignores PYTHON* env.
    proc = subprocess.run(
        [sys.executable, "-I", "-S", str(ROOT / "main.py")],
        input=b'{"type": "schedule_job", "msg_id": 1, "task": "t", "cron": "0 0 * * *"}\n',
        capture_output=True,
        timeout=30,
    )
    assert proc.returncode == 0, proc.stderr
    assert b'"type": "job_scheduled"' in proc.stdout
