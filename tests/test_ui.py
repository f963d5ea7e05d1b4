"""The dashboard in a real headless Chromium (Playwright) against a real ``foreman-api``
process: sign in, read a failed task's traceback, retry it and watch it complete without
reloading, replay with edited input on a real worker, filter and page through 1,000 runs,
a read-only key, another organisation's ids, a phone-sized screen, and ``/docs``.

Every test fails if a page logs a console error (a Content-Security-Policy violation
included) or requests anything but 127.0.0.1. Chromium comes from the system
(``apt-get install -y chromium``: Playwright cannot download browsers here); without it
these tests skip, and fail under ``CI=true``.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
import sqlalchemy as sa
from playwright.sync_api import Browser, Page, Request, Route, expect, sync_playwright

from foreman_api.auth import issue_key
from foreman_api.schemas import Task, TaskStatus
from foreman_api.storage.engine import create_engine
from foreman_api.storage.tables import runs
from foreman_worker import ForemanClient
from tests.services import unavailable
from tests.test_worker_integration import (  # noqa: F401  (fixtures)
    ApiServer,
    Workers,
    api,
    client,
    conn,
    new_task,
    wait_terminal,
    workers,
)

pytestmark = pytest.mark.integration

CHROMIUM = Path("/usr/bin/chromium")
READ_ONLY = ["runs:read", "tasks:read", "rundata:read"]
TRACEBACK = (
    "Traceback (most recent call last):\n"
    '  File "pipeline.py", line 12, in charge\n'
    "    raise ValueError('card declined')\n"
    "ValueError: card declined"
)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        unavailable(f"{CHROMIUM} is missing (apt-get install -y chromium)")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM))
        yield launched
        launched.close()


@dataclass
class Watched:
    """A browser page whose console errors and outside requests are collected."""

    page: Page
    problems: list[str] = field(default_factory=list)
    expected: list[str] = field(default_factory=list)
    """Console errors a test expects (the 404 of a page it opens on purpose)."""

    def console(self, kind: str, text: str) -> None:
        if kind == "error" and not any(part in text for part in self.expected):
            self.problems.append(f"console {kind}: {text}")


def _local_only(problems: list[str]) -> Callable[[Route, Request], None]:
    def route(route: Route, request: Request) -> None:
        url = urlparse(request.url)
        if url.scheme in ("data", "blob") or url.hostname == "127.0.0.1":
            route.continue_()
        else:
            problems.append(f"request to {request.url}")
            route.abort()

    return route


@pytest.fixture
def watched(browser: Browser) -> Iterator[Callable[..., Watched]]:
    """Open pages (``watched(width=…)``); each fails its test on a console error or a
    request beyond 127.0.0.1."""
    opened: list[Watched] = []

    def open_page(width: int = 1280, height: int = 900) -> Watched:
        context = browser.new_context(viewport={"width": width, "height": height})
        one = Watched(page=context.new_page())
        context.route("**/*", _local_only(one.problems))
        one.page.on("console", lambda message: one.console(message.type, message.text))
        one.page.on("pageerror", lambda exc: one.problems.append(f"page error: {exc}"))
        opened.append(one)
        return one

    yield open_page
    for one in opened:
        one.page.context.close()
    problems = [problem for one in opened for problem in one.problems]
    assert not problems, problems


def new_key(api: ApiServer, org: str, permissions: list[str]) -> str:
    engine = create_engine(api.env["FOREMAN_DATABASE_URL"], pool_size=1)
    try:
        secret, _ = issue_key(
            engine,
            env="dev",
            org_id=org,
            name=f"ui-{uuid.uuid4().hex[:6]}",
            permissions=permissions,
            rate_limit="unlimited",
        )
    finally:
        engine.dispose()
    return secret


def sign_in(page: Page, api: ApiServer, key: str, path: str = "/ui") -> None:
    page.goto(f"{api.url}{path}")
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    page.get_by_label("API key").fill(key)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(re.compile(re.escape(api.url + path) + r"$"))


def failed_task(client: ForemanClient, run_id: uuid.UUID, parent: Task | None = None) -> Task:
    """A task that failed with a traceback, driven through the API."""
    task = client.create_task(
        run_id,
        "charge-card",
        input_data={"card": "4242"},
        parent_task_id=parent.id if parent else None,
    ).unwrap()
    client.update_task(task.id, status=TaskStatus.RUNNING, queue_job_id="job-1").unwrap()
    error = {"type": "ValueError", "message": "card declined", "traceback": TRACEBACK}
    client.update_task(
        task.id, status=TaskStatus.FAILED, queue_job_id="job-1", error_data=error
    ).unwrap()
    return task


def test_docs_work_offline(api: ApiServer, watched: Callable[..., Watched]) -> None:
    page = watched().page
    page.goto(f"{api.url}/docs")
    expect(page.locator(".swagger-ui .info .title")).to_contain_text("Foreman API")
    expect(page.get_by_text("/api/v1/runs/{runId}").first).to_be_visible()


def test_sign_in_read_a_traceback_retry_and_watch_it_complete_live(
    api: ApiServer, client: ForemanClient, watched: Callable[..., Watched]
) -> None:
    run = client.create_run({"order": 7}, metadata={"customer": "c-7"}).unwrap()
    root = client.create_task(run.id, "validate-order", input_data={"order": 7}).unwrap()
    task = failed_task(client, run.id, parent=root)
    page = watched().page
    sign_in(page, api, api.key)
    expect(page.locator("#runs")).to_have_attribute("hx-trigger", "every 2s")  # a run is live

    page.get_by_role("link", name=str(run.id)[:8]).click()
    expect(page.locator("h1")).to_contain_text("running")
    child_cell = page.locator("table.tree td.d1")
    expect(child_cell).to_contain_text(str(task.id)[:8])  # nested under its parent
    expect(page.get_by_role("button", name="Retry failed tasks")).to_be_visible()
    expect(page.get_by_role("button", name="Cancel run")).to_be_visible()

    child_cell.get_by_role("link").click()
    expect(page.locator("pre.traceback").first).to_contain_text("ValueError: card declined")
    expect(page.locator("pre.traceback").first).to_contain_text('File "pipeline.py", line 12')
    page.get_by_role("button", name="Retry", exact=True).click()
    expect(page.locator(".flash")).to_have_text("Task queued again.")
    heading = page.locator("#task-live h1")
    expect(heading).to_contain_text("queued")

    run_page = page.context.new_page()  # the run's page, open beside the task's
    run_page.goto(f"{api.url}/ui/runs/{run.id}?key=&tag=")
    expect(run_page.locator("h1")).to_contain_text("running")
    for shown in (page, run_page):
        shown.evaluate("window.__sameDocument = true")
    tasks_at = run_page.locator("section.tasks").bounding_box()
    scrolled = page.evaluate("window.scrollTo(0, 120); window.scrollY")
    client.update_task(task.id, status=TaskStatus.RUNNING, queue_job_id="job-2").unwrap()
    expect(heading).to_contain_text("running", timeout=10_000)
    client.update_task(
        task.id, status=TaskStatus.COMPLETED, queue_job_id="job-2", output_data={"charged": True}
    ).unwrap()
    expect(heading).to_contain_text("completed", timeout=10_000)
    expect(page.locator("#task-live")).to_contain_text('"charged"')
    assert page.evaluate("window.scrollY") == scrolled
    expect(page.locator("#task-live")).not_to_have_attribute("hx-trigger", re.compile("."))
    expect(page.get_by_role("button", name="Retry", exact=True)).to_have_count(0)

    for step in (TaskStatus.RUNNING, TaskStatus.COMPLETED):  # the last task: the run ends
        client.update_task(root.id, status=step, queue_job_id="job-3").unwrap()
    expect(run_page.locator("h1")).to_contain_text("completed", timeout=10_000)
    expect(run_page.locator("table.tree")).not_to_contain_text("failed")
    expect(run_page.get_by_role("button", name="Cancel run")).to_have_count(0)
    assert run_page.locator("section.tasks").bounding_box() == tasks_at  # nothing moved
    assert "key=&tag=" in run_page.url  # its filters kept
    for shown in (page, run_page):  # updated in place, never reloaded
        assert shown.evaluate("window.__sameDocument") is True


def test_replay_with_edited_input_completes_on_a_real_worker(
    api: ApiServer,
    workers: Workers,
    client: ForemanClient,
    new_task: Callable[..., Task],
    watched: Callable[..., Watched],
) -> None:
    task = new_task("itest.typed", {"x": 1, "y": "north"})  # invalid input: fails at once
    assert wait_terminal(client, task).status is TaskStatus.FAILED
    page = watched().page
    sign_in(page, api, api.key, f"/ui/tasks/{task.id}")
    expect(page.locator(".problem").first).to_contain_text("y")
    editor = page.get_by_label("Input (JSON)")
    editor.fill('{"x": 1, "y": ')
    page.get_by_role("button", name="Replay").click()
    expect(page.get_by_role("alert")).to_contain_text("Not valid JSON")
    expect(editor).to_have_attribute("aria-invalid", "true")
    assert page.url.endswith(f"/ui/tasks/{task.id}")  # nothing was sent
    editor.fill('{"x": 1, "y": 2}')
    expect(page.get_by_role("alert")).to_be_hidden()
    page.get_by_role("button", name="Replay").click()
    expect(page.locator(".flash")).to_have_text("Task replayed with the new input.")
    heading = page.locator("#task-live h1")
    # the reconciler enqueues a retried task within two scan intervals (10 s) and 5 s
    expect(heading).to_contain_text("completed", timeout=40_000)
    expect(page.locator("#task-live")).to_contain_text('"x"')
    assert client.get_task(task.id).unwrap().output_data == {"x": 2, "y": 1}

    page.get_by_role("link", name="Workers").click()
    expect(page.locator("#workers tbody tr")).to_have_count(len(workers.processes))
    expect(page.locator("#workers")).to_contain_text("itest.typed")
    page.get_by_role("link", name="Queues").click()
    queue = page.locator("#queues tbody tr", has_text=workers.queue)
    expect(queue.locator("td").last).to_have_text(str(len(workers.processes)))


def _insert_runs(api: ApiServer, org: str, count: int) -> None:
    """``count`` runs straight into the database: one a minute, every tenth failed."""
    start = datetime.now(UTC) - timedelta(minutes=count)
    rows: list[dict[str, Any]] = []
    for i in range(count):
        at = start + timedelta(minutes=i)
        failed = i % 10 == 0
        rows.append(
            {
                "id": uuid.uuid4(),
                "org_id": org,
                "status": "failed" if failed else "completed",
                "input_data": {"n": i},
                "metadata": {"customer": f"c-{i}"},
                "total_tasks": 2,
                "completed_tasks": 1 if failed else 2,
                "failed_tasks": 1 if failed else 0,
                "cancelled_tasks": 0,
                "created_at": at,
                "updated_at": at,
                "started_at": at,
                "completed_at": at + timedelta(seconds=3),
                "duration_ms": 3000,
            }
        )
    engine = create_engine(api.env["FOREMAN_DATABASE_URL"], pool_size=1)
    try:
        with engine.begin() as connection:
            connection.execute(sa.insert(runs), rows)
    finally:
        engine.dispose()


def test_filter_and_page_through_1000_runs(api: ApiServer, watched: Callable[..., Watched]) -> None:
    org = f"paging-{uuid.uuid4().hex[:6]}"
    _insert_runs(api, org, 1000)
    page = watched().page
    sign_in(page, api, new_key(api, org, ["*"]))
    count = page.locator("p.count")
    expect(count).to_have_text("Showing 1 to 50 of 1,000 runs")
    expect(page.locator("table.runs tbody tr")).to_have_count(50)
    page.get_by_role("link", name=re.compile("^Next")).click()
    expect(count).to_have_text("Showing 51 to 100 of 1,000 runs")
    page.get_by_role("link", name=re.compile("^Last")).click()
    expect(count).to_have_text("Showing 951 to 1,000 of 1,000 runs")
    expect(page.locator(".pager .where")).to_have_text("Page 20 of 20")
    expect(page.locator("table.runs tbody tr").last).to_contain_text("failed")  # the oldest
    page.get_by_role("link", name=re.compile("Previous$")).click()
    expect(count).to_have_text("Showing 901 to 950 of 1,000 runs")

    page.goto(f"{api.url}/ui")
    page.get_by_label("Status").select_option("failed")
    page.get_by_role("button", name="Filter").click()
    expect(count).to_have_text("Showing 1 to 50 of 100 runs")
    assert "status=failed" in page.url
    page.get_by_role("link", name=re.compile("^Next")).click()
    expect(count).to_have_text("Showing 51 to 100 of 100 runs")
    assert "status=failed" in page.url and "page=2" in page.url  # the filter stays
    page.reload()
    expect(page.get_by_label("Status")).to_have_value("failed")

    page.get_by_label("Search").fill("customer=c-990")
    page.get_by_role("button", name="Filter").click()
    expect(count).to_have_text("Showing 1 to 1 of 1 runs")
    page.get_by_label("Status").select_option("")
    page.get_by_label("Created").select_option("1h")
    page.get_by_label("Search").fill("")
    page.get_by_role("button", name="Filter").click()
    expect(count).to_have_text(re.compile(r"of (59|60|61) runs"))  # one a minute


def test_read_only_key_sees_no_action_buttons_and_a_post_is_refused(
    api: ApiServer, client: ForemanClient, watched: Callable[..., Watched]
) -> None:
    run = client.create_run({"read": "only"}).unwrap()
    task = failed_task(client, run.id)
    page = watched().page
    sign_in(page, api, new_key(api, "itest", READ_ONLY), f"/ui/runs/{run.id}")
    expect(page.locator("table.tree")).to_contain_text("charge-card")
    actions = re.compile("Cancel run|Retry|Replay")
    expect(page.get_by_role("button", name=actions)).to_have_count(0)
    page.goto(f"{api.url}/ui/tasks/{task.id}")
    expect(page.locator("pre.traceback").first).to_contain_text("card declined")
    expect(page.get_by_role("button", name=actions)).to_have_count(0)
    page.goto(f"{api.url}/ui/failures")
    expect(page.get_by_role("button", name=actions)).to_have_count(0)
    token = page.locator("input[name=csrf_token]").first.get_attribute("value")
    refused = page.request.post(
        f"{api.url}/ui/tasks/{task.id}/retry",
        form={"csrf_token": token or ""},
        headers={"Origin": api.url},
        max_redirects=0,
    )
    assert refused.status == 403
    assert client.get_task(task.id).unwrap().status is TaskStatus.FAILED


def test_another_organisations_run_is_not_found(
    api: ApiServer, client: ForemanClient, watched: Callable[..., Watched]
) -> None:
    run = client.create_run({"secret": True}).unwrap()
    other = watched()
    page = other.page
    sign_in(page, api, new_key(api, f"other-{uuid.uuid4().hex[:6]}", ["*"]))
    other.expected.append("the server responded with a status of 404")  # Chromium's own
    response = page.goto(f"{api.url}/ui/runs/{run.id}")
    assert response is not None and response.status == 404
    expect(page.get_by_role("heading", name="Not found")).to_be_visible()
    expect(page.locator("main")).not_to_contain_text(str(run.id))


def test_pages_fit_a_phone_screen(
    api: ApiServer, client: ForemanClient, watched: Callable[..., Watched]
) -> None:
    run = client.create_run({"phone": True}).unwrap()
    failed_task(client, run.id)
    page = watched(width=390, height=844).page
    sign_in(page, api, api.key)
    for path in ("/ui", f"/ui/runs/{run.id}", "/ui/failures"):
        page.goto(f"{api.url}{path}")
        overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, (path, overflow)
