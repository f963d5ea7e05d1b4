"""Attempt history over HTTP, on SQLite and PostgreSQL: each claim opens an attempt, the
move that ends it closes it, whoever makes that move (the worker, the reconciler, a cancel)."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import sqlalchemy as sa

from foreman_api.clock import utcnow
from foreman_api.storage.tables import tasks as tasks_table
from tests.conftest import Api
from tests.test_runs import RUNS, TASKS, TIMESTAMP, create_run, create_task
from tests.test_tasks import get_task, patch_task

BOOM = {"type": "ValueError", "message": "boom", "traceback": "Traceback ...", "attempt": 1}


def attempts(api: Api, auth: dict[str, str], task_id: str) -> list[dict[str, Any]]:
    response = api.client.get(f"{TASKS}/{task_id}/attempts", headers=auth)
    assert response.status_code == 200, response.text
    return list(response.json()["data"])


def claim(api: Api, auth: dict[str, str], task_id: str, job: str, worker: str) -> None:
    response = patch_task(
        api, auth, task_id, status="running", queueJobId=job, workerId=worker, leaseSeconds=30
    )
    assert response.status_code == 200, response.text


def test_every_attempt_is_kept_with_its_worker_job_times_outcome_and_error(
    api: Api, auth: dict[str, str]
) -> None:
    task = create_task(api, auth, create_run(api, auth)["id"])
    assert task["attemptCount"] == 0 and attempts(api, auth, task["id"]) == []

    claim(api, auth, task["id"], "job-1", "worker-a")
    [running] = attempts(api, auth, task["id"])
    assert running["outcome"] == "running" and running["finishedAt"] is None
    assert running["durationMs"] is None and TIMESTAMP.match(running["startedAt"])

    moved = patch_task(api, auth, task["id"], status="retrying", queueJobId="job-1", errorData=BOOM)
    assert moved.status_code == 200, moved.text
    claim(api, auth, task["id"], "job-2", "worker-b")
    done = patch_task(api, auth, task["id"], status="completed", queueJobId="job-2", outputData=1)
    assert done.status_code == 200, done.text
    assert done.json()["errorData"] is None  # the first attempt's error stays in its attempt

    first, second = attempts(api, auth, task["id"])
    assert (first["number"], first["workerId"], first["queueJobId"]) == (1, "worker-a", "job-1")
    assert (first["outcome"], first["error"]) == ("retrying", BOOM)
    assert (second["number"], second["workerId"], second["queueJobId"]) == (2, "worker-b", "job-2")
    assert (second["outcome"], second["error"]) == ("completed", None)
    for attempt in (first, second):
        assert TIMESTAMP.match(attempt["finishedAt"]) and attempt["durationMs"] >= 0
        assert attempt["startedAt"] <= attempt["finishedAt"]
    assert first["finishedAt"] <= second["startedAt"]
    assert get_task(api, auth, task["id"])["attemptCount"] == 2


def test_a_repeated_claim_or_a_refused_move_adds_no_attempt(api: Api, auth: dict[str, str]) -> None:
    task = create_task(api, auth, create_run(api, auth)["id"])
    claim(api, auth, task["id"], "job-1", "worker-a")
    claim(api, auth, task["id"], "job-1", "worker-a")  # its response was lost: same claim
    refused = patch_task(api, auth, task["id"], status="running", queueJobId="job-9")
    assert refused.status_code == 409
    stale = patch_task(api, auth, task["id"], status="completed", queueJobId="job-9")
    assert stale.status_code == 409
    [attempt] = attempts(api, auth, task["id"])
    assert (attempt["queueJobId"], attempt["outcome"]) == ("job-1", "running")


def test_a_lost_worker_s_attempt_ends_with_worker_lost(api: Api, auth: dict[str, str]) -> None:
    task = create_task(api, auth, create_run(api, auth)["id"])
    claim(api, auth, task["id"], "job-1", "worker-a")
    with api.engine.begin() as conn:  # the worker stopped renewing: its lease ran out
        conn.execute(
            sa.update(tasks_table)
            .where(tasks_table.c.id == uuid.UUID(task["id"]))
            .values(lease_expires_at=utcnow() - timedelta(seconds=1))
        )
    response = api.client.post("/api/v1/reconcile", headers=auth, json={})
    assert response.status_code == 200, response.text
    assert [t["id"] for t in response.json()["recovered"]] == [task["id"]]
    [lost] = attempts(api, auth, task["id"])
    assert lost["outcome"] == "retrying" and lost["error"]["type"] == "WorkerLost"
    assert lost["finishedAt"] is not None


def test_cancelling_a_run_closes_its_open_attempts(api: Api, auth: dict[str, str]) -> None:
    run = create_run(api, auth)
    running, queued = create_task(api, auth, run["id"]), create_task(api, auth, run["id"])
    claim(api, auth, running["id"], "job-1", "worker-a")
    assert patch_task(api, auth, queued["id"], status="queued").status_code == 200
    response = api.client.patch(f"{RUNS}/{run['id']}", headers=auth, json={"status": "cancelled"})
    assert response.status_code == 200, response.text
    [cancelled] = attempts(api, auth, running["id"])
    assert cancelled["outcome"] == "cancelled" and cancelled["finishedAt"] is not None
    assert attempts(api, auth, queued["id"]) == []  # never claimed: no attempt


def test_cancelling_a_running_task_closes_its_attempt(api: Api, auth: dict[str, str]) -> None:
    task = create_task(api, auth, create_run(api, auth)["id"])
    claim(api, auth, task["id"], "job-1", "worker-a")
    assert patch_task(api, auth, task["id"], status="cancelled").status_code == 200
    [attempt] = attempts(api, auth, task["id"])
    assert attempt["outcome"] == "cancelled"


def test_attempts_are_the_organisation_s_own_and_need_tasks_read(api: Api) -> None:
    ours, theirs = api.headers("*", org="org-a"), api.headers("*", org="org-b")
    task = create_task(api, ours, create_run(api, ours)["id"])
    claim(api, ours, task["id"], "job-1", "worker-a")
    other = api.client.get(f"{TASKS}/{task['id']}/attempts", headers=theirs)
    assert other.status_code == 404
    unknown = api.client.get(f"{TASKS}/{'0' * 8}-0000-4000-8000-{'0' * 12}/attempts", headers=ours)
    assert unknown.status_code == 404
    no_read = api.client.get(
        f"{TASKS}/{task['id']}/attempts", headers=api.headers("tasks:create", org="org-a")
    )
    assert no_read.status_code == 403
    assert len(attempts(api, api.headers("tasks:read", org="org-a"), task["id"])) == 1


def test_worker_id_only_with_a_claim(api: Api, auth: dict[str, str]) -> None:
    task = create_task(api, auth, create_run(api, auth)["id"])
    response = patch_task(api, auth, task["id"], status="queued", workerId="worker-a")
    assert response.status_code == 400
    assert response.json()["details"][0]["field"] == "workerId"
    assert get_task(api, auth, task["id"])["status"] == "pending"


def test_the_openapi_document_lists_the_attempts_route(api: Api) -> None:
    document = api.client.get("/openapi.json").json()
    route = document["paths"]["/api/v1/tasks/{taskId}/attempts"]["get"]
    assert "200" in route["responses"] and "404" in route["responses"]
