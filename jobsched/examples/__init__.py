"""Example task modules shipped with jobsched.

``jobsched serve --tasks jobsched.examples.tasks`` runs them.
"""
