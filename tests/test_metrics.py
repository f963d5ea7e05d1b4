"""``GET /metrics``: Prometheus text of what the API did and of what the database holds.

The counters are process-wide (prometheus-client's default registry), so each test works
with task types of its own and compares values before and after; the gauges are read
from the database, which each test starts empty, so they are compared exactly.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import Api

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(api: Api, **headers: str) -> Samples:
    response = api.client.get("/metrics", headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return parse(response.text)


def parse(text: str) -> Samples:
    """Every sample of the exposition, by name and labels (prometheus-client's parser)."""
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def _run(api: Api, auth: dict[str, str]) -> str:
    response = api.client.post("/api/v1/runs", json={"inputData": {}}, headers=auth)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def _task(api: Api, auth: dict[str, str], run_id: str, kind: str) -> str:
    body = {"runId": run_id, "type": kind, "status": "queued"}
    response = api.client.post("/api/v1/tasks", json=body, headers=auth)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def _patch(api: Api, auth: dict[str, str], task_id: str, **body: Any) -> dict[str, Any]:
    response = api.client.patch(f"/api/v1/tasks/{task_id}", json=body, headers=auth)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def _claim(api: Api, auth: dict[str, str], task_id: str, job: str, **extra: Any) -> None:
    _patch(api, auth, task_id, status="running", queueJobId=job, **extra)


def test_metrics_need_no_key_and_count_what_the_database_holds(
    api: Api, auth: dict[str, str]
) -> None:
    kind = f"metrics.{uuid.uuid4().hex[:8]}"
    run_id = _run(api, auth)
    done, failing, waiting = (_task(api, auth, run_id, kind) for _ in range(3))
    for task_id, job in ((done, "j-done"), (failing, "j-fail")):
        _claim(api, auth, task_id, job)
    _patch(api, auth, done, status="completed", queueJobId="j-done", outputData={"ok": 1})
    _patch(api, auth, failing, status="failed", queueJobId="j-fail", errorData={"type": "Boom"})
    worker = {"queues": ["default"], "handlers": [{"type": kind, "queue": "default"}]}
    assert api.client.put("/api/v1/workers/w-1", json=worker, headers=auth).status_code == 200
    _run(api, auth)  # a second run, still pending

    samples = scrape(api)  # no key
    by_status = {
        status: value(samples, "foreman_tasks", type=kind, status=status)
        for status in ("pending", "queued", "running", "completed", "failed", "retrying")
    }
    assert by_status == {
        "pending": 0,  # every status of a type is there, zeros too
        "queued": 1,
        "running": 0,
        "completed": 1,
        "failed": 1,
        "retrying": 0,
    }
    assert waiting
    assert value(samples, "foreman_runs", status="running") == 1
    assert value(samples, "foreman_runs", status="pending") == 1
    assert value(samples, "foreman_runs", status="completed") == 0
    assert value(samples, "foreman_workers_live") == 1


def test_task_events_are_counted_once_each(api: Api, auth: dict[str, str]) -> None:
    kind = f"metrics.{uuid.uuid4().hex[:8]}"
    before = scrape(api)
    run_id = _run(api, auth)
    first, second = _task(api, auth, run_id, kind), _task(api, auth, run_id, kind)
    _claim(api, auth, first, "j-1")
    _claim(api, auth, first, "j-1")  # a repeated claim (its response was lost) moves nothing
    _claim(api, auth, second, "j-2")
    _patch(api, auth, first, status="completed", queueJobId="j-1")
    _patch(api, auth, first, status="completed", queueJobId="j-1")  # a repeat: no new event
    error = {"type": "ValueError", "message": "bad"}
    _patch(api, auth, second, status="retrying", queueJobId="j-2", errorData=error)
    _claim(api, auth, second, "j-3")
    _patch(api, auth, second, status="failed", queueJobId="j-3", errorData=error)
    retried = api.client.post(f"/api/v1/tasks/{second}/retry", json={}, headers=auth)
    assert retried.status_code == 200, retried.text
    after = scrape(api)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("foreman_tasks_created_total", type=kind) == 2
    changes = {
        status: delta("foreman_task_status_changes_total", type=kind, status=status)
        for status in ("queued", "running", "completed", "retrying", "failed")
    }
    # queued: 2 created + 1 retried through the API; running: 3 claims (the repeat is none)
    assert changes == {"queued": 3, "running": 3, "completed": 1, "retrying": 1, "failed": 1}
    assert delta("foreman_task_failures_total", type=kind, error_type="ValueError") == 2
    assert delta("foreman_task_retries_total", type=kind, trigger="automatic") == 1
    assert delta("foreman_task_retries_total", type=kind, trigger="manual") == 1
    assert delta("foreman_task_duration_seconds_count", type=kind, outcome="completed") == 1
    assert delta("foreman_task_duration_seconds_count", type=kind, outcome="retrying") == 1
    assert delta("foreman_task_duration_seconds_count", type=kind, outcome="failed") == 1
    # Only the two claims out of ``queued`` waited in line; the retry's claim waited out
    # its backoff.
    assert delta("foreman_task_queue_wait_seconds_count", type=kind) == 2
    wait = delta("foreman_task_queue_wait_seconds_sum", type=kind)
    assert 0 <= wait < 60


def test_a_lost_lease_and_a_cancelled_run_are_counted(api: Api, auth: dict[str, str]) -> None:
    kind = f"metrics.{uuid.uuid4().hex[:8]}"
    before = scrape(api)
    run_id = _run(api, auth)
    lost = _task(api, auth, run_id, kind)
    _task(api, auth, run_id, kind)  # never claimed: cancelled with its run
    _claim(api, auth, lost, "j-lost", leaseSeconds=1)
    time.sleep(1.2)
    reconciled = api.client.post("/api/v1/reconcile", json={}, headers=auth)
    assert reconciled.status_code == 200, reconciled.text
    cancelled = api.client.patch(
        f"/api/v1/runs/{run_id}", json={"status": "cancelled"}, headers=auth
    )
    assert cancelled.status_code == 200, cancelled.text
    after = scrape(api)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("foreman_task_failures_total", type=kind, error_type="WorkerLost") == 1
    assert delta("foreman_task_retries_total", type=kind, trigger="automatic") == 1
    # the retrying task and the one never claimed
    assert delta("foreman_task_status_changes_total", type=kind, status="cancelled") == 2
    assert value(after, "foreman_tasks", type=kind, status="cancelled") == 2


def test_http_requests_are_counted_by_route_template_and_status(
    api: Api, auth: dict[str, str]
) -> None:
    route = "/api/v1/tasks/{taskId}"
    labels = {"method": "GET", "route": route}
    before = scrape(api)
    missing = uuid.uuid4()
    for _ in range(3):
        assert api.client.get(f"/api/v1/tasks/{missing}", headers=auth).status_code == 404
    assert api.client.get("/api/v1/nothing-here", headers=auth).status_code == 404
    assert api.client.get("/health").status_code == 200
    after = scrape(api)

    def delta(name: str, **extra: str) -> float:
        return value(after, name, **extra) - value(before, name, **extra)

    assert delta("foreman_http_requests_total", **labels, status="404") == 3
    assert delta("foreman_http_request_duration_seconds_count", **labels) == 3
    assert delta("foreman_http_request_duration_seconds_sum", **labels) > 0
    assert delta("foreman_http_requests_total", method="GET", route="unmatched", status="404") == 1
    assert delta("foreman_http_requests_total", method="GET", route="/health", status="200") == 1
    ids = [name for (name, labels_) in after if str(missing) in str(labels_)]
    assert ids == []  # ids never become label values


def test_rate_limited_requests_are_counted(api: Api) -> None:
    headers = api.headers("*", rate_limit="2/1m")
    before = scrape(api)
    statuses = [api.client.get("/api/v1/runs", headers=headers).status_code for _ in range(3)]
    assert statuses == [200, 200, 429]
    after = scrape(api)
    limited = value(after, "foreman_rate_limited_requests_total", limit="key")
    assert limited - value(before, "foreman_rate_limited_requests_total", limit="key") == 1


def test_a_metrics_token_is_required_when_set(make_api: Any) -> None:
    token = "s3cret-metrics-token-0123"
    api = make_api(metrics_token=token)
    refused = api.client.get("/metrics")
    assert refused.status_code == 401
    assert refused.json()["code"] == "metrics_token_required"
    assert api.client.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert "foreman_runs" in str(scrape(api, Authorization=f"Bearer {token}"))


def test_metrics_can_be_turned_off(make_api: Any) -> None:
    api = make_api(metrics_enabled=False)
    response = api.client.get("/metrics")
    assert response.status_code == 404
    assert "FOREMAN_METRICS_ENABLED" in response.json()["error"]


def test_the_openapi_document_lists_metrics(api: Api) -> None:
    operation = api.client.get("/openapi.json").json()["paths"]["/metrics"]["get"]
    assert "text/plain" in operation["responses"]["200"]["content"]


@pytest.mark.parametrize("token", ["short"])
def test_a_short_metrics_token_is_refused_at_start(make_api: Any, token: str) -> None:
    with pytest.raises(ValueError, match="metrics_token"):
        make_api(metrics_token=token)
