"""``python -m jobsched ...``: the same commands as the ``jobsched`` script."""

from jobsched.cli import entry

entry()
