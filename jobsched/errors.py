"""One root exception, and one subclass per error code of the wire contract.

This module is a leaf: it imports nothing of the project, so the pure domain
modules (``cron``, ``timefmt``, ``jobs``) may raise these without pulling in
anything else. Each class carries the Maelstrom error code the protocol answers
with, so the transports never need a table from exception type to code.
"""

from __future__ import annotations


class JobschedError(Exception):
    """Root of every error jobsched raises on purpose."""

    code: int = 13

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text


class NotSupported(JobschedError):
    """The message type is unknown (code 10)."""

    code = 10


class Unavailable(JobschedError):
    """The store could not commit or be reached; nothing changed (code 11)."""

    code = 11


class Malformed(JobschedError):
    """The request is ill-formed; ``field`` names the offending field (code 12)."""

    code = 12

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}" if field else problem)
        self.field = field
        self.problem = problem


class JobNotFound(JobschedError):
    """A well-formed job id names no job (code 20)."""

    code = 20

    def __init__(self, job_id: str) -> None:
        super().__init__(f"job {job_id!r} does not exist")
        self.job_id = job_id


class JobExists(JobschedError):
    """The caller's job id is taken by a job with a different spec (code 21)."""

    code = 21

    def __init__(self, job_id: str, detail: str = "") -> None:
        text = f"job {job_id!r} already exists"
        super().__init__(f"{text} {detail}" if detail else text)
        self.job_id = job_id


class PreconditionFailed(JobschedError):
    """The change makes no sense in the job's current state (code 22)."""

    code = 22

    def __init__(self, job_id: str, detail: str) -> None:
        super().__init__(f"job {job_id!r}: {detail}")
        self.job_id = job_id


class StoreVersionError(JobschedError):
    """The database was written by a newer jobsched than this one."""

    code = 11
