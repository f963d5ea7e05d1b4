"""``GET /queues`` over HTTP on SQLite and PostgreSQL: unfinished tasks per queue, by
status, and the live workers consuming each queue; an organisation's own only."""

from __future__ import annotations

from tests.conftest import Api
from tests.test_attempts import claim
from tests.test_runs import create_run, create_task
from tests.test_tasks import patch_task


def test_queue_depths_count_unfinished_tasks_and_live_workers(api: Api) -> None:
    auth = api.headers("*", org="org-a")
    run = create_run(api, auth)
    for _ in range(2):
        task = create_task(api, auth, run["id"], queue="emails")
        assert patch_task(api, auth, task["id"], status="queued").status_code == 200
    running = create_task(api, auth, run["id"], queue="charges")
    claim(api, auth, running["id"], "job-1", "worker-a")
    retrying = create_task(api, auth, run["id"], queue="charges")
    claim(api, auth, retrying["id"], "job-2", "worker-a")
    moved = patch_task(
        api, auth, retrying["id"], status="retrying", queueJobId="job-2", retryDelay=60
    )
    assert moved.status_code == 200
    done = create_task(api, auth, run["id"], queue="reports")
    claim(api, auth, done["id"], "job-3", "worker-a")
    assert patch_task(api, auth, done["id"], status="completed").status_code == 200
    worker = {"queues": ["emails", "idle"], "handlers": []}
    assert api.client.put("/api/v1/workers/w-1", headers=auth, json=worker).status_code == 200

    response = api.client.get("/api/v1/queues", headers=auth)
    assert response.status_code == 200, response.text
    assert response.json()["data"] == [
        {"queue": "charges", "queued": 0, "retrying": 1, "running": 1, "workers": 0},
        {"queue": "emails", "queued": 2, "retrying": 0, "running": 0, "workers": 1},
        {"queue": "idle", "queued": 0, "retrying": 0, "running": 0, "workers": 1},
    ]
    other = api.client.get("/api/v1/queues", headers=api.headers("*", org="org-b"))
    assert other.json() == {"data": []}
    refused = api.client.get("/api/v1/queues", headers=api.headers("runs:read", org="org-a"))
    assert refused.status_code == 403
