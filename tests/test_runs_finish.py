"""Runs that finish by themselves, over HTTP on SQLite and PostgreSQL: when the last
unfinished task settles, unless created with ``autoComplete: false``; spawned children keep
the run open; a new task reopens a run that finished by itself, not one closed by PATCH."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import sqlalchemy as sa

from foreman_api.clock import utcnow
from foreman_api.storage.tables import tasks as tasks_table
from tests.conftest import Api
from tests.test_attempts import claim
from tests.test_runs import RUNS, TASKS, create_run, create_task
from tests.test_tasks import get_run, patch_task


def finish(api: Api, auth: dict[str, str], task_id: str, status: str, **body: Any) -> None:
    if status != "cancelled":
        claim(api, auth, task_id, f"job-{task_id}", "worker-a")
        body["queueJobId"] = f"job-{task_id}"
    response = patch_task(api, auth, task_id, status=status, **body)
    assert response.status_code == 200, response.text


def test_a_run_completes_when_its_last_task_does(api: Api, auth: dict[str, str]) -> None:
    run = create_run(api, auth)
    first, second = create_task(api, auth, run["id"]), create_task(api, auth, run["id"])
    finish(api, auth, first["id"], "completed")
    assert get_run(api, auth, run["id"])["status"] == "running"
    finish(api, auth, second["id"], "completed")
    done = get_run(api, auth, run["id"])
    assert (done["status"], done["completedTasks"]) == ("completed", 2)
    assert done["completedAt"] is not None and done["durationMs"] >= 0


def test_a_run_fails_when_a_task_failed_for_good(api: Api, auth: dict[str, str]) -> None:
    run = create_run(api, auth)
    failed, completed = create_task(api, auth, run["id"]), create_task(api, auth, run["id"])
    finish(api, auth, failed["id"], "failed", errorData={"type": "E"})
    assert get_run(api, auth, run["id"])["status"] == "running"
    finish(api, auth, completed["id"], "completed")
    assert get_run(api, auth, run["id"])["status"] == "failed"


def test_a_run_whose_tasks_were_all_cancelled_is_cancelled(api: Api, auth: dict[str, str]) -> None:
    run = create_run(api, auth)
    task = create_task(api, auth, run["id"])
    finish(api, auth, task["id"], "cancelled")
    run_after = get_run(api, auth, run["id"])
    assert (run_after["status"], run_after["cancelledTasks"]) == ("cancelled", 1)


def test_a_retrying_task_keeps_the_run_open(api: Api, auth: dict[str, str]) -> None:
    run = create_run(api, auth)
    task = create_task(api, auth, run["id"])
    claim(api, auth, task["id"], "job-1", "worker-a")
    moved = patch_task(api, auth, task["id"], status="retrying", queueJobId="job-1")
    assert moved.status_code == 200
    assert get_run(api, auth, run["id"])["status"] == "running"


def test_the_last_task_lost_with_no_retries_left_fails_the_run(
    api: Api, auth: dict[str, str]
) -> None:
    run = create_run(api, auth)
    task = create_task(api, auth, run["id"], maxRetries=0)
    claim(api, auth, task["id"], "job-1", "worker-a")
    with api.engine.begin() as conn:
        conn.execute(
            sa.update(tasks_table)
            .where(tasks_table.c.id == uuid.UUID(task["id"]))
            .values(lease_expires_at=utcnow() - timedelta(seconds=1))
        )
    assert api.client.post("/api/v1/reconcile", headers=auth, json={}).status_code == 200
    assert get_run(api, auth, run["id"])["status"] == "failed"


def test_spawned_children_keep_the_run_open(api: Api, auth: dict[str, str]) -> None:
    run = create_run(api, auth)
    parent = create_task(api, auth, run["id"])
    claim(api, auth, parent["id"], "job-p", "worker-a")
    child = create_task(api, auth, run["id"], parentTaskId=parent["id"])  # while it runs
    done = patch_task(api, auth, parent["id"], status="completed", queueJobId="job-p")
    assert done.status_code == 200
    assert get_run(api, auth, run["id"])["status"] == "running"
    finish(api, auth, child["id"], "completed")
    assert get_run(api, auth, run["id"])["status"] == "completed"


def test_a_run_created_with_the_opt_out_stays_open(api: Api, auth: dict[str, str]) -> None:
    run = create_run(api, auth, autoComplete=False)
    assert run["autoComplete"] is False
    task = create_task(api, auth, run["id"])
    finish(api, auth, task["id"], "completed")
    assert get_run(api, auth, run["id"])["status"] == "running"
    later = create_task(api, auth, run["id"])  # still open for more
    finish(api, auth, later["id"], "failed")
    assert get_run(api, auth, run["id"])["status"] == "running"
    closed = api.client.patch(f"{RUNS}/{run['id']}", headers=auth, json={"status": "completed"})
    assert closed.status_code == 200 and closed.json()["status"] == "completed"
    bad = api.client.post(RUNS, headers=auth, json={"inputData": 1, "autoComplete": "no"})
    assert bad.status_code == 400 and bad.json()["details"][0]["field"] == "autoComplete"


def test_a_new_task_reopens_a_run_that_finished_by_itself(api: Api, auth: dict[str, str]) -> None:
    run = create_run(api, auth)
    first = create_task(api, auth, run["id"])
    finish(api, auth, first["id"], "completed")
    assert get_run(api, auth, run["id"])["status"] == "completed"
    second = create_task(api, auth, run["id"])  # a client still submitting: not refused
    reopened = get_run(api, auth, run["id"])
    assert (reopened["status"], reopened["completedAt"], reopened["totalTasks"]) == (
        "running",
        None,
        2,
    )
    finish(api, auth, second["id"], "completed")
    again = get_run(api, auth, run["id"])
    assert (again["status"], again["completedTasks"]) == ("completed", 2)


def test_a_run_closed_by_patch_stays_closed(api: Api, auth: dict[str, str]) -> None:
    run = create_run(api, auth)
    first = create_task(api, auth, run["id"])
    finish(api, auth, first["id"], "completed")
    # it finished by itself; closing it again (the same status) makes that final
    closed = api.client.patch(f"{RUNS}/{run['id']}", headers=auth, json={"status": "completed"})
    assert closed.status_code == 200
    refused = api.client.post(TASKS, headers=auth, json={"runId": run["id"], "type": "t"})
    assert refused.status_code == 409 and refused.json()["code"] == "run_finished"
    cancelled = create_run(api, auth)
    create_task(api, auth, cancelled["id"])
    stop = api.client.patch(f"{RUNS}/{cancelled['id']}", headers=auth, json={"status": "cancelled"})
    assert stop.status_code == 200
    assert get_run(api, auth, cancelled["id"])["cancelledTasks"] == 1
    refused = api.client.post(TASKS, headers=auth, json={"runId": cancelled["id"], "type": "t"})
    assert refused.status_code == 409
