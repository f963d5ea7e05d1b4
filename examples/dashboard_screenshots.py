"""Screenshots of the dashboard for the README, from the demo's pipeline.

Runs the demo's set-up in a temporary directory (SQLite, a client key, ``foreman-api
serve``, one ``foreman-worker`` on examples/order_pipeline.py, Redis or an embedded
fakeredis), submits six orders (one of them worth nothing, so its validation fails) and a
run whose task nobody has picked up yet, waits for the orders to finish, then signs in
with headless Chromium (``/usr/bin/chromium``, through Playwright from the ``dev`` extra)
and writes PNGs to ``docs/img/``:

    .venv/bin/python examples/dashboard_screenshots.py
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from playwright.sync_api import Page, sync_playwright  # noqa: E402

from examples.demo import (  # noqa: E402
    free_port,
    process,
    redis_url,
    say,
    wait_for_api,
    wait_for_worker,
)
from examples.order_pipeline import Order, OrderLine, start_order  # noqa: E402
from foreman_api.auth import issue_key  # noqa: E402
from foreman_api.schemas import TERMINAL_RUN_STATUSES  # noqa: E402
from foreman_api.storage.engine import create_engine  # noqa: E402
from foreman_api.storage.migrate import upgrade  # noqa: E402
from foreman_worker import ForemanClient  # noqa: E402

OUT = REPO / "docs" / "img"
CHROMIUM = "/usr/bin/chromium"


def orders() -> list[Order]:
    lines = [OrderLine(sku="book", quantity=2, unit_price_cents=1250)]
    made = [
        Order(order_id=f"order-{n}", customer_id=f"c-{n}", email=f"u{n}@example.com", lines=lines)
        for n in range(101, 106)
    ]
    free = [OrderLine(sku="sample", quantity=1, unit_price_cents=0)]
    made.insert(2, Order(order_id="order-0", customer_id="c-7", email="x@example.com", lines=free))
    return made


def wait_finished(client: ForemanClient, run_ids: list[str], timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = [client.get_run(run_id).unwrap() for run_id in run_ids]
        if all(run.status in TERMINAL_RUN_STATUSES for run in runs):
            return
        time.sleep(0.3)
    raise SystemExit("screenshots: the orders did not finish in time")


def shoot(page: Page, url: str, name: str, *, full: bool = False) -> None:
    page.goto(url)
    page.wait_for_load_state("networkidle")
    path = OUT / name
    page.screenshot(path=str(path), full_page=full)
    say(f"wrote {path.relative_to(REPO)}")


def main() -> None:
    workdir = Path(tempfile.mkdtemp(prefix="foreman_screens_"))
    database_url = f"sqlite:///{workdir / 'demo.db'}"
    engine = create_engine(database_url, pool_size=1)
    upgrade(engine)
    key, _ = issue_key(
        engine, env="dev", org_id="demo", name="screens", permissions=["*"], rate_limit="unlimited"
    )
    engine.dispose()
    port = free_port()
    api_url = f"http://127.0.0.1:{port}"
    configured_redis = os.environ.pop("FOREMAN_REDIS_URL", None)
    serve = ["-m", "foreman_api.cli", "serve", "--port", str(port), "--log-level", "warning"]
    with (
        redis_url(configured_redis) as redis_address,
        process("foreman-api", serve, {"FOREMAN_DATABASE_URL": database_url}) as api,
        ForemanClient(api_url, key) as client,
    ):
        wait_for_api(api_url, api)
        os.environ["FOREMAN_REDIS_URL"] = redis_address
        worker_env = {
            "FOREMAN_API_URL": api_url,
            "FOREMAN_API_KEY": key,
            "FOREMAN_REDIS_URL": redis_address,
        }
        worker = ["-m", "foreman_worker.cli", "--app", "examples.order_pipeline"]
        with process("foreman-worker", [*worker, "--log-level", "WARNING"], worker_env):
            wait_for_worker(client)
            started = [start_order(client, order) for order in orders()]
            run_ids = [str(run.id) for run, _ in started]
            wait_finished(client, run_ids)
            waiting = client.create_run({"orderId": "order-106"}, metadata={"pipeline": "orders"})
            client.create_task(waiting.unwrap().id, "validate-order").unwrap()
            failed = next(
                first for run, first in started if run.input_data["order_id"] == "order-0"
            )
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=CHROMIUM)
                page = browser.new_page(viewport={"width": 1280, "height": 720})
                page.goto(f"{api_url}/ui/signin")
                page.get_by_label("API key").fill(key)
                page.get_by_role("button", name="Sign in").click()
                page.wait_for_url(f"{api_url}/ui")
                OUT.mkdir(parents=True, exist_ok=True)
                shoot(page, f"{api_url}/ui", "ui-runs.png")
                shoot(page, f"{api_url}/ui/runs/{run_ids[0]}", "ui-run.png", full=True)
                shoot(page, f"{api_url}/ui/tasks/{failed.id}", "ui-task.png", full=True)
                shoot(page, f"{api_url}/ui/failures", "ui-failures.png")
                page.set_viewport_size({"width": 390, "height": 844})
                shoot(page, f"{api_url}/ui", "ui-runs-phone.png")
                browser.close()


if __name__ == "__main__":
    main()
