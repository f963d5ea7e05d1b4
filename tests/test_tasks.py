"""Tasks over HTTP, on SQLite and PostgreSQL: the workflow, the status machine, the claim."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime
from typing import Any

import pytest
import sqlalchemy as sa

from foreman_api.db import open_database
from foreman_api.domain.states import TASK_TRANSITIONS
from foreman_api.schemas import TaskStatus
from foreman_api.storage.engine import read_transaction
from foreman_api.storage.tables import tasks as tasks_table
from foreman_api.storage.tasks import task_belongs_to_run
from tests.conftest import Api
from tests.test_runs import RUNS, TASKS, TIMESTAMP, create_run, create_task

# How to bring a fresh task to each status, through legal moves only.
PATH_TO: dict[str, list[str]] = {
    "pending": [],
    "queued": ["queued"],
    "running": ["running"],
    "retrying": ["running", "retrying"],
    "completed": ["running", "completed"],
    "failed": ["running", "failed"],
    "cancelled": ["cancelled"],
}
ILLEGAL = [
    (source.value, target.value)
    for source, allowed in TASK_TRANSITIONS.items()
    for target in TaskStatus
    if target not in allowed
]
LEGAL = [
    (source.value, target.value)
    for source, allowed in TASK_TRANSITIONS.items()
    for target in sorted(allowed)  # a set: sorted, so every process collects the same list
]


def patch_task(api: Api, auth: dict[str, str], task_id: str, **body: Any) -> Any:
    return api.client.patch(f"{TASKS}/{task_id}", headers=auth, json=body)


def get_task(api: Api, auth: dict[str, str], task_id: str) -> dict[str, Any]:
    response = api.client.get(f"{TASKS}/{task_id}", headers=auth)
    assert response.status_code == 200
    return dict(response.json())


def get_run(api: Api, auth: dict[str, str], run_id: str) -> dict[str, Any]:
    return dict(api.client.get(f"{RUNS}/{run_id}", headers=auth).json())


def task_in(api: Api, auth: dict[str, str], status: str) -> dict[str, Any]:
    run = create_run(api, auth)
    task = create_task(api, auth, run["id"])
    for step in PATH_TO[status]:
        response = patch_task(api, auth, task["id"], status=step)
        assert response.status_code == 200, response.text
        task = response.json()
    assert task["status"] == status
    return task


def ts(value: str) -> datetime:
    return datetime.fromisoformat(value)


def test_seed_workflow(api: Api, auth: dict[str, str]) -> None:
    run = create_run(api, auth)
    task = create_task(
        api, auth, run["id"], type="fetch", inputData={"url": "x"}, metadata={"m": 1}
    )
    assert task["status"] == "pending"
    assert task["runId"] == run["id"] and task["orgId"] == "org-a"
    assert task["type"] == "fetch" and task["inputData"] == {"url": "x"}
    assert task["retryCount"] == 0 and task["maxRetries"] == 3
    assert task["parentTaskId"] is None and task["queueJobId"] is None
    assert TIMESTAMP.match(task["createdAt"])
    assert get_run(api, auth, run["id"])["totalTasks"] == 1

    claimed = patch_task(api, auth, task["id"], status="running", queueJobId="job-1")
    assert claimed.status_code == 200
    claimed_body = claimed.json()
    assert claimed_body["status"] == "running"
    assert claimed_body["queueJobId"] == "job-1"
    assert TIMESTAMP.match(claimed_body["startedAt"])
    assert claimed_body["inputData"] == {"url": "x"}  # the claim returns the whole task

    started_run = get_run(api, auth, run["id"])
    assert started_run["status"] == "running"
    assert started_run["startedAt"] == claimed_body["startedAt"]

    done = patch_task(api, auth, task["id"], status="completed", outputData={"bytes": 3})
    assert done.status_code == 200
    body = done.json()
    assert body["status"] == "completed" and body["outputData"] == {"bytes": 3}
    assert TIMESTAMP.match(body["completedAt"])
    expected = (ts(body["completedAt"]) - ts(body["startedAt"])).total_seconds() * 1000
    assert body["durationMs"] == round(expected)
    assert get_task(api, auth, task["id"]) == body

    finished_run = get_run(api, auth, run["id"])
    # its last unfinished task settled: the run finished by itself
    assert finished_run["status"] == "completed" and finished_run["autoComplete"] is True
    assert finished_run["completedAt"] == body["completedAt"]
    assert (finished_run["totalTasks"], finished_run["completedTasks"]) == (1, 1)
    assert finished_run["failedTasks"] == 0


def test_second_task_does_not_restart_the_run(api: Api, auth: dict[str, str]) -> None:
    run = create_run(api, auth)
    first = create_task(api, auth, run["id"])
    second = create_task(api, auth, run["id"])
    patch_task(api, auth, first["id"], status="running")
    started = get_run(api, auth, run["id"])["startedAt"]
    patch_task(api, auth, second["id"], status="running")
    assert get_run(api, auth, run["id"])["startedAt"] == started


def test_queued_sets_queued_at(api: Api, auth: dict[str, str]) -> None:
    task = task_in(api, auth, "pending")
    body = patch_task(api, auth, task["id"], status="queued").json()
    assert TIMESTAMP.match(body["queuedAt"]) and body["queueJobId"] is None
    assert body["startedAt"] is None
    assert get_run(api, auth, task["runId"])["status"] == "pending"


@pytest.mark.parametrize(("source", "target"), ILLEGAL)
def test_every_illegal_transition_is_409(
    api: Api, auth: dict[str, str], source: str, target: str
) -> None:
    task = task_in(api, auth, source)
    run_before = get_run(api, auth, task["runId"])
    response = patch_task(api, auth, task["id"], status=target, outputData="ignored")
    assert response.status_code == 409
    body = response.json()
    assert body["code"] == "invalid_transition"
    assert f"from {source} to {target}" in body["error"]
    assert get_task(api, auth, task["id"]) == task  # nothing changed
    assert get_run(api, auth, task["runId"]) == run_before


@pytest.mark.parametrize(("source", "target"), LEGAL)
def test_every_legal_transition_is_200(
    api: Api, auth: dict[str, str], source: str, target: str
) -> None:
    task = task_in(api, auth, source)
    response = patch_task(api, auth, task["id"], status=target)
    assert response.status_code == 200, response.text
    assert response.json()["status"] == target


def test_retry_count_rises_on_each_retry(api: Api, auth: dict[str, str]) -> None:
    task = task_in(api, auth, "running")
    for attempt in range(1, 4):
        body = patch_task(api, auth, task["id"], status="retrying").json()
        assert body["retryCount"] == attempt
        patch_task(api, auth, task["id"], status="queued")
        patch_task(api, auth, task["id"], status="running")
    failed = patch_task(api, auth, task["id"], status="failed", errorData={"type": "E"})
    assert failed.json()["retryCount"] == 3 and failed.json()["errorData"] == {"type": "E"}
    run = get_run(api, auth, task["runId"])
    assert (run["completedTasks"], run["failedTasks"]) == (0, 1)


def test_failing_from_retrying_counts_once(api: Api, auth: dict[str, str]) -> None:
    task = task_in(api, auth, "retrying")
    assert patch_task(api, auth, task["id"], status="failed").status_code == 200
    assert get_run(api, auth, task["runId"])["failedTasks"] == 1


def test_cancelled_task_counts_in_no_counter(api: Api, auth: dict[str, str]) -> None:
    task = task_in(api, auth, "running")
    assert patch_task(api, auth, task["id"], status="cancelled").status_code == 200
    run = get_run(api, auth, task["runId"])
    assert (run["totalTasks"], run["completedTasks"], run["failedTasks"]) == (1, 0, 0)


def test_repeated_claim_with_the_same_job_id_is_200(api: Api, auth: dict[str, str]) -> None:
    task = task_in(api, auth, "queued")
    won = patch_task(api, auth, task["id"], status="running", queueJobId="job-A")
    assert won.status_code == 200
    again = patch_task(api, auth, task["id"], status="running", queueJobId="job-A")
    assert again.status_code == 200
    assert again.json() == won.json()


@pytest.mark.parametrize("job", ["job-B", None])
def test_repeated_claim_with_another_job_id_is_409(
    api: Api, auth: dict[str, str], job: str | None
) -> None:
    task = task_in(api, auth, "pending")
    won = patch_task(api, auth, task["id"], status="running", queueJobId="job-A").json()
    body: dict[str, Any] = {"status": "running"}
    if job is not None:
        body["queueJobId"] = job
    response = patch_task(api, auth, task["id"], **body)
    assert response.status_code == 409
    assert "running" in response.json()["error"]
    assert get_task(api, auth, task["id"]) == won


def test_claim_of_a_finished_task_with_its_job_id_is_409(api: Api, auth: dict[str, str]) -> None:
    task = task_in(api, auth, "pending")
    patch_task(api, auth, task["id"], status="running", queueJobId="job-A")
    patch_task(api, auth, task["id"], status="completed")
    response = patch_task(api, auth, task["id"], status="running", queueJobId="job-A")
    assert response.status_code == 409
    assert "completed" in response.json()["error"]


def test_patch_fields_without_status(api: Api, auth: dict[str, str]) -> None:
    task = task_in(api, auth, "running")
    body = patch_task(api, auth, task["id"], metadata={"p": 50}).json()
    assert body["metadata"] == {"p": 50} and body["queueJobId"] == task["queueJobId"]
    assert body["status"] == "running" and body["startedAt"] == task["startedAt"]
    empty = patch_task(api, auth, task["id"])
    assert empty.status_code == 200 and empty.json() == body


def test_parent_task_must_be_in_the_same_run(api: Api, auth: dict[str, str]) -> None:
    run = create_run(api, auth)
    parent = create_task(api, auth, run["id"])
    child = create_task(api, auth, run["id"], parentTaskId=parent["id"])
    assert child["parentTaskId"] == parent["id"]

    other_run = create_run(api, auth)
    for bad_parent in (parent["id"], str(uuid.uuid4())):
        response = api.client.post(
            TASKS,
            headers=auth,
            json={"runId": other_run["id"], "type": "t", "parentTaskId": bad_parent},
        )
        assert response.status_code == 400
        assert response.json()["details"][0]["field"] == "parentTaskId"
    assert get_run(api, auth, other_run["id"])["totalTasks"] == 0  # rolled back


def test_task_belongs_to_run_helper(api: Api, auth: dict[str, str]) -> None:
    run = create_run(api, auth)
    task = create_task(api, auth, run["id"])
    other = create_run(api, auth)
    run_id, task_id, other_id = (uuid.UUID(x) for x in (run["id"], task["id"], other["id"]))

    async def belongs() -> list[bool]:
        db = await open_database(api.settings.database_url)
        try:
            return [
                await task_belongs_to_run(db, org_id=org, run_id=run, task_id=task_id)
                for org, run in (("org-a", run_id), ("org-a", other_id), ("org-b", run_id))
            ]
        finally:
            await db.close()

    assert asyncio.run(belongs()) == [True, False, False]


def test_create_task_in_unknown_run_is_404(api: Api, auth: dict[str, str]) -> None:
    response = api.client.post(TASKS, headers=auth, json={"runId": str(uuid.uuid4()), "type": "t"})
    assert response.status_code == 404


@pytest.mark.parametrize("retries", [0, 10])
def test_max_retries_bounds_accepted(api: Api, auth: dict[str, str], retries: int) -> None:
    run = create_run(api, auth)
    assert create_task(api, auth, run["id"], maxRetries=retries)["maxRetries"] == retries


# ---- isolation --------------------------------------------------------------------------


def test_another_organisations_task_is_404(api: Api, auth: dict[str, str]) -> None:
    task = task_in(api, auth, "queued")
    other = api.headers(org="org-b")
    assert api.client.get(f"{TASKS}/{task['id']}", headers=other).status_code == 404
    response = patch_task(api, other, task["id"], status="running", queueJobId="x")
    assert response.status_code == 404
    assert patch_task(api, other, task["id"], metadata={"x": 1}).status_code == 404
    for params in ({"runId": task["runId"]}, {"parentTaskId": task["id"]}):
        assert api.client.get(TASKS, headers=other, params=params).status_code == 404
    listed = api.client.get(TASKS, headers=other).json()
    assert listed["data"] == [] and listed["pagination"]["total"] == 0
    assert get_task(api, auth, task["id"]) == task
    assert get_run(api, auth, task["runId"])["status"] == "pending"
    # A child in org-b cannot hang under org-a's task either.
    other_run = create_run(api, other)
    response = api.client.post(
        TASKS,
        headers=other,
        json={"runId": other_run["id"], "type": "t", "parentTaskId": task["id"]},
    )
    assert response.status_code == 400


# ---- lists ------------------------------------------------------------------------------


def test_list_tasks_filters(api: Api, auth: dict[str, str]) -> None:
    run = create_run(api, auth)
    other_run = create_run(api, auth)
    parent = create_task(api, auth, run["id"], type="parent")
    children = [
        create_task(api, auth, run["id"], type="child", parentTaskId=parent["id"]) for _ in range(3)
    ]
    create_task(api, auth, other_run["id"], type="child")
    patch_task(api, auth, children[0]["id"], status="queued")

    def ids(**params: Any) -> set[str]:
        response = api.client.get(TASKS, headers=auth, params=params)
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["pagination"]["total"] == len(body["data"])
        return {t["id"] for t in body["data"]}

    assert len(ids()) == 5
    assert ids(runId=run["id"]) == {parent["id"]} | {c["id"] for c in children}
    assert ids(parentTaskId=parent["id"]) == {c["id"] for c in children}
    assert ids(status="queued") == {children[0]["id"]}
    assert ids(type="parent") == {parent["id"]}
    assert ids(runId=run["id"], type="child", status="pending") == {
        children[1]["id"],
        children[2]["id"],
    }
    assert ids(type="nothing") == set()
    assert (
        api.client.get(TASKS, headers=auth, params={"runId": str(uuid.uuid4())}).status_code == 404
    )


def test_list_tasks_sorting_and_pages(api: Api, auth: dict[str, str]) -> None:
    run = create_run(api, auth)
    created = [create_task(api, auth, run["id"]) for _ in range(7)]
    ascending = [t["id"] for t in sorted(created, key=lambda t: (t["createdAt"], t["id"]))]

    def page(**params: Any) -> dict[str, Any]:
        return dict(
            api.client.get(TASKS, headers=auth, params={"runId": run["id"], **params}).json()
        )

    assert [t["id"] for t in page(sortOrder="asc")["data"]] == ascending
    assert [t["id"] for t in page()["data"]] == ascending[::-1]
    pages = [page(sortOrder="asc", limit=3, offset=o) for o in (0, 3, 6)]
    assert [t["id"] for p in pages for t in p["data"]] == ascending
    assert pages[2]["pagination"] == {"total": 7, "limit": 3, "offset": 6}

    patch_task(api, auth, created[3]["id"], status="queued")
    assert page(sortBy="updatedAt")["data"][0]["id"] == created[3]["id"]


def test_a_listed_task_reads_as_it_does_alone(api: Api, auth: dict[str, str]) -> None:
    """A page of tasks (on PostgreSQL written by the database as JSON) holds each task as
    its own GET does (rows encoded by the API): every field, awkward values included."""
    run = create_run(api, auth)
    awkward = {
        "text": "é 😀 \"quoted\" \\ tab\t",
        "big": 12345678901234567890123,
        "floats": [0.1, 1e-7, 3.25],
        "nested": {"b": [1, {"a": None}], "a": True},
    }
    parent = create_task(api, auth, run["id"], inputData=awkward, metadata={"owner": "ü"})
    child = create_task(
        api, auth, run["id"], parentTaskId=parent["id"], inputData=[1, "two"], maxRetries=5
    )
    keyed = create_task(api, auth, run["id"], idempotencyKey="k-1", queue="q", inputData=None)
    claim = {"status": "running", "queueJobId": "job-1", "leaseSeconds": 30, "workerId": "w"}
    assert patch_task(api, auth, parent["id"], **claim).status_code == 200
    done = {"status": "completed", "outputData": awkward, "queueJobId": "job-1"}
    assert patch_task(api, auth, parent["id"], **done).status_code == 200
    assert patch_task(api, auth, child["id"], status="running").status_code == 200
    retry = {"status": "retrying", "retryDelay": 60, "errorData": {"type": "E", "message": "é"}}
    assert patch_task(api, auth, child["id"], **retry).status_code == 200
    assert patch_task(api, auth, keyed["id"], status="cancelled").status_code == 200

    response = api.client.get(TASKS, headers=auth, params={"runId": run["id"], "limit": 10})
    assert response.status_code == 200
    listed = response.json()["data"]
    assert [t["id"] for t in listed] == [keyed["id"], child["id"], parent["id"]]
    for task in listed:
        assert task == get_task(api, auth, task["id"])
    assert listed[2]["outputData"] == awkward
    assert listed[1]["retryAt"] is not None and listed[2]["durationMs"] is not None


@pytest.mark.parametrize(
    "params",
    [
        {"limit": 0},
        {"limit": 1001},
        {"offset": -1},
        {"status": "done"},
        {"runId": "nope"},
        {"parentTaskId": "123"},
        {"sortBy": "type"},
        {"sortOrder": "sideways"},
        {"type": ""},
        {"type": "a\x00b"},
    ],
)
def test_bad_list_parameters_are_400(
    api: Api, auth: dict[str, str], params: dict[str, Any]
) -> None:
    response = api.client.get(TASKS, headers=auth, params=params)
    assert response.status_code == 400, response.text
    assert response.json()["code"] == "invalid_request"


# ---- bad input --------------------------------------------------------------------------


def _task_count(api: Api) -> int:
    with read_transaction(api.engine) as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(tasks_table)).scalar_one())


@pytest.mark.parametrize(
    "body",
    [
        {"type": "t"},  # runId missing
        {"runId": "RUN", "type": ""},
        {"runId": "RUN", "type": "x" * 256},
        {"runId": "RUN", "type": 5},
        {"runId": "not-a-uuid", "type": "t"},
        {"runId": "RUN", "type": "t", "maxRetries": 11},
        {"runId": "RUN", "type": "t", "maxRetries": -1},
        {"runId": "RUN", "type": "t", "maxRetries": "3x"},
        {"runId": "RUN", "type": "t", "parentTaskId": "p"},
        {"runId": "RUN", "type": "t", "status": "running"},  # unknown field
        {"runId": "RUN", "type": "t", "metadata": [1]},
    ],
)
def test_bad_task_bodies_are_400_and_change_nothing(
    api: Api, auth: dict[str, str], body: dict[str, Any]
) -> None:
    run = create_run(api, auth)
    body = {k: run["id"] if v == "RUN" else v for k, v in body.items()}
    response = api.client.post(TASKS, headers=auth, json=body)
    assert response.status_code == 400, response.text
    assert _task_count(api) == 0
    assert get_run(api, auth, run["id"]) == run


@pytest.mark.parametrize(
    "body",
    [
        {"status": "done"},
        {"status": "running", "queueJobId": ""},
        {"status": "running", "queueJobId": 7},
        {"retryCount": 5},
        {"metadata": "x"},
    ],
)
def test_bad_patch_bodies_are_400_and_change_nothing(
    api: Api, auth: dict[str, str], body: dict[str, Any]
) -> None:
    task = task_in(api, auth, "pending")
    assert patch_task(api, auth, task["id"], **body).status_code == 400
    assert get_task(api, auth, task["id"]) == task


def test_malformed_json_is_400(api: Api, auth: dict[str, str]) -> None:
    task = task_in(api, auth, "pending")
    headers = {**auth, "Content-Type": "application/json"}
    response = api.client.patch(f"{TASKS}/{task['id']}", headers=headers, content=b'{"status":')
    assert response.status_code == 400
    assert api.client.post(TASKS, headers=headers, content=b"{").status_code == 400
    assert get_task(api, auth, task["id"]) == task


@pytest.mark.parametrize("bad", ["not-a-uuid", "1234", "00000000-0000-0000-0000"])
def test_non_uuid_task_ids_are_400(api: Api, auth: dict[str, str], bad: str) -> None:
    assert api.client.get(f"{TASKS}/{bad}", headers=auth).status_code == 400
    assert patch_task(api, auth, bad, status="running").status_code == 400


def test_unknown_task_is_404(api: Api, auth: dict[str, str]) -> None:
    missing = str(uuid.uuid4())
    assert api.client.get(f"{TASKS}/{missing}", headers=auth).status_code == 404
    assert patch_task(api, auth, missing, status="running").status_code == 404
    assert patch_task(api, auth, missing, metadata={}).status_code == 404
    assert patch_task(api, auth, missing).status_code == 404


def test_task_permissions(api: Api, auth: dict[str, str]) -> None:
    task = task_in(api, auth, "pending")
    reader = api.headers("tasks:read")
    response = patch_task(api, reader, task["id"], status="running")
    assert response.status_code == 403 and "tasks:update" in response.json()["error"]
    assert api.client.get(f"{TASKS}/{task['id']}", headers=reader).status_code == 200


def test_openapi_documents_the_task_routes(api: Api) -> None:
    paths = api.client.get("/openapi.json").json()["paths"]
    assert "201" in paths["/api/v1/tasks"]["post"]["responses"]
    patch = paths["/api/v1/tasks/{taskId}"]["patch"]
    schema = patch["responses"]["200"]["content"]["application/json"]["schema"]
    assert schema["$ref"].endswith("/Task")
    params = {p["name"] for p in paths["/api/v1/tasks"]["get"]["parameters"]}
    assert {"runId", "parentTaskId", "status", "type", "limit", "offset", "sortBy"} <= params
