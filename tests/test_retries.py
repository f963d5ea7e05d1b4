"""Retry, replay, run retry and bulk retry over HTTP, on SQLite and PostgreSQL: tasks go
back to ``queued`` with a fresh budget, history kept, counters exact, finished runs
reopened, repeats moving nothing more, organisations and permissions respected."""

from __future__ import annotations

from typing import Any

from tests.conftest import Api
from tests.test_attempts import attempts, claim
from tests.test_runs import RUNS, TASKS, create_run, create_task
from tests.test_tasks import get_run, get_task, patch_task

ERROR = {"type": "ValueError", "message": "boom", "traceback": None}


def failed_task(api: Api, auth: dict[str, str], run_id: str, **create: Any) -> dict[str, Any]:
    task = create_task(api, auth, run_id, **create)
    claim(api, auth, task["id"], "job-1", "worker-a")
    response = patch_task(api, auth, task["id"], status="failed", errorData=ERROR)
    assert response.status_code == 200, response.text
    return dict(response.json())


def cancelled_task(api: Api, auth: dict[str, str], run_id: str, **create: Any) -> dict[str, Any]:
    task = create_task(api, auth, run_id, **create)
    assert patch_task(api, auth, task["id"], status="cancelled").status_code == 200
    return task


def completed_task(api: Api, auth: dict[str, str], run_id: str) -> dict[str, Any]:
    task = create_task(api, auth, run_id)
    claim(api, auth, task["id"], "job-1", "worker-a")
    assert patch_task(api, auth, task["id"], status="completed").status_code == 200
    return task


def retry(api: Api, auth: dict[str, str], task_id: str, **body: Any) -> Any:
    return api.client.post(f"{TASKS}/{task_id}/retry", headers=auth, json=body or None)


def counters(api: Api, auth: dict[str, str], run_id: str) -> tuple[str, int, int, int]:
    run = get_run(api, auth, run_id)
    return run["status"], run["totalTasks"], run["completedTasks"], run["failedTasks"]


def test_a_failed_task_runs_again_from_scratch_and_keeps_its_history(
    api: Api, auth: dict[str, str]
) -> None:
    run = create_run(api, auth)
    task = failed_task(api, auth, run["id"], maxRetries=2)
    assert counters(api, auth, run["id"]) == ("failed", 1, 0, 1)  # finished by itself
    response = retry(api, auth, task["id"])
    assert response.status_code == 200, response.text
    again = response.json()
    assert (again["status"], again["retryCount"], again["errorData"]) == ("queued", 0, None)
    assert again["completedAt"] is None and again["durationMs"] is None
    assert again["inputData"] == task["inputData"]
    assert counters(api, auth, run["id"]) == ("running", 1, 0, 0)  # reopened, not failed
    assert get_run(api, auth, run["id"])["completedAt"] is None

    claim(api, auth, task["id"], "job-2", "worker-b")
    assert (
        patch_task(api, auth, task["id"], status="completed", queueJobId="job-2").status_code == 200
    )
    assert [(a["number"], a["outcome"]) for a in attempts(api, auth, task["id"])] == [
        (1, "failed"),
        (2, "completed"),
    ]
    assert counters(api, auth, run["id"]) == ("completed", 1, 1, 0)  # and finished again


def test_a_replay_runs_with_the_new_input(api: Api, auth: dict[str, str]) -> None:
    run = create_run(api, auth)
    task = failed_task(api, auth, run["id"], inputData={"n": 1})
    response = retry(api, auth, task["id"], inputData={"n": 2})
    assert response.status_code == 200, response.text
    assert response.json()["inputData"] == {"n": 2}
    assert get_task(api, auth, task["id"])["inputData"] == {"n": 2}
    other = failed_task(api, auth, run["id"], inputData={"n": 1})
    assert retry(api, auth, other["id"], inputData=None).json()["inputData"] is None


def test_repeating_a_retry_changes_nothing(api: Api, auth: dict[str, str]) -> None:
    run = create_run(api, auth)
    task = failed_task(api, auth, run["id"])
    first = retry(api, auth, task["id"], inputData={"n": 5}).json()
    repeated = retry(api, auth, task["id"], inputData={"n": 5})
    assert repeated.status_code == 200 and repeated.json() == first
    assert retry(api, auth, task["id"]).json() == first
    assert counters(api, auth, run["id"]) == ("running", 1, 0, 0)
    other_input = retry(api, auth, task["id"], inputData={"n": 6})
    assert other_input.status_code == 409
    assert other_input.json()["code"] == "invalid_transition"


def test_a_completed_task_is_not_retried(api: Api, auth: dict[str, str]) -> None:
    run = create_run(api, auth)
    task = completed_task(api, auth, run["id"])
    response = retry(api, auth, task["id"])
    assert response.status_code == 409 and response.json()["code"] == "invalid_transition"
    assert "only a failed or cancelled task" in response.json()["error"]
    assert get_task(api, auth, task["id"])["status"] == "completed"


def test_retrying_a_task_of_a_finished_run_reopens_it(api: Api, auth: dict[str, str]) -> None:
    run = create_run(api, auth)
    completed_task(api, auth, run["id"])
    task = failed_task(api, auth, run["id"])
    closed = api.client.patch(f"{RUNS}/{run['id']}", headers=auth, json={"status": "failed"})
    assert closed.status_code == 200, closed.text
    assert closed.json()["completedAt"] is not None
    assert retry(api, auth, task["id"]).status_code == 200
    reopened = get_run(api, auth, run["id"])
    assert (reopened["status"], reopened["completedAt"], reopened["durationMs"]) == (
        "running",
        None,
        None,
    )
    assert counters(api, auth, run["id"]) == ("running", 2, 1, 0)


def test_a_cancelled_task_is_retried_without_touching_failed_counts(
    api: Api, auth: dict[str, str]
) -> None:
    run = create_run(api, auth)
    failed_task(api, auth, run["id"])
    task = cancelled_task(api, auth, run["id"])
    assert get_run(api, auth, run["id"])["cancelledTasks"] == 1
    assert retry(api, auth, task["id"]).json()["status"] == "queued"
    assert counters(api, auth, run["id"]) == ("running", 2, 0, 1)
    assert get_run(api, auth, run["id"])["cancelledTasks"] == 0


def test_retry_is_the_organisation_s_own_and_needs_tasks_update(api: Api) -> None:
    ours, theirs = api.headers("*", org="org-a"), api.headers("*", org="org-b")
    run = create_run(api, ours)
    task = failed_task(api, ours, run["id"])
    assert retry(api, theirs, task["id"]).status_code == 404
    assert api.client.post(f"{RUNS}/{run['id']}/retry", headers=theirs).status_code == 404
    bulk = api.client.post(f"{TASKS}/retry", headers=theirs, json={"runId": run["id"]})
    assert bulk.status_code == 404
    everything = api.client.post(f"{TASKS}/retry", headers=theirs, json={})
    assert everything.json() == {"moved": 0, "taskIds": []}
    read_only = api.headers("tasks:read,runs:read", org="org-a")
    assert retry(api, read_only, task["id"]).status_code == 403
    assert api.client.post(f"{RUNS}/{run['id']}/retry", headers=read_only).status_code == 403
    assert api.client.post(f"{TASKS}/retry", headers=read_only, json={}).status_code == 403
    assert get_task(api, ours, task["id"])["status"] == "failed"


def test_a_run_retry_moves_every_failed_and_cancelled_task_once(
    api: Api, auth: dict[str, str]
) -> None:
    run = create_run(api, auth)
    failed = [failed_task(api, auth, run["id"]) for _ in range(2)]
    cancelled = cancelled_task(api, auth, run["id"])
    completed_task(api, auth, run["id"])
    other_run = create_run(api, auth)
    untouched = failed_task(api, auth, other_run["id"])
    assert counters(api, auth, run["id"]) == ("failed", 4, 1, 2)

    response = api.client.post(f"{RUNS}/{run['id']}/retry", headers=auth)
    assert response.status_code == 200, response.text
    assert response.json()["moved"] == 3
    assert set(response.json()["taskIds"]) == {t["id"] for t in [*failed, cancelled]}
    assert counters(api, auth, run["id"]) == ("running", 4, 1, 0)
    assert get_task(api, auth, untouched["id"])["status"] == "failed"
    again = api.client.post(f"{RUNS}/{run['id']}/retry", headers=auth)
    assert again.json() == {"moved": 0, "taskIds": []}
    assert counters(api, auth, run["id"]) == ("running", 4, 1, 0)


def test_a_bulk_retry_moves_what_matches_the_filter(api: Api, auth: dict[str, str]) -> None:
    first, second = create_run(api, auth), create_run(api, auth)
    a1 = failed_task(api, auth, first["id"], type="charge")
    a2 = failed_task(api, auth, second["id"], type="charge")
    b1 = failed_task(api, auth, first["id"], type="email")
    c1 = cancelled_task(api, auth, second["id"], type="charge")

    def bulk(**body: Any) -> dict[str, Any]:
        response = api.client.post(f"{TASKS}/retry", headers=auth, json=body)
        assert response.status_code == 200, response.text
        return dict(response.json())

    assert bulk(type="charge", status="failed", limit=1) == {"moved": 1, "taskIds": [a1["id"]]}
    assert bulk(type="charge", status="failed") == {"moved": 1, "taskIds": [a2["id"]]}
    assert bulk(type="charge", status="failed") == {"moved": 0, "taskIds": []}
    created = get_task(api, auth, c1["id"])["createdAt"]
    assert bulk(createdBefore=created)["taskIds"] == [b1["id"]]
    assert bulk(createdAfter=created, runId=second["id"])["taskIds"] == [c1["id"]]
    assert counters(api, auth, first["id"]) == ("running", 2, 0, 0)
    assert counters(api, auth, second["id"]) == ("running", 2, 0, 0)
    bad = api.client.post(f"{TASKS}/retry", headers=auth, json={"status": "completed"})
    assert bad.status_code == 400 and bad.json()["details"][0]["field"] == "status"
    naive = api.client.post(f"{TASKS}/retry", headers=auth, json={"createdAfter": "2026-01-01"})
    assert naive.status_code == 400


def test_the_openapi_document_lists_the_retry_routes(api: Api) -> None:
    paths = api.client.get("/openapi.json").json()["paths"]
    for path in (
        "/api/v1/tasks/{taskId}/retry",
        "/api/v1/tasks/retry",
        "/api/v1/runs/{runId}/retry",
    ):
        assert "post" in paths[path], path
    retry_body = paths["/api/v1/tasks/{taskId}/retry"]["post"].get("requestBody", {})
    assert not retry_body.get("required", False)


def test_the_bulk_retry_path_is_not_a_task_id(api: Api, auth: dict[str, str]) -> None:
    for method in ("GET", "PATCH"):
        response = api.client.request(method, f"{TASKS}/retry", headers=auth, json={})
        assert response.status_code == 405, response.text
        assert response.headers["Allow"] == "POST"
        assert response.json()["code"] == "method_not_allowed"
