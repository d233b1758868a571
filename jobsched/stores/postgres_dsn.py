"""Where a PostgreSQL store connects, and how its errors read.

``parse_dsn`` turns the ``--db`` URL into libpq's conninfo, with the node's
connection defaults (fail fast when the server is down, notice a dead peer on
an idle socket) and the optional ``?schema=name`` applied as the search_path;
``safe_target`` names the server in messages without the password;
``describe`` is the first line of a driver error, what an operator reads.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import psycopg
from psycopg import conninfo as pg_conninfo

from jobsched.errors import JobschedError

_SCHEMA = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
# Connection settings a node wants unless the DSN says otherwise: fail fast
# when the server is down, and notice a dead peer on an idle socket.
_DEFAULTS = {
    "connect_timeout": "5",
    "keepalives": "1",
    "keepalives_idle": "10",
    "keepalives_interval": "5",
    "keepalives_count": "3",
    "application_name": "jobsched",
}


def parse_dsn(dsn: str) -> tuple[str, str | None]:
    """The libpq conninfo and the schema a ``?schema=name`` query parameter names.

    libpq refuses unknown URI parameters, so ``schema`` is taken out here and
    applied as the connection's ``search_path``.
    """
    schema: str | None = None
    if dsn.startswith(("postgresql://", "postgres://")):
        parts = urlsplit(dsn)
        query = parse_qsl(parts.query, keep_blank_values=True)
        schema = next((v for k, v in query if k == "schema"), None)
        rest = urlencode([(k, v) for k, v in query if k != "schema"])
        dsn = urlunsplit(parts._replace(query=rest))
    if schema is not None and not _SCHEMA.match(schema):
        raise JobschedError(
            f"schema {schema!r}: must be a plain identifier ([A-Za-z_][A-Za-z0-9_]*)"
        )
    try:
        params = pg_conninfo.conninfo_to_dict(dsn)
    except psycopg.ProgrammingError as exc:
        raise JobschedError(f"invalid PostgreSQL DSN: {exc}") from exc
    for key, value in _DEFAULTS.items():
        params.setdefault(key, value)
    if schema is not None:
        options = str(params.get("options") or "")
        params["options"] = f"{options} -c search_path={schema}".strip()
    return pg_conninfo.make_conninfo("", **params), schema


def describe(exc: BaseException) -> str:
    """The first line of a psycopg error: what an operator needs to read."""
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def safe_target(conninfo: str) -> str:
    """Where the store points, for messages: host, port, database; no password."""
    params = pg_conninfo.conninfo_to_dict(conninfo)
    host = params.get("host") or params.get("hostaddr") or "localhost"
    return f"{host}:{params.get('port') or 5432}/{params.get('dbname') or ''}"
