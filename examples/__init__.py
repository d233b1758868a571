"""Examples of application code using jobsched (the example task module is jobsched.examples.tasks)."""
