"""The database owns each task: fenced writes, leases, due retries, reconciliation, the
worker registry, idempotent creation, and runs that settle their tasks when they finish."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from foreman_api.clock import utcnow
from foreman_api.storage.tables import tasks as tasks_table
from tests.conftest import Api
from tests.test_runs import TASKS, create_run, create_task, patch_run
from tests.test_task_concurrency import run_in_threads
from tests.test_tasks import get_run, get_task, patch_task

RECONCILE = "/api/v1/reconcile"
WORKERS = "/api/v1/workers"


def claimed(api: Api, auth: dict[str, str], job: str = "job-1", **create: Any) -> dict[str, Any]:
    run = create_run(api, auth)
    task = create_task(api, auth, run["id"], **create)
    response = patch_task(api, auth, task["id"], status="running", queueJobId=job, leaseSeconds=30)
    assert response.status_code == 200, response.text
    return dict(response.json())


def expire_lease(api: Api, task_id: str) -> None:
    """What a worker that stops heartbeating leads to, without waiting for it."""
    with api.engine.begin() as conn:
        conn.execute(
            tasks_table.update()
            .where(tasks_table.c.id == uuid.UUID(task_id))
            .values(lease_expires_at=utcnow() - timedelta(seconds=1))
        )


def reconcile(api: Api, auth: dict[str, str], **body: Any) -> dict[str, Any]:
    response = api.client.post(RECONCILE, headers=auth, json={"graceSeconds": 0, **body})
    assert response.status_code == 200, response.text
    return dict(response.json())


# ---- fencing -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "write",
    [
        {"status": "completed", "outputData": {"late": True}},
        {"status": "failed", "errorData": {"type": "E"}},
        {"status": "retrying", "errorData": {"type": "E"}},
        {"outputData": {"late": True}},
    ],
)
def test_a_job_that_lost_the_claim_changes_nothing(
    api: Api, auth: dict[str, str], write: dict[str, Any]
) -> None:
    task = claimed(api, auth, job="job-old")
    expire_lease(api, task["id"])
    [recovered] = reconcile(api, auth)["recovered"]
    assert recovered["status"] == "retrying" and recovered["errorData"]["type"] == "WorkerLost"
    rerun = patch_task(api, auth, task["id"], status="running", queueJobId="job-new")
    assert rerun.status_code == 200
    before, run_before = get_task(api, auth, task["id"]), get_run(api, auth, task["runId"])

    late = patch_task(api, auth, task["id"], queueJobId="job-old", **write)

    assert late.status_code == 409
    assert late.json()["code"] == "stale_claim"
    assert "job-new" in late.json()["error"]
    assert get_task(api, auth, task["id"]) == before
    assert get_run(api, auth, task["runId"]) == run_before


def test_only_a_claim_sets_the_job_id(api: Api, auth: dict[str, str]) -> None:
    task = claimed(api, auth, job="job-1")
    response = patch_task(api, auth, task["id"], queueJobId="job-2", metadata={"m": 1})
    assert response.status_code == 409 and response.json()["code"] == "stale_claim"
    assert get_task(api, auth, task["id"])["queueJobId"] == "job-1"
    queued = create_task(api, auth, task["runId"])
    refused = patch_task(api, auth, queued["id"], status="queued", queueJobId="job-3")
    assert refused.status_code == 409
    assert get_task(api, auth, queued["id"])["queueJobId"] is None


def test_a_finished_task_cannot_be_changed(api: Api, auth: dict[str, str]) -> None:
    task = claimed(api, auth)
    done = patch_task(api, auth, task["id"], status="completed", outputData=1, queueJobId="job-1")
    assert done.status_code == 200
    for write in ({"outputData": 2}, {"metadata": {"x": 1}}, {"errorData": {"type": "E"}}):
        response = patch_task(api, auth, task["id"], **write)
        assert response.status_code == 409 and response.json()["code"] == "task_finished"
    assert patch_task(api, auth, task["id"], status="failed").status_code == 409
    assert get_task(api, auth, task["id"]) == done.json()


def test_a_repeated_completion_is_answered_once_and_counted_once(
    api: Api, auth: dict[str, str]
) -> None:
    task = claimed(api, auth)
    body = {"status": "completed", "outputData": {"n": 1}, "queueJobId": "job-1"}
    first = patch_task(api, auth, task["id"], **body)
    again = patch_task(api, auth, task["id"], **body)
    assert first.status_code == again.status_code == 200
    assert again.json() == first.json()
    assert get_run(api, auth, task["runId"])["completedTasks"] == 1


def test_seed_workflow_without_job_ids_still_works(api: Api, auth: dict[str, str]) -> None:
    run = create_run(api, auth)
    task = create_task(api, auth, run["id"])
    running = patch_task(api, auth, task["id"], status="running").json()
    assert running["leaseExpiresAt"] is None  # no lease: nothing will take it back
    assert reconcile(api, auth)["recovered"] == []
    done = patch_task(api, auth, task["id"], status="completed", outputData={"ok": True})
    assert done.status_code == 200 and done.json()["outputData"] == {"ok": True}


# ---- leases --------------------------------------------------------------------------------


def test_heartbeat_renews_the_lease_of_the_holder_only(api: Api, auth: dict[str, str]) -> None:
    task = claimed(api, auth, job="job-1")
    path = f"{TASKS}/{task['id']}/heartbeat"
    renewed = api.client.post(path, headers=auth, json={"queueJobId": "job-1", "leaseSeconds": 600})
    assert renewed.status_code == 200
    assert renewed.json()["leaseExpiresAt"] > task["leaseExpiresAt"]
    stale = api.client.post(path, headers=auth, json={"queueJobId": "job-2", "leaseSeconds": 60})
    assert stale.status_code == 409 and stale.json()["code"] == "stale_claim"


def test_an_expired_lease_without_retries_left_fails_the_task(
    api: Api, auth: dict[str, str]
) -> None:
    task = claimed(api, auth, maxRetries=0)
    expire_lease(api, task["id"])
    [recovered] = reconcile(api, auth)["recovered"]
    assert recovered["status"] == "failed"
    assert recovered["errorData"]["type"] == "WorkerLost"
    assert recovered["leaseExpiresAt"] is None
    run = get_run(api, auth, task["runId"])
    assert (run["failedTasks"], run["completedTasks"]) == (1, 0)
    assert reconcile(api, auth)["recovered"] == []  # once


def test_a_live_lease_is_not_recovered(api: Api, auth: dict[str, str]) -> None:
    task = claimed(api, auth)
    assert reconcile(api, auth)["recovered"] == []
    assert get_task(api, auth, task["id"])["status"] == "running"


# ---- due retries ---------------------------------------------------------------------------


def test_a_retry_is_claimable_exactly_when_due(api: Api, auth: dict[str, str]) -> None:
    task = claimed(api, auth)
    waiting = patch_task(
        api, auth, task["id"], status="retrying", retryDelay=3600, queueJobId="job-1"
    ).json()
    assert waiting["retryAt"] > waiting["updatedAt"]
    early = patch_task(api, auth, task["id"], status="running", queueJobId="job-2")
    assert early.status_code == 409 and early.json()["code"] == "retry_not_due"
    assert waiting["retryAt"] in early.json()["error"]
    assert reconcile(api, auth)["waiting"] == []  # not due: nothing to put on a queue
    with api.engine.begin() as conn:
        conn.execute(
            tasks_table.update()
            .where(tasks_table.c.id == uuid.UUID(task["id"]))
            .values(retry_at=utcnow() - timedelta(seconds=1))
        )
    assert [t["id"] for t in reconcile(api, auth)["waiting"]] == [task["id"]]
    assert patch_task(api, auth, task["id"], status="running", queueJobId="job-2").is_success


def test_retry_options_are_checked(api: Api, auth: dict[str, str]) -> None:
    task = claimed(api, auth)
    response = patch_task(api, auth, task["id"], status="completed", retryDelay=5)
    assert response.status_code == 400
    response = patch_task(api, auth, task["id"], status="retrying", leaseSeconds=5)
    assert response.status_code == 400
    assert get_task(api, auth, task["id"])["status"] == "running"


# ---- reconciliation ------------------------------------------------------------------------


def test_reconcile_pages_through_the_tasks_that_should_be_queued(
    api: Api, auth: dict[str, str]
) -> None:
    run = create_run(api, auth)
    queued = {create_task(api, auth, run["id"], status="queued")["id"] for _ in range(5)}
    create_task(api, auth, run["id"])  # pending: not submitted, nobody should queue it
    claimed(api, auth)  # running
    other_org = api.headers("*", org="org-b")
    create_task(api, other_org, create_run(api, other_org)["id"], status="queued")

    seen: list[str] = []
    after = None
    while True:
        page = reconcile(api, auth, limit=2, **({"after": after} if after else {}))
        seen += [t["id"] for t in page["waiting"]]
        assert all(t["queue"] == "default" and t["status"] == "queued" for t in page["waiting"])
        after = page["next"]
        if after is None:
            break
    assert sorted(seen) == sorted(queued)
    fresh = api.client.post(RECONCILE, headers=auth, json={"graceSeconds": 60}).json()
    assert fresh["waiting"] == []  # too fresh: their submitter is still enqueueing them


# ---- creation --------------------------------------------------------------------------------


def test_create_with_an_idempotency_key_makes_one_task(api: Api, auth: dict[str, str]) -> None:
    run = create_run(api, auth)
    body = {"runId": run["id"], "type": "t", "idempotencyKey": "order-1/charge"}
    first = api.client.post(TASKS, headers=auth, json=body)
    again = api.client.post(TASKS, headers=auth, json=body)
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json()["id"] == first.json()["id"]
    assert get_run(api, auth, run["id"])["totalTasks"] == 1
    clash = api.client.post(TASKS, headers=auth, json={**body, "type": "other"})
    assert clash.status_code == 409 and clash.json()["code"] == "idempotency_conflict"
    other_org = api.headers("*", org="org-b")
    theirs = create_task(
        api, other_org, create_run(api, other_org)["id"], idempotencyKey="order-1/charge"
    )
    assert theirs["id"] != first.json()["id"]


def test_a_repeated_create_is_answered_after_its_run_has_finished(
    api: Api, auth: dict[str, str]
) -> None:
    run = create_run(api, auth)
    body = {"runId": run["id"], "type": "t", "idempotencyKey": "late-repeat"}
    first = api.client.post(TASKS, headers=auth, json=body)
    assert patch_run(api, auth, run["id"], status="cancelled").status_code == 200
    again = api.client.post(TASKS, headers=auth, json=body)  # its first response was lost
    assert again.status_code == 200 and again.json()["id"] == first.json()["id"]
    fresh = api.client.post(TASKS, headers=auth, json={**body, "idempotencyKey": "new"})
    assert fresh.status_code == 409 and fresh.json()["code"] == "run_finished"
    assert get_run(api, auth, run["id"])["totalTasks"] == 1


def test_concurrent_creates_with_one_idempotency_key_make_one_task(
    api: Api, auth: dict[str, str]
) -> None:
    run = create_run(api, auth)
    body = {"runId": run["id"], "type": "t", "idempotencyKey": "race"}
    answers = run_in_threads(8, lambda _: api.client.post(TASKS, headers=auth, json=body))
    assert sorted(a.status_code for a in answers) == [200] * 7 + [201]
    assert len({a.json()["id"] for a in answers}) == 1
    assert get_run(api, auth, run["id"])["totalTasks"] == 1


def test_create_queued_in_one_step(api: Api, auth: dict[str, str]) -> None:
    task = create_task(api, auth, create_run(api, auth)["id"], status="queued", queue="mail")
    assert task["status"] == "queued" and task["queuedAt"] and task["queue"] == "mail"
    bad = api.client.post(
        TASKS, headers=auth, json={"runId": task["runId"], "type": "t", "status": "running"}
    )
    assert bad.status_code == 400


# ---- worker registry ---------------------------------------------------------------------------


def register(api: Api, auth: dict[str, str], worker: str, *handlers: dict[str, Any]) -> Any:
    body = {"queues": sorted({h["queue"] for h in handlers}), "handlers": list(handlers)}
    return api.client.put(f"{WORKERS}/{worker}", headers=auth, json=body)


def test_handler_options_hold_whoever_submits(api: Api, auth: dict[str, str]) -> None:
    run = create_run(api, auth)
    unserved = api.client.post(TASKS, headers=auth, json={"runId": run["id"], "type": "send"})
    assert "no live worker serves task type 'send'" in unserved.headers["Foreman-Warning"]
    assert (unserved.json()["queue"], unserved.json()["maxRetries"]) == ("default", 3)
    explicit = create_task(api, auth, run["id"], type="send", maxRetries=7, queue="q7")

    handler = {"type": "send", "queue": "mail", "maxRetries": 1, "timeout": 2.5}
    registered = register(api, auth, "w-1", handler)
    assert registered.status_code == 200 and registered.json()["orgId"] == "org-a"

    # The task created before any worker declared the type takes the handler's options...
    earlier = get_task(api, auth, unserved.json()["id"])
    assert (earlier["queue"], earlier["maxRetries"]) == ("mail", 1)
    # ...explicit values win...
    kept = get_task(api, auth, explicit["id"])
    assert (kept["queue"], kept["maxRetries"]) == ("q7", 7)
    # ...and new tasks get them at once, with no warning.
    later = api.client.post(TASKS, headers=auth, json={"runId": run["id"], "type": "send"})
    assert "Foreman-Warning" not in later.headers
    assert (later.json()["queue"], later.json()["maxRetries"]) == ("mail", 1)


def test_workers_are_listed_per_organisation_until_they_leave(
    api: Api, auth: dict[str, str]
) -> None:
    handler = {"type": "t", "queue": "default", "maxRetries": 3}
    assert register(api, auth, "w-1", handler).status_code == 200
    assert register(api, auth, "w-2", handler).status_code == 200
    listed = api.client.get(WORKERS, headers=auth).json()
    assert [w["id"] for w in listed["data"]] == ["w-1", "w-2"]
    assert listed["data"][0]["handlers"] == [{**handler, "timeout": None}]
    assert api.client.get(WORKERS, headers=api.headers("*", org="org-b")).json()["data"] == []
    gone = api.client.delete(f"{WORKERS}/w-1", headers=auth)
    assert gone.json() == {"deleted": 1}
    assert [w["id"] for w in api.client.get(WORKERS, headers=auth).json()["data"]] == ["w-2"]


def test_worker_registration_is_validated(api: Api, auth: dict[str, str]) -> None:
    bad = {"queues": ["no spaces allowed"], "handlers": []}
    assert api.client.put(f"{WORKERS}/w", headers=auth, json=bad).status_code == 400
    bad_handler = {"type": "t", "queue": "q", "maxRetries": 99}
    assert register(api, auth, "w", bad_handler).status_code == 400


# ---- runs that finish ---------------------------------------------------------------------------


@pytest.mark.parametrize("outcome", ["completed", "failed"])
def test_finishing_a_run_settles_its_unfinished_tasks(
    api: Api, auth: dict[str, str], outcome: str
) -> None:
    task = claimed(api, auth)
    waiting = create_task(api, auth, task["runId"], status="queued")
    assert patch_run(api, auth, task["runId"], status=outcome).status_code == 200
    assert get_task(api, auth, waiting["id"])["status"] == "cancelled"
    assert get_task(api, auth, task["id"])["status"] == "cancelled"
    claim = patch_task(api, auth, waiting["id"], status="running", queueJobId="job-9")
    assert claim.status_code == 409
    late = patch_task(api, auth, task["id"], status="completed", queueJobId="job-1")
    assert late.status_code == 409 and late.json()["code"] == "stale_claim"
    assert reconcile(api, auth)["waiting"] == []


def test_the_counters_hold_through_recovery(api: Api, auth: dict[str, str]) -> None:
    task = claimed(api, auth, maxRetries=1)
    expire_lease(api, task["id"])
    reconcile(api, auth)
    patch_task(api, auth, task["id"], status="running", queueJobId="job-2", leaseSeconds=30)
    expire_lease(api, task["id"])
    [failed] = reconcile(api, auth)["recovered"]
    assert failed["status"] == "failed" and failed["retryCount"] == 1
    with api.engine.connect() as conn:
        statuses = conn.execute(
            sa.select(tasks_table.c.status).where(tasks_table.c.run_id == uuid.UUID(task["runId"]))
        ).scalars()
        assert list(statuses) == ["failed"]
    run = get_run(api, auth, task["runId"])
    assert (run["totalTasks"], run["completedTasks"], run["failedTasks"]) == (1, 0, 1)
