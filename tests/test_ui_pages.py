"""The dashboard's pages in process, on SQLite and PostgreSQL: sign-in and sessions, CSRF,
permissions, organisations, filters and search, actions through the API's storage. The
browser tests (``tests/test_ui.py``) drive the same pages in headless Chromium."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from foreman_api.storage import api_keys
from foreman_api.storage import runs as run_storage
from foreman_api.ui.session import COOKIE
from tests.conftest import Api
from tests.test_retries import ERROR, failed_task
from tests.test_runs import RUNS, create_run, create_task
from tests.test_tasks import get_run, get_task

READ_ONLY = "runs:read,tasks:read,rundata:read"
"""A key that may look at everything and change nothing."""
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def sign_in(api: Api, key: str, next_page: str = "/ui") -> httpx.Response:
    form = api.client.get("/ui/signin")
    token = CSRF.search(form.text)
    assert token is not None, form.text
    return api.client.post(
        "/ui/signin",
        data={"csrf_token": token[1], "api_key": key, "next": next_page},
        follow_redirects=False,
    )


def csrf_of(api: Api, path: str = "/ui") -> str:
    found = CSRF.search(api.client.get(path).text)
    assert found is not None
    return found[1]


def test_pages_need_a_session_and_the_cookie_is_strict(api: Api) -> None:
    response = api.client.get("/ui/runs/x?y=1", follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"] == "/ui/signin?next=/ui/runs/x%3Fy%3D1"
    signed = sign_in(api, api.key("*"), "/ui/failures")
    assert (signed.status_code, signed.headers["location"]) == (303, "/ui/failures")
    cookie = next(c for c in signed.headers.get_list("set-cookie") if c.startswith(COOKIE))
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Max-Age=28800" in cookie
    assert "Path=/ui" in cookie
    page = api.client.get("/ui")
    assert page.status_code == 200
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert "fmn_" not in page.text  # the key is nowhere in the page


@pytest.mark.parametrize(
    ("key", "status", "message"),
    [
        ("fmn_dev_" + "x" * 43, 401, "invalid API key"),
        ("not a key", 401, "malformed API key"),
    ],
)
def test_a_bad_key_is_refused_with_the_reason(
    api: Api, key: str, status: int, message: str
) -> None:
    response = sign_in(api, key)
    assert response.status_code == status
    assert message in response.text
    assert COOKIE not in response.cookies


def test_sign_in_goes_back_only_to_a_dashboard_page(api: Api) -> None:
    for target in ("https://evil.example/", "//evil.example/ui", "/api/v1/runs"):
        response = sign_in(api, api.key("*"), target)
        assert response.headers["location"] == "/ui"


def test_a_sign_in_form_without_its_token_is_refused(api: Api) -> None:
    response = api.client.post("/ui/signin", data={"csrf_token": "forged", "api_key": api.key("*")})
    assert response.status_code == 403
    assert COOKIE not in response.cookies


def test_signing_out_or_revoking_the_key_ends_the_session(api: Api) -> None:
    key = api.key("*")
    sign_in(api, key)
    token = csrf_of(api)
    assert api.client.post("/ui/signout", data={"csrf_token": token}).status_code == 200
    assert api.client.get("/ui", follow_redirects=False).status_code == 303
    sign_in(api, key)
    assert api.client.get("/ui").status_code == 200
    [record] = [r for r in api_keys.list_keys(api.engine) if r.prefix and key.startswith(r.prefix)]
    assert api_keys.revoke_key(api.engine, record.id)
    assert api.client.get("/ui", follow_redirects=False).status_code == 303


def test_actions_need_the_csrf_token_and_the_same_site(api: Api, auth: dict[str, str]) -> None:
    run = create_run(api, auth)
    task = failed_task(api, auth, run["id"])
    sign_in(api, api.key("*"))
    forged = api.client.post(f"/ui/tasks/{task['id']}/retry", data={"csrf_token": "nope"})
    assert forged.status_code == 403
    token = csrf_of(api)
    elsewhere = api.client.post(
        f"/ui/tasks/{task['id']}/retry",
        data={"csrf_token": token},
        headers={"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"},
    )
    assert elsewhere.status_code == 403
    assert get_task(api, auth, task["id"])["status"] == "failed"
    done = api.client.post(f"/ui/tasks/{task['id']}/retry", data={"csrf_token": token})
    assert done.status_code == 200 and "Task queued again." in done.text
    assert get_task(api, auth, task["id"])["status"] == "queued"


def test_a_read_only_key_sees_no_buttons_and_its_posts_are_forbidden(
    api: Api, auth: dict[str, str]
) -> None:
    run = create_run(api, auth)
    task = failed_task(api, auth, run["id"])
    sign_in(api, api.key(READ_ONLY))
    for path in (f"/ui/runs/{run['id']}", f"/ui/tasks/{task['id']}", "/ui/failures"):
        text = api.client.get(path).text
        buttons = set(re.findall(r"<button[^>]*>([^<]+)</button>", text))
        assert buttons <= {"Sign out", "Filter", "Filter data"}, (path, buttons)
    token = csrf_of(api)
    for path in (
        f"/ui/runs/{run['id']}/cancel",
        f"/ui/runs/{run['id']}/retry",
        f"/ui/tasks/{task['id']}/retry",
        "/ui/failures/retry",
    ):
        response = api.client.post(path, data={"csrf_token": token, "all": "1"})
        assert response.status_code == 403, path
        assert "Forbidden" in response.text
    assert get_run(api, auth, run["id"])["status"] == "failed"


def test_another_organisations_ids_are_not_found(api: Api, auth: dict[str, str]) -> None:
    run = create_run(api, auth)
    task = failed_task(api, auth, run["id"])
    sign_in(api, api.key("*", org="org-b"))
    for path in (
        f"/ui/runs/{run['id']}",
        f"/ui/tasks/{task['id']}",
        "/ui/runs/not-an-id",
        "/ui/no-such-page",
    ):
        response = api.client.get(path)
        assert response.status_code == 404, path
        assert "<h1>Not found</h1>" in response.text
    assert api.client.get("/ui/", follow_redirects=False).headers["location"] == "/ui"
    token = csrf_of(api)
    cancel = api.client.post(f"/ui/runs/{run['id']}/cancel", data={"csrf_token": token})
    assert cancel.status_code == 404
    assert "No runs match." in api.client.get("/ui").text


def _listed(api: Api, query: str) -> list[str]:
    text = api.client.get(f"/ui?{query}").text
    return re.findall(r'href="/ui/runs/([0-9a-f-]{36})"', text)


def test_runs_are_filtered_by_status_time_id_and_metadata(api: Api, auth: dict[str, str]) -> None:
    runs: list[dict[str, Any]] = [
        create_run(api, auth, metadata={"customer": f"c-{i}", "note": f"Batch_{i}%"})
        for i in range(3)
    ]
    failed_task(api, auth, runs[1]["id"])
    sign_in(api, api.key("*"))
    ids = [run["id"] for run in runs]
    assert _listed(api, "") == ids[::-1]  # newest first
    assert '<span class="tag">customer=c-2</span>' in api.client.get("/ui").text
    assert _listed(api, "status=failed") == [ids[1]]
    assert _listed(api, "window=15m") == ids[::-1]
    assert _listed(api, "q=customer%3Dc-2") == [ids[2]]
    assert _listed(api, f"q={ids[0]}") == [ids[0]]
    assert _listed(api, f"q={ids[0][:8]}") == [ids[0]]
    assert _listed(api, "q=batch_1%25") == [ids[1]]  # text, any case; % and _ literal
    assert _listed(api, "q=batch%25") == []
    assert api.client.get("/ui?status=nope").status_code == 400
    assert api.client.get("/ui?page=99999999999").status_code == 200  # past the end
    assert api.client.get("/ui?page=x").status_code == 400


def test_run_page_shows_the_tree_data_and_cancels(api: Api, auth: dict[str, str]) -> None:
    run = create_run(api, auth)
    parent = create_task(api, auth, run["id"], type="parent")
    child = create_task(api, auth, run["id"], type="child", parentTaskId=parent["id"])
    for key, tags in (("order", ["v1"]), ("other", ["v2"])):
        body = {"key": key, "value": {"k": key}, "tags": tags, "taskId": child["id"]}
        assert api.client.post(f"{RUNS}/{run['id']}/data", headers=auth, json=body).is_success
    sign_in(api, api.key("*"))
    text = api.client.get(f"/ui/runs/{run['id']}").text
    assert re.search(rf'class="mono d1">.*?/ui/tasks/{child["id"]}', text)
    assert 'hx-trigger="every 2s"' in text  # unfinished: polls
    filtered = api.client.get(f"/ui/runs/{run['id']}?key=or&tag=v1").text
    assert "order" in filtered and "&#34;other&#34;" not in filtered
    live = api.client.get(
        f"/ui/runs/{run['id']}", headers={"HX-Request": "true", "HX-Target": "run-live"}
    )
    assert live.text.startswith('<div id="run-live"') and "<html" not in live.text
    token = csrf_of(api)
    cancelled = api.client.post(f"/ui/runs/{run['id']}/cancel", data={"csrf_token": token})
    assert "Run cancelled." in cancelled.text
    assert 'hx-trigger="every 2s"' not in cancelled.text  # finished: stops polling
    assert get_task(api, auth, child["id"])["status"] == "cancelled"


def test_failures_are_grouped_and_retried_in_bulk(api: Api, auth: dict[str, str]) -> None:
    run = create_run(api, auth)
    tasks = [failed_task(api, auth, run["id"], type="charge") for _ in range(3)]
    other = failed_task(api, auth, run["id"], type="ship")
    sign_in(api, api.key("*"))
    page = api.client.get("/ui/failures").text
    assert re.search(r"<td>charge</td>\s*<td class=\"mono\">ValueError</td>\s*<td[^>]*>3<", page)
    token = csrf_of(api)
    one = api.client.post(
        "/ui/failures/retry", data={"csrf_token": token, "task_id": tasks[0]["id"]}
    )
    assert "1 task(s) queued again." in one.text
    group = api.client.post(
        "/ui/failures/retry",
        data={"csrf_token": token, "all": "1", "type": "charge", "error": ERROR["type"]},
    )
    assert "2 task(s) queued again." in group.text
    assert [get_task(api, auth, t["id"])["status"] for t in tasks] == ["queued"] * 3
    assert get_task(api, auth, other["id"])["status"] == "failed"


def test_replay_checks_the_json_on_the_server_too(api: Api, auth: dict[str, str]) -> None:
    run = create_run(api, auth)
    task = failed_task(api, auth, run["id"])
    sign_in(api, api.key("*"))
    token = csrf_of(api)
    bad = api.client.post(
        f"/ui/tasks/{task['id']}/retry",
        data={"csrf_token": token, "replay": "1", "input_json": "{nope"},
    )
    assert bad.status_code == 400 and "not valid JSON" in bad.text
    good = api.client.post(
        f"/ui/tasks/{task['id']}/retry",
        data={"csrf_token": token, "replay": "1", "input_json": '{"x": 2}'},
    )
    assert "Task replayed with the new input." in good.text
    assert get_task(api, auth, task["id"])["inputData"] == {"x": 2}


def test_docs_load_nothing_from_the_internet(api: Api) -> None:
    page = api.client.get("/docs")
    assert page.status_code == 200
    assert "http://" not in page.text and "https://" not in page.text
    for asset in re.findall(r'(?:src|href)="(/static/[^"]+)"', page.text):
        assert api.client.get(asset).status_code == 200, asset
    assert api.client.get("/redoc").status_code == 404


def test_a_database_outage_is_a_page_that_says_so(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    sign_in(api, api.key("*"))

    async def unavailable(*_args: Any, **_kwargs: Any) -> None:
        raise sa.exc.TimeoutError("no connection free")

    monkeypatch.setattr(run_storage, "list_runs", unavailable)
    response = api.client.get("/ui")
    assert response.status_code == 503
    assert "<h1>Unavailable</h1>" in response.text and "try again" in response.text
    assert response.headers["retry-after"]
