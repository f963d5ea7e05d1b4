"""Runs over HTTP, on SQLite and PostgreSQL: create, read, update, list, cancel, isolation."""

from __future__ import annotations

import re
import uuid
from typing import Any

import pytest

from tests.conftest import Api

RUNS = "/api/v1/runs"
TASKS = "/api/v1/tasks"
TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def create_run(api: Api, auth: dict[str, str], **body: Any) -> dict[str, Any]:
    response = api.client.post(RUNS, headers=auth, json={"inputData": {"n": 1}, **body})
    assert response.status_code == 201, response.text
    return dict(response.json())


def create_task(api: Api, auth: dict[str, str], run_id: str, **body: Any) -> dict[str, Any]:
    response = api.client.post(TASKS, headers=auth, json={"runId": run_id, "type": "t", **body})
    assert response.status_code == 201, response.text
    return dict(response.json())


def patch_run(api: Api, auth: dict[str, str], run_id: str, **body: Any) -> Any:
    return api.client.patch(f"{RUNS}/{run_id}", headers=auth, json=body)


def test_create_run_returns_a_pending_run(api: Api, auth: dict[str, str]) -> None:
    run = create_run(api, auth, metadata={"owner": "me"})
    assert uuid.UUID(run["id"]).version == 4
    assert run["orgId"] == "org-a"
    assert run["status"] == "pending"
    assert run["inputData"] == {"n": 1}
    assert run["metadata"] == {"owner": "me"}
    assert (run["totalTasks"], run["completedTasks"], run["failedTasks"]) == (0, 0, 0)
    assert TIMESTAMP.match(run["createdAt"]) and run["createdAt"] == run["updatedAt"]
    assert run["startedAt"] is None and run["completedAt"] is None and run["durationMs"] is None
    assert run["outputData"] is None and run["errorData"] is None

    fetched = api.client.get(f"{RUNS}/{run['id']}", headers=auth)
    assert fetched.status_code == 200
    assert fetched.json() == run


@pytest.mark.parametrize("value", [None, 0, "text", [1, [2]], {"deep": {"er": [True]}}])
def test_input_data_is_any_json(api: Api, auth: dict[str, str], value: Any) -> None:
    run = create_run(api, auth, inputData=value)
    assert api.client.get(f"{RUNS}/{run['id']}", headers=auth).json()["inputData"] == value


def test_run_lifecycle_sets_timestamps(api: Api, auth: dict[str, str]) -> None:
    run = create_run(api, auth)
    running = patch_run(api, auth, run["id"], status="running")
    assert running.status_code == 200
    assert running.json()["status"] == "running"
    assert TIMESTAMP.match(running.json()["startedAt"])

    done = patch_run(api, auth, run["id"], status="completed", outputData={"ok": True})
    assert done.status_code == 200
    body = done.json()
    assert body["status"] == "completed"
    assert body["outputData"] == {"ok": True}
    assert TIMESTAMP.match(body["completedAt"])
    assert isinstance(body["durationMs"], int) and body["durationMs"] >= 0
    assert body["startedAt"] == running.json()["startedAt"]


def test_patch_to_the_current_status_is_a_no_op(api: Api, auth: dict[str, str]) -> None:
    run = create_run(api, auth)
    patch_run(api, auth, run["id"], status="running")
    first = patch_run(api, auth, run["id"], status="failed", errorData={"why": "x"}).json()
    again = patch_run(api, auth, run["id"], status="failed")
    assert again.status_code == 200
    assert again.json() == first


RUN_STATUSES = ["pending", "running", "completed", "failed", "cancelled"]


@pytest.mark.parametrize(
    ("terminal", "target"),
    [(t, s) for t in ("completed", "failed", "cancelled") for s in RUN_STATUSES if s != t],
)
def test_leaving_a_terminal_status_is_409(
    api: Api, auth: dict[str, str], terminal: str, target: str
) -> None:
    run = create_run(api, auth)
    if terminal != "cancelled":
        patch_run(api, auth, run["id"], status="running")
    assert patch_run(api, auth, run["id"], status=terminal).status_code == 200
    response = patch_run(api, auth, run["id"], status=target)
    assert response.status_code == 409
    body = response.json()
    assert body["code"] == "invalid_transition"
    assert terminal in body["error"] and target in body["error"]
    assert api.client.get(f"{RUNS}/{run['id']}", headers=auth).json()["status"] == terminal


@pytest.mark.parametrize("target", ["completed", "failed"])
def test_pending_run_cannot_finish_without_starting(
    api: Api, auth: dict[str, str], target: str
) -> None:
    run = create_run(api, auth)
    response = patch_run(api, auth, run["id"], status=target)
    assert response.status_code == 409
    assert "pending" in response.json()["error"] and target in response.json()["error"]


def test_running_back_to_pending_is_409(api: Api, auth: dict[str, str]) -> None:
    run = create_run(api, auth)
    patch_run(api, auth, run["id"], status="running")
    response = patch_run(api, auth, run["id"], status="pending")
    assert response.status_code == 409
    assert "running" in response.json()["error"] and "pending" in response.json()["error"]


def test_patch_fields_without_status(api: Api, auth: dict[str, str]) -> None:
    run = create_run(api, auth, metadata={"a": 1})
    response = patch_run(api, auth, run["id"], metadata={"b": 2}, outputData=[1, 2])
    assert response.status_code == 200
    body = response.json()
    assert body["metadata"] == {"b": 2} and body["outputData"] == [1, 2]
    assert body["status"] == "pending"
    cleared = patch_run(api, auth, run["id"], outputData=None).json()
    assert cleared["outputData"] is None and cleared["metadata"] == {"b": 2}


def test_cancelling_a_run_cancels_its_unfinished_tasks(api: Api, auth: dict[str, str]) -> None:
    run = create_run(api, auth)
    tasks = [create_task(api, auth, run["id"]) for _ in range(6)]
    moves = {
        0: ["running", "completed"],
        1: ["running", "failed"],
        2: ["queued"],
        3: ["running"],
        4: ["running", "retrying"],
        5: [],
    }
    for index, statuses in moves.items():
        for status in statuses:
            response = api.client.patch(
                f"{TASKS}/{tasks[index]['id']}", headers=auth, json={"status": status}
            )
            assert response.status_code == 200, response.text

    cancelled = patch_run(api, auth, run["id"], status="cancelled")
    assert cancelled.status_code == 200
    body = cancelled.json()
    assert body["status"] == "cancelled"
    assert (body["totalTasks"], body["completedTasks"], body["failedTasks"]) == (6, 1, 1)

    statuses = [api.client.get(f"{TASKS}/{task['id']}", headers=auth).json() for task in tasks]
    assert [t["status"] for t in statuses] == [
        "completed",
        "failed",
        "cancelled",
        "cancelled",
        "cancelled",
        "cancelled",
    ]
    for task in statuses[2:]:
        assert TIMESTAMP.match(task["completedAt"])
    assert statuses[5]["durationMs"] is None  # never started
    assert isinstance(statuses[3]["durationMs"], int)


def test_creating_a_task_in_a_terminal_run_is_409(api: Api, auth: dict[str, str]) -> None:
    run = create_run(api, auth)
    patch_run(api, auth, run["id"], status="cancelled")
    response = api.client.post(TASKS, headers=auth, json={"runId": run["id"], "type": "t"})
    assert response.status_code == 409
    assert "cancelled" in response.json()["error"]
    assert api.client.get(f"{RUNS}/{run['id']}", headers=auth).json()["totalTasks"] == 0


def test_another_organisations_run_is_404(api: Api, auth: dict[str, str]) -> None:
    run = create_run(api, auth)
    other = api.headers(org="org-b")
    assert api.client.get(f"{RUNS}/{run['id']}", headers=other).status_code == 404
    response = patch_run(api, other, run["id"], status="cancelled")
    assert response.status_code == 404
    assert response.json()["code"] == "not_found"
    listed = api.client.get(RUNS, headers=other).json()
    assert listed["data"] == [] and listed["pagination"]["total"] == 0
    response = api.client.post(TASKS, headers=other, json={"runId": run["id"], "type": "t"})
    assert response.status_code == 404
    assert api.client.get(f"{RUNS}/{run['id']}", headers=auth).json()["status"] == "pending"


def test_unknown_run_is_404(api: Api, auth: dict[str, str]) -> None:
    missing = uuid.uuid4()
    assert api.client.get(f"{RUNS}/{missing}", headers=auth).status_code == 404
    assert patch_run(api, auth, str(missing), status="running").status_code == 404


# ---- lists ------------------------------------------------------------------------------


def test_list_runs_pagination_and_filters(api: Api, auth: dict[str, str]) -> None:
    runs = [create_run(api, auth, inputData=i) for i in range(5)]
    patch_run(api, auth, runs[1]["id"], status="cancelled")
    patch_run(api, auth, runs[3]["id"], status="cancelled")

    page = api.client.get(RUNS, headers=auth, params={"limit": 2, "offset": 1}).json()
    assert page["pagination"] == {"total": 5, "limit": 2, "offset": 1}
    assert len(page["data"]) == 2

    default = api.client.get(RUNS, headers=auth).json()
    assert default["pagination"] == {"total": 5, "limit": 100, "offset": 0}

    cancelled = api.client.get(RUNS, headers=auth, params={"status": "cancelled"}).json()
    assert cancelled["pagination"]["total"] == 2
    assert {r["id"] for r in cancelled["data"]} == {runs[1]["id"], runs[3]["id"]}

    beyond = api.client.get(RUNS, headers=auth, params={"offset": 10}).json()
    assert beyond["data"] == [] and beyond["pagination"]["total"] == 5


def test_list_runs_sorting_is_total_and_stable(api: Api, auth: dict[str, str]) -> None:
    runs = [create_run(api, auth, inputData=i) for i in range(6)]

    def ids(**params: Any) -> list[str]:
        body = api.client.get(RUNS, headers=auth, params={"limit": 1000, **params}).json()
        return [r["id"] for r in body["data"]]

    def key(run: dict[str, Any]) -> tuple[str, str]:
        return (run["createdAt"], run["id"])

    ascending = [r["id"] for r in sorted(runs, key=key)]
    assert ids(sortBy="createdAt", sortOrder="asc") == ascending
    assert ids(sortBy="createdAt", sortOrder="desc") == ascending[::-1]
    assert ids() == ascending[::-1]  # default: newest first

    # Pages of one concatenate to the full order: ties (same millisecond) break by id.
    paged = [ids(sortOrder="asc", limit=1, offset=i)[0] for i in range(6)]
    assert paged == ascending

    patch_run(api, auth, runs[0]["id"], metadata={"touched": True})
    assert ids(sortBy="updatedAt", sortOrder="desc")[0] == runs[0]["id"]


@pytest.mark.parametrize(
    "params",
    [
        {"limit": 0},
        {"limit": 1001},
        {"limit": -1},
        {"offset": -1},
        {"offset": 2**31},
        {"limit": "ten"},
        {"status": "done"},
        {"sortBy": "id"},
        {"sortOrder": "up"},
    ],
)
def test_bad_list_parameters_are_400(
    api: Api, auth: dict[str, str], params: dict[str, Any]
) -> None:
    response = api.client.get(RUNS, headers=auth, params=params)
    assert response.status_code == 400
    assert response.json()["code"] == "invalid_request"


def test_list_bounds_are_inclusive(api: Api, auth: dict[str, str]) -> None:
    for params in ({"limit": 1}, {"limit": 1000}, {"offset": 0}):
        assert api.client.get(RUNS, headers=auth, params=params).status_code == 200


# ---- bad input --------------------------------------------------------------------------


def _run_count(api: Api, auth: dict[str, str]) -> int:
    return int(api.client.get(RUNS, headers=auth).json()["pagination"]["total"])


@pytest.mark.parametrize(
    "content",
    [
        b"{not json",
        b"",
        b"[]",
        b'{"metadata": {}}',  # inputData missing
        b'{"inputData": 1, "inputdata": 2}',  # unknown field
        b'{"inputData": 1, "metadata": [1]}',  # wrong type
        b'{"inputData": NaN}',
        b'{"inputData": "nul \\u0000"}',
    ],
)
def test_bad_create_bodies_are_400_and_change_nothing(
    api: Api, auth: dict[str, str], content: bytes
) -> None:
    headers = {**auth, "Content-Type": "application/json"}
    response = api.client.post(RUNS, headers=headers, content=content)
    assert response.status_code == 400, response.text
    assert response.json()["code"] == "invalid_request"
    assert _run_count(api, auth) == 0


@pytest.mark.parametrize(
    "body",
    [
        {"status": "finished"},
        {"status": 3},
        {"totalTasks": 10},
        {"metadata": "x"},
        {"id": str(uuid.uuid4())},
    ],
)
def test_bad_patch_bodies_are_400_and_change_nothing(
    api: Api, auth: dict[str, str], body: dict[str, Any]
) -> None:
    run = create_run(api, auth)
    response = patch_run(api, auth, run["id"], **body)
    assert response.status_code == 400
    assert api.client.get(f"{RUNS}/{run['id']}", headers=auth).json() == run


@pytest.mark.parametrize("bad", ["not-a-uuid", "123", "%20"])
def test_non_uuid_ids_are_400(api: Api, auth: dict[str, str], bad: str) -> None:
    assert api.client.get(f"{RUNS}/{bad}", headers=auth).status_code == 400
    assert api.client.patch(f"{RUNS}/{bad}", headers=auth, json={}).status_code == 400


def test_permissions_are_checked(api: Api) -> None:
    reader = api.headers("runs:read")
    response = api.client.post(RUNS, headers=reader, json={"inputData": 1})
    assert response.status_code == 403
    assert "runs:create" in response.json()["error"]
    assert api.client.get(RUNS, headers=reader).status_code == 200


def test_openapi_documents_the_run_routes(api: Api) -> None:
    document = api.client.get("/openapi.json").json()
    create = document["paths"]["/api/v1/runs"]["post"]
    assert "201" in create["responses"]
    schema = create["responses"]["201"]["content"]["application/json"]["schema"]
    assert schema["$ref"].endswith("/Run")
    get = document["paths"]["/api/v1/runs/{runId}"]["get"]["responses"]["200"]
    assert get["content"]["application/json"]["schema"]["$ref"].endswith("/Run")
