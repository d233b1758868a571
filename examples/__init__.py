"""Example task modules for jobsched (see examples/tasks.py)."""
