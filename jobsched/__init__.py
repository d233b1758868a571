"""jobsched: a job scheduler node.

The public API for task modules is ``task``::

    from jobsched import task

    @task("send-email")
    def send_email(payload): ...
"""

from jobsched.errors import JobschedError
from jobsched.runner import task

__all__ = ["JobschedError", "task"]
__version__ = "0.1.0"
