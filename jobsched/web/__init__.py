"""The dashboard and the live event stream of ``jobsched serve``.

Standard library only, like the rest of the service. Python side: the run
event hub and its Server-Sent Events stream (``events``), following other
nodes' runs through the store's tables (``follow``), the dashboard's
queries (``queries``), cron in words (``cronwords``), sign-in sessions and the
cookie rules (``session``), the routes that tie them to the service
(``routes``), and the run log (``runlog``). Browser side: ``static/``, plain
HTML, CSS and JavaScript modules served as they are (no build step, nothing
fetched from elsewhere). See docs/dashboard.md.
"""
