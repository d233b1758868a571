"""Cron expressions: parse, next and previous occurrences (pure, no I/O).

- ``parse``: the text to a ``CronSpec`` of bit sets (Debian semantics, Quartz extensions);
- ``days``: which local calendar days match the date fields;
- ``tz``: a zone's UTC offsets for a local day (daylight-saving changes);
- ``expr``: ``CronExpr``, which puts them together;
- ``count``: how many occurrences a range holds, without visiting them.
"""

from jobsched.cron.expr import CronExpr
from jobsched.cron.parse import CronError

__all__ = ["CronError", "CronExpr"]
