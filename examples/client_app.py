"""Scheduling jobs from application code with jobsched.Client (docs/client.md).

    python examples/client_app.py jobs.db

The same code works with ``postgresql://...`` (then ``connection=`` takes a
psycopg connection) or with the URL of a running ``jobsched serve`` (no
``connection=`` there). tests/test_client.py runs this file and checks it
with ``mypy --strict``.
"""

from __future__ import annotations

import asyncio
import sqlite3
import sys
from datetime import UTC, datetime, timedelta

from jobsched import AsyncClient, Client, JobSpec, JobState
from jobsched.errors import JobExists, JobNotFound


def basics(client: Client) -> None:
    # One job, an hour from now; the reply says when it is due.
    job = client.schedule("send-email", {"to": "ada@example.com"}, delay_ms=3_600_000)
    print(f"{job.job_id} scheduled for {job.due_at:%Y-%m-%d %H:%M} UTC")

    # A recurring job with the caller's own id: sending it again is harmless.
    nightly = client.schedule("cleanup", {"days": 30}, cron="0 3 * * *", job_id="nightly")
    assert client.schedule("cleanup", {"days": 30}, cron="0 3 * * *", job_id="nightly") == nightly
    try:
        client.schedule("cleanup", {"days": 7}, cron="0 3 * * *", job_id="nightly")
    except JobExists as exc:  # the same id with another spec: error 21
        print(f"refused ({exc.code}): {exc.text}")

    # run_at takes an aware datetime (a naive one is refused: it names no instant).
    at = datetime.now(UTC) + timedelta(days=1)
    client.schedule("report", run_at=at, max_attempts=5, base_ms=2_000)

    # A batch: all of it or nothing, one transaction.
    welcome = [JobSpec("send-email", {"to": f"user{i}@example.com"}) for i in range(100)]
    print(f"{len(client.schedule_many(welcome))} welcome emails scheduled")

    # Reading jobs back: typed values.
    info = client.get("nightly")
    assert info.state is JobState.SCHEDULED and info.schedule.cron == "0 3 * * *"
    print(f"nightly next runs at {info.due_at}, {info.max_attempts} attempts")
    emails = sum(1 for _ in client.iter_jobs(task="send-email"))
    print(f"{emails} send-email jobs; stats: {client.stats().total} jobs in all")

    client.pause("nightly")
    client.resume("nightly")
    try:
        client.get("no-such-job")
    except JobNotFound as exc:
        print(f"not found ({exc.code})")


def in_my_transaction(path: str, client: Client) -> None:
    """The job is written in the application's own transaction: it exists if,
    and only if, the application's writes commit."""
    db = sqlite3.connect(path)
    try:
        db.execute("CREATE TABLE IF NOT EXISTS orders (id INTEGER PRIMARY KEY, item TEXT)")
        db.commit()
        order = db.execute("INSERT INTO orders (item) VALUES ('book')").lastrowid
        client.schedule("ship-order", {"order": order}, job_id=f"ship-{order}", connection=db)
        db.commit()  # the order and its job, together
        print(f"order {order} and its job ship-{order} committed")

        db.execute("INSERT INTO orders (item) VALUES ('lamp')")
        client.schedule("ship-order", {"order": -1}, job_id="ship-never", connection=db)
        db.rollback()  # neither the order nor the job
        try:
            client.get("ship-never")
        except JobNotFound:
            print("rolled back: no ship-never job")
    finally:
        db.close()


async def from_asyncio(path: str) -> None:
    async with AsyncClient(path) as client:
        job = await client.schedule("send-email", {"to": "async@example.com"}, delay_ms=60_000)
        print(f"{job.job_id} scheduled from asyncio")
        async for found in client.iter_jobs(task="ship-order"):
            print(f"{found.job_id}: {found.state}")


def main() -> None:
    path = sys.argv[1] if len(sys.argv) > 1 else "jobs.db"
    with Client(path) as client:
        basics(client)
        in_my_transaction(path, client)
    asyncio.run(from_asyncio(path))


if __name__ == "__main__":
    main()
