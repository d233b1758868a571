"""jobsched: a job scheduler node."""

from jobsched.errors import JobschedError

__all__ = ["JobschedError"]
__version__ = "0.1.0"
