"""The dashboard in a real headless Chromium (Debian's /usr/bin/chromium driven
by Playwright; never `playwright install`), against a real ``jobsched serve``
with a token and a SQLite file: sign in, live updates, job actions, bulk
retry, the cron form, read-only mode, markup in data rendered as text, and a
phone-sized viewport. Screenshots of every page go to the test's directory,
and to ``$JOBSCHED_SCREENSHOTS`` (docs/img) when that is set."""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, Playwright, expect, sync_playwright

from tests.test_server_http import TASKS, TOKEN, Service, wait_state

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
DESKTOP = {"width": 1100, "height": 760}
PHONE = {"width": 390, "height": 844}
XSS = '<script>window.__xss = 1</script><img src=x onerror="window.__xss = 2">'
QUEUE_XSS = '<img src=x onerror="window.__xss = 3">/eu'
TASKS_XSS = (
    TASKS
    + """
@task("markup")
def markup(payload):
    raise ValueError(payload["html"])
"""
)


@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    # CI installs chromium (.ci/run); a missing browser is a failure, never a skip.
    assert os.path.exists(CHROMIUM), f"{CHROMIUM} is missing: apt-get install -y chromium"
    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    b = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
    yield b
    b.close()


@pytest.fixture(scope="module")
def svc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    s = Service(tmp_path_factory.mktemp("ui"), tasks_text=TASKS_XSS)
    yield s
    assert s.stop() == 0


class Watch:
    """What a page did that it must not: script errors, CSP refusals, dialogs."""

    def __init__(self, page: Page) -> None:
        self.problems: list[str] = []
        page.on("pageerror", lambda exc: self.problems.append(f"page error: {exc}"))
        page.on("dialog", lambda d: (self.problems.append(f"dialog: {d.message}"), d.dismiss()))
        page.on("console", self._console)

    def _console(self, msg: Any) -> None:
        # A refused request (401 for a wrong token, 403 in read-only mode) is
        # logged by Chromium as "Failed to load resource"; anything else is not expected.
        if msg.type == "error" and "Failed to load resource" not in msg.text:
            self.problems.append(f"console: {msg.text}")


def sign_in(page: Page, token: str = TOKEN) -> None:
    page.goto("/")
    page.get_by_label("Token").fill(token)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Overview")).to_be_visible()


@pytest.fixture(scope="module")
def session(browser: Browser, svc: Service) -> Any:
    """A signed-in browser's cookies, for the tests that are not about signing in."""
    context = browser.new_context(base_url=svc.url)
    sign_in(context.new_page())
    state = context.storage_state()
    context.close()
    return state


@pytest.fixture
def page(browser: Browser, svc: Service, session: Any) -> Iterator[Page]:
    context = browser.new_context(viewport=DESKTOP, base_url=svc.url, storage_state=session)
    p = context.new_page()
    watch = Watch(p)
    yield p
    context.close()
    assert not watch.problems


def shot(page: Page, name: str, tmp: Path) -> None:
    path = tmp / f"{name}.png"
    page.screenshot(path=str(path))
    target = os.environ.get("JOBSCHED_SCREENSHOTS")
    if target:
        shutil.copy(path, Path(target) / path.name)


def schedule(svc: Service, **fields: Any) -> str:
    status, reply = svc.request("POST", "/v1/jobs", fields)
    assert status == 201, reply
    return str(reply["job_id"])


# -- sign-in ---------------------------------------------------------------------------


def test_sign_in_sets_a_session_cookie_that_is_not_the_token(
    browser: Browser, svc: Service
) -> None:
    context = browser.new_context(viewport=DESKTOP, base_url=svc.url)
    page = context.new_page()
    watch = Watch(page)
    page.goto("/")
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    page.get_by_label("Token").fill("not-the-token")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_text("Wrong token.")).to_be_visible()
    page.get_by_label("Token").fill(TOKEN)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Overview")).to_be_visible()
    (cookie,) = page.context.cookies()
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert TOKEN not in cookie["value"] and len(cookie["value"]) >= 40
    assert page.evaluate("document.cookie") == ""  # scripts cannot read it
    page.reload()  # the session survives a reload: no second sign-in
    expect(page.get_by_role("heading", name="Overview")).to_be_visible()
    expect(page.locator("#live")).to_have_text("live")
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_label("Token")).to_be_visible()
    page.reload()
    expect(page.get_by_label("Token")).to_be_visible()  # the session is gone server-side too
    context.close()
    assert not watch.problems


# -- live, and the job page's actions ----------------------------------------------------


def test_a_job_scheduled_through_the_api_appears_live(page: Page, svc: Service) -> None:
    page.goto("/#/jobs")
    expect(page.get_by_role("heading", name="Jobs")).to_be_visible()
    expect(page.locator("#live")).to_have_text("live")
    job_id = schedule(svc, task="ok", payload={"from": "api"})
    # The page reloads on the job's run events (its own polling is every 10 s).
    row = page.locator(f'tr[data-job="{job_id}"]')
    expect(row).to_be_visible(timeout=4000)
    expect(row.get_by_text("completed")).to_be_visible(timeout=4000)


def test_run_now_then_pause_and_resume(page: Page, svc: Service, tmp_path: Path) -> None:
    once = schedule(svc, task="ok", delay_ms=3_600_000, payload={"k": "v"})
    page.goto(f"/#/jobs/{once}")
    expect(page.get_by_role("heading", name=once)).to_be_visible()
    expect(page.get_by_role("button", name="Retry")).to_have_count(0)  # not for a scheduled job
    page.get_by_role("button", name="Run now").click()
    expect(page.get_by_text("Run now: executed.")).to_be_visible()
    expect(page.locator(".job-head .badge")).to_have_text("completed")
    expect(page.locator("td .badge.o-succeeded")).to_have_count(1)
    expect(page.get_by_role("button", name="Run now")).to_have_count(0)

    cron = schedule(svc, task="ok", cron="0 9 * * MON-FRI", timezone="Europe/London")
    page.goto(f"/#/jobs/{cron}")
    expect(page.get_by_text("At 09:00, Monday through Friday, Europe/London")).to_be_visible()
    shot(page, "job", tmp_path)
    page.get_by_role("button", name="Pause").click()
    expect(page.locator(".job-head .badge")).to_have_text("paused")
    expect(page.get_by_role("button", name="Pause")).to_have_count(0)
    assert wait_state(svc, cron, "paused")
    page.get_by_role("button", name="Resume").click()
    expect(page.locator(".job-head .badge")).to_have_text("scheduled")
    assert wait_state(svc, cron, "scheduled")


def test_bulk_retry_of_dead_jobs(page: Page, svc: Service, tmp_path: Path) -> None:
    dead = [schedule(svc, task="boom", max_attempts=1, payload={"i": i}) for i in range(3)]
    for job_id in dead:
        wait_state(svc, job_id, "dead")
    page.goto("/#/jobs?state=dead")
    for job_id in dead:
        page.get_by_label(f"Select {job_id}").check()
    shot(page, "jobs", tmp_path)
    page.get_by_role("button", name="Retry selected").click()
    expect(page.get_by_text("Retried 3 of 3 job(s).")).to_be_visible()
    for job_id in dead:  # retried: they ran again (and died again)
        assert len(wait_state(svc, job_id, "dead")["recent_runs"]) == 2
    page.goto("/#/failures")
    expect(page.get_by_text("RuntimeError: boom").first).to_be_visible()
    shot(page, "failures", tmp_path)


def test_a_cron_job_created_through_the_form(page: Page, svc: Service, tmp_path: Path) -> None:
    page.goto("/#/new")
    page.get_by_label("Cron", exact=True).check()
    page.get_by_label("Task").fill("ok")
    page.get_by_label("Cron expression").fill("30 1 * * *")
    page.get_by_label("Time zone").fill("Europe/London")
    expect(page.get_by_text("At 01:30, Europe/London")).to_be_visible()
    expect(page.locator(".explain tbody tr")).to_have_count(5)
    page.get_by_label("Cron expression").fill("61 * * * *")
    expect(page.get_by_text("'61' is out of range 0-59")).to_be_visible()
    page.get_by_label("Cron expression").fill("0 9 * * MON-FRI")
    expect(page.get_by_text("At 09:00, Monday through Friday, Europe/London")).to_be_visible()
    page.get_by_label("Queue", exact=True).fill("reports")
    page.get_by_label("Priority").fill("2")
    page.evaluate("window.scrollTo(0, 0)")
    shot(page, "new-job", tmp_path)
    page.get_by_role("button", name="Schedule").click()
    expect(page.locator(".job-head .badge")).to_have_text("scheduled")
    job_id = page.locator("h1.id").inner_text()
    expect(page.locator("section tbody tr").first).to_be_visible()
    assert page.locator("table").first.locator("tbody tr").count() == 10  # next 10 occurrences
    status, reply = svc.request("GET", f"/v1/jobs/{job_id}")
    assert status == 200
    assert reply["job"]["schedule"] == {
        "kind": "cron", "cron": "0 9 * * MON-FRI", "timezone": "Europe/London"
    }  # fmt: skip
    assert (reply["job"]["queue"], reply["job"]["priority"]) == ("reports", 2)


def test_queues_pause_and_resume_and_jobs_by_queue(
    page: Page, svc: Service, tmp_path: Path
) -> None:
    limits = {"concurrency": 2, "rate_limit": {"max": 5, "per_ms": 60_000}}
    assert svc.request("PUT", "/v1/queues/mail", limits)[0] == 200
    job_id = schedule(
        svc, task="ok", delay_ms=3_600_000, queue="mail", priority=3, unique_key="digest-42"
    )
    schedule(svc, task="ok", delay_ms=3_600_000)  # in "default": not on mail's page of jobs
    page.goto("/#/queues")
    row = page.locator('tr[data-queue="mail"]')
    expect(row).to_contain_text("5 per 1 min")
    expect(row.locator("td").nth(2)).to_have_text("2")  # concurrency
    expect(row.locator("td").nth(5)).to_have_text("1")  # scheduled
    shot(page, "queues", tmp_path)
    row.get_by_role("button", name="Pause queue mail").click()
    expect(row.locator(".badge")).to_have_text("paused")
    assert _queue(svc, "mail")["paused"] is True
    row.get_by_role("button", name="Resume queue mail").click()
    expect(row.locator(".badge")).to_have_text("active")
    assert _queue(svc, "mail")["paused"] is False
    row.get_by_role("link", name="mail").click()
    expect(page).to_have_url(re.compile(r"#/jobs\?queue=mail$"))  # the filter is in the URL
    expect(page.get_by_label("Queue")).to_have_value("mail")
    rows = page.locator("table.jobs tbody tr")
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text(job_id)
    expect(rows.first.locator("td").nth(4)).to_have_text("3")  # priority
    rows.first.get_by_role("link", name=job_id).click()
    expect(page.locator(".facts-list")).to_contain_text("digest-42 (held while not final)")
    expect(page.locator(".facts-list dd").nth(2)).to_have_text("mail")


def test_a_queue_s_limits_are_set_and_removed_from_the_queues_page(
    page: Page, svc: Service
) -> None:
    page.goto("/#/queues")
    page.get_by_label("Queue name").fill("nightly")  # a queue with no settings and no jobs yet
    page.get_by_label("Concurrency (runs at once, all nodes)").fill("3")
    page.get_by_label("Rate limit: starts").fill("10")
    page.get_by_label("per (ms)").fill("60000")
    page.get_by_role("button", name="Save limits").click()
    expect(page.get_by_text("Limits of queue nightly saved.")).to_be_visible()
    row = page.locator('tr[data-queue="nightly"]')
    expect(row.locator("td").nth(2)).to_have_text("3")
    expect(row).to_contain_text("10 per 1 min")
    saved = _queue(svc, "nightly")
    assert (saved["concurrency"], saved["rate_limit"]) == (3, {"max": 10, "per_ms": 60_000})
    row.get_by_role("button", name="Edit limits of queue nightly").click()
    expect(page.get_by_label("Queue name")).to_have_value("nightly")
    expect(page.get_by_label("Rate limit: starts")).to_have_value("10")
    page.get_by_label("Concurrency (runs at once, all nodes)").fill("")
    page.get_by_label("Rate limit: starts").fill("")
    page.get_by_role("button", name="Save limits").click()
    expect(row.locator("td").nth(2)).to_have_text("none")
    expect(row.locator("td").nth(3)).to_have_text("none")
    cleared = _queue(svc, "nightly")
    assert (cleared["concurrency"], cleared["rate_limit"]) == (None, None)


def _queue(svc: Service, name: str) -> dict[str, Any]:
    status, reply = svc.request("GET", "/v1/queues")
    assert status == 200
    (found,) = [q for q in reply["queues"] if q["queue"] == name]
    return dict(found)


# -- what must never happen ----------------------------------------------------------------


def test_markup_in_payloads_and_errors_is_shown_as_text(page: Page, svc: Service) -> None:
    job_id = schedule(svc, task="markup", max_attempts=1, payload={"html": XSS}, queue=QUEUE_XSS)
    wait_state(svc, job_id, "dead")
    for where in (f"/#/jobs/{job_id}", "/#/jobs?state=dead", "/#/failures"):
        page.goto(where)
        # The list shortens errors: its first 40 characters are enough there.
        expect(page.get_by_text(XSS[:40]).first).to_be_visible()
    # A queue's name is user input too: on the queues page, its jobs' page, its pause button.
    page.goto("/#/queues")
    page.get_by_role("button", name=f"Pause queue {QUEUE_XSS}").click()
    expect(page.get_by_text(f"Paused queue {QUEUE_XSS}.")).to_be_visible()
    assert _queue(svc, QUEUE_XSS)["paused"] is True
    page.get_by_role("link", name=QUEUE_XSS).click()
    expect(page.locator("table.jobs tbody tr")).to_have_count(1)
    expect(page.get_by_role("link", name=QUEUE_XSS)).to_be_visible()
    page.goto(f"/#/jobs/{job_id}")
    expect(page.locator("pre.payload")).to_contain_text("<script>window.__xss = 1</script><img")
    page.wait_for_timeout(300)
    assert page.evaluate("window.__xss") is None
    assert page.locator("main img, main script").count() == 0
    # (the page fixture fails the test on any dialog, script error or CSP refusal)


def test_read_only_mode_hides_and_refuses_every_action(
    browser: Browser, svc: Service, tmp_path: Path
) -> None:
    job_id = schedule(svc, task="ok", delay_ms=3_600_000)
    ro = Service(tmp_path, "--read-only-ui", db=svc.db, tasks_text=TASKS_XSS)
    context = browser.new_context(viewport=DESKTOP, base_url=ro.url)
    try:
        page = context.new_page()
        sign_in(page)
        page.goto(f"/#/jobs/{job_id}")
        expect(page.get_by_role("heading", name=job_id)).to_be_visible()
        expect(page.locator(".actions button")).to_have_count(0)
        expect(page.get_by_role("link", name="New job")).to_be_hidden()
        page.goto("/#/jobs")
        expect(page.get_by_role("button", name="Retry selected")).to_be_hidden()
        page.goto("/#/queues")
        expect(page.locator('tr[data-queue="default"]')).to_be_visible()
        expect(page.locator("main button")).to_have_count(0)
        expect(page.locator("form.queue-limits")).to_have_count(0)
        status = page.evaluate(
            """async () => (await fetch("/v1/queues/default", {method: "PUT",
                headers: {"Content-Type": "application/json"}, body: '{"paused": true}'})).status"""
        )
        assert status == 403
        status = page.evaluate(
            """async (id) => (await fetch(`/v1/jobs/${id}/pause`, {method: "POST"})).status""",
            job_id,
        )
        assert status == 403
        assert ro.request("GET", f"/v1/jobs/{job_id}")[1]["job"]["state"] == "scheduled"
        assert ro.request("POST", f"/v1/jobs/{job_id}/pause")[0] == 200  # the token still can
    finally:
        context.close()
        assert ro.stop() == 0


def test_every_page_fits_a_phone_and_screenshots(
    browser: Browser, svc: Service, session: Any, tmp_path: Path
) -> None:
    schedule(svc, task="ok", cron="*/20 * * * *", timezone="America/New_York")
    job_id = schedule(svc, task="ok", interval_ms=900_000, payload={"report": "daily"})
    for size, pages in (
        (DESKTOP, ("overview", "upcoming")),
        (PHONE, ("overview", "jobs", "job", "queues")),
    ):
        context = browser.new_context(viewport=size, base_url=svc.url, storage_state=session)
        page = context.new_page()
        watch = Watch(page)
        for name in pages:
            target = {"overview": "/#/", "job": f"/#/jobs/{job_id}"}.get(name, f"/#/{name}")
            page.goto(target)
            expect(page.locator("main h1")).to_be_visible()
            page.wait_for_timeout(200)
            width = page.evaluate("document.documentElement.scrollWidth")
            assert width <= size["width"], (
                f"{name} is {width} px wide on a {size['width']} px screen"
            )
            shot(page, name if size is DESKTOP else f"phone-{name}", tmp_path)
        context.close()
        assert not watch.problems
