"""The worker SDK's HTTP clients against ``httpx.MockTransport``: no server, no sleeping."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import httpx
import pytest

from foreman_api.schemas import Health, Page, Run, RunData, RunStatus, Task, TaskStatus
from foreman_worker._responses import parse_retry_after
from foreman_worker.client import AsyncForemanClient, ForemanClient, RetryPolicy
from foreman_worker.errors import (
    ApiError,
    ConfigurationError,
    Fail,
    ForemanError,
    HandlerSignal,
    RegistrationError,
    Retry,
    RuntimeFailure,
    UsageError,
)
from foreman_worker.result import ApiErrorInfo, Result

RUN_ID = str(uuid.uuid4())
TASK_ID = str(uuid.uuid4())
PARENT_ID = str(uuid.uuid4())
DATA_ID = str(uuid.uuid4())
STAMP = "2026-11-26T02:32:49.123Z"
KEY = "fmn_dev_" + "x" * 40


def run_json(**overrides: Any) -> dict[str, Any]:
    body = {
        "id": RUN_ID,
        "orgId": "org-1",
        "status": "pending",
        "inputData": {"orderId": "order-123"},
        "outputData": None,
        "errorData": None,
        "metadata": None,
        "totalTasks": 0,
        "completedTasks": 0,
        "failedTasks": 0,
        "createdAt": STAMP,
        "updatedAt": STAMP,
        "startedAt": None,
        "completedAt": None,
        "durationMs": None,
    }
    return body | overrides


def task_json(**overrides: Any) -> dict[str, Any]:
    body = {
        "id": TASK_ID,
        "runId": RUN_ID,
        "parentTaskId": None,
        "orgId": "org-1",
        "type": "process-order",
        "status": "pending",
        "inputData": {"action": "validate"},
        "outputData": None,
        "errorData": None,
        "metadata": None,
        "retryCount": 0,
        "maxRetries": 3,
        "queueJobId": None,
        "createdAt": STAMP,
        "updatedAt": STAMP,
    }
    return body | overrides


def data_json(**overrides: Any) -> dict[str, Any]:
    body = {
        "id": DATA_ID,
        "runId": RUN_ID,
        "taskId": None,
        "orgId": "org-1",
        "key": "customer-data",
        "value": {"customerId": "123"},
        "tags": ["validated"],
        "metadata": None,
        "createdAt": STAMP,
        "updatedAt": STAMP,
    }
    return body | overrides


def page(*items: dict[str, Any], limit: int = 100) -> dict[str, Any]:
    return {"data": list(items), "pagination": {"total": len(items), "limit": limit, "offset": 0}}


def error(status: int, code: str, message: str, **kwargs: Any) -> httpx.Response:
    return httpx.Response(status, json={"error": message, "code": code, "details": []}, **kwargs)


Reply = httpx.Response | Exception


@dataclass
class FakeApi:
    """Answers requests with queued replies (the last one repeats) and records them."""

    replies: list[Reply]
    requests: list[httpx.Request] = field(default_factory=list)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        reply = self.replies.pop(0) if len(self.replies) > 1 else self.replies[0]
        if isinstance(reply, Exception):
            raise reply
        return reply

    async def handle_async(self, request: httpx.Request) -> httpx.Response:
        return self(request)

    @property
    def last(self) -> httpx.Request:
        return self.requests[-1]


def body_of(request: httpx.Request) -> Any:
    return json.loads(request.content) if request.content else None


def query_of(request: httpx.Request) -> list[tuple[str, str]]:
    return list(request.url.params.multi_items())


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def make_client(sleeps: list[float]) -> Iterator[Callable[..., tuple[ForemanClient, FakeApi]]]:
    made: list[ForemanClient] = []

    def make(*replies: Reply, **options: Any) -> tuple[ForemanClient, FakeApi]:
        api = FakeApi(list(replies))
        options.setdefault("retry", RetryPolicy(attempts=4, initial_wait=0.01, max_wait=1.0))
        client = ForemanClient(
            "http://api.test", KEY, transport=httpx.MockTransport(api), **options
        )
        client._sleep = sleeps.append
        made.append(client)
        return client, api

    yield make
    for client in made:
        client.close()


def make_async(
    sleeps: list[float], *replies: Reply, **options: Any
) -> tuple[AsyncForemanClient, FakeApi]:
    api = FakeApi(list(replies))
    options.setdefault("retry", RetryPolicy(attempts=4, initial_wait=0.01, max_wait=1.0))
    client = AsyncForemanClient(
        "http://api.test", KEY, transport=httpx.MockTransport(api.handle_async), **options
    )

    async def fake_sleep(seconds: float) -> None:
        sleeps.append(seconds)

    client._sleep = fake_sleep
    return client, api


# ---- every method: method, path, query, body, parsed type ------------------------------


@dataclass(frozen=True)
class Case:
    name: str
    invoke: Callable[[ForemanClient], Result[Any]]
    method: str
    path: str
    reply: httpx.Response
    query: list[tuple[str, str]] = field(default_factory=list)
    body: Any = None
    check: Callable[[Any], bool] = lambda data: True


CASES = [
    Case(
        "create_run",
        lambda c: c.create_run({"orderId": "order-123"}, metadata={"source": "test"}),
        "POST",
        "/api/v1/runs",
        httpx.Response(201, json=run_json()),
        body={"inputData": {"orderId": "order-123"}, "metadata": {"source": "test"}},
        check=lambda d: isinstance(d, Run) and str(d.id) == RUN_ID,
    ),
    Case(
        "create_run minimal",
        lambda c: c.create_run(None),
        "POST",
        "/api/v1/runs",
        httpx.Response(201, json=run_json(inputData=None)),
        body={"inputData": None},
    ),
    Case(
        "get_run by UUID",
        lambda c: c.get_run(uuid.UUID(RUN_ID)),
        "GET",
        f"/api/v1/runs/{RUN_ID}",
        httpx.Response(200, json=run_json(status="running")),
        check=lambda d: d.status is RunStatus.RUNNING and d.input_data == {"orderId": "order-123"},
    ),
    Case(
        "update_run",
        lambda c: c.update_run(RUN_ID, status=RunStatus.COMPLETED, output_data={"ok": True}),
        "PATCH",
        f"/api/v1/runs/{RUN_ID}",
        httpx.Response(200, json=run_json(status="completed", outputData={"ok": True})),
        body={"status": "completed", "outputData": {"ok": True}},
        check=lambda d: d.output_data == {"ok": True},
    ),
    Case(
        "list_runs",
        lambda c: c.list_runs(status="failed", limit=10, offset=5, sort_order="asc"),
        "GET",
        "/api/v1/runs",
        httpx.Response(200, json=page(run_json(status="failed"), limit=10)),
        query=[
            ("status", "failed"),
            ("limit", "10"),
            ("offset", "5"),
            ("sortBy", "createdAt"),
            ("sortOrder", "asc"),
        ],
        check=lambda d: isinstance(d, Page) and d.pagination.limit == 10 and d.data[0].id,
    ),
    Case(
        "create_task",
        lambda c: c.create_task(
            RUN_ID,
            "process-order",
            input_data={"action": "validate"},
            parent_task_id=PARENT_ID,
            metadata={"m": 1},
            max_retries=5,
        ),
        "POST",
        "/api/v1/tasks",
        httpx.Response(201, json=task_json(parentTaskId=PARENT_ID, maxRetries=5)),
        body={
            "runId": RUN_ID,
            "type": "process-order",
            "inputData": {"action": "validate"},
            "parentTaskId": PARENT_ID,
            "metadata": {"m": 1},
            "maxRetries": 5,
        },
        check=lambda d: isinstance(d, Task) and str(d.parent_task_id) == PARENT_ID,
    ),
    Case(
        "create_task minimal",
        lambda c: c.create_task(RUN_ID, "noop"),
        "POST",
        "/api/v1/tasks",
        httpx.Response(201, json=task_json(type="noop")),
        body={"runId": RUN_ID, "type": "noop", "inputData": None},
    ),
    Case(
        "get_task",
        lambda c: c.get_task(TASK_ID),
        "GET",
        f"/api/v1/tasks/{TASK_ID}",
        httpx.Response(200, json=task_json()),
        check=lambda d: d.status is TaskStatus.PENDING and d.retry_count == 0,
    ),
    Case(
        "update_task claim",
        lambda c: c.update_task(TASK_ID, status="running", queue_job_id="job-1"),
        "PATCH",
        f"/api/v1/tasks/{TASK_ID}",
        httpx.Response(200, json=task_json(status="running", queueJobId="job-1")),
        body={"status": "running", "queueJobId": "job-1"},
        check=lambda d: d.queue_job_id == "job-1",
    ),
    Case(
        "update_task explicit nulls",
        lambda c: c.update_task(TASK_ID, output_data=None, metadata=None),
        "PATCH",
        f"/api/v1/tasks/{TASK_ID}",
        httpx.Response(200, json=task_json()),
        body={"outputData": None, "metadata": None},
    ),
    Case(
        "list_tasks",
        lambda c: c.list_tasks(
            run_id=RUN_ID, parent_task_id=PARENT_ID, status=TaskStatus.QUEUED, type="t"
        ),
        "GET",
        "/api/v1/tasks",
        httpx.Response(200, json=page(task_json(), task_json(id=str(uuid.uuid4())))),
        query=[
            ("runId", RUN_ID),
            ("parentTaskId", PARENT_ID),
            ("status", "queued"),
            ("type", "t"),
            ("limit", "100"),
            ("offset", "0"),
            ("sortBy", "createdAt"),
            ("sortOrder", "desc"),
        ],
        check=lambda d: len(d.data) == 2 and all(isinstance(t, Task) for t in d.data),
    ),
    Case(
        "create_run_data",
        lambda c: c.create_run_data(
            RUN_ID,
            "customer-data",
            {"customerId": "123"},
            task_id=TASK_ID,
            tags=["validated", "v1.0"],
            metadata={"m": True},
        ),
        "POST",
        f"/api/v1/runs/{RUN_ID}/data",
        httpx.Response(201, json=data_json(taskId=TASK_ID, tags=["validated", "v1.0"])),
        body={
            "key": "customer-data",
            "value": {"customerId": "123"},
            "taskId": TASK_ID,
            "tags": ["validated", "v1.0"],
            "metadata": {"m": True},
        },
        check=lambda d: isinstance(d, RunData) and d.tags == ["validated", "v1.0"],
    ),
    Case(
        "get_run_data",
        lambda c: c.get_run_data(RUN_ID, "customer-data"),
        "GET",
        f"/api/v1/runs/{RUN_ID}/data",
        httpx.Response(200, json=page(data_json(), limit=1)),
        query=[("key", "customer-data"), ("limit", "1")],
        check=lambda d: isinstance(d, RunData) and d.key == "customer-data",
    ),
    Case(
        "get_run_data missing key",
        lambda c: c.get_run_data(RUN_ID, "nothing"),
        "GET",
        f"/api/v1/runs/{RUN_ID}/data",
        httpx.Response(200, json=page(limit=1)),
        query=[("key", "nothing"), ("limit", "1")],
        check=lambda d: d is None,
    ),
    Case(
        "get_all_run_data",
        lambda c: c.get_all_run_data(RUN_ID, "k", limit=50),
        "GET",
        f"/api/v1/runs/{RUN_ID}/data",
        httpx.Response(200, json=page(data_json(), data_json(id=str(uuid.uuid4())))),
        query=[("key", "k"), ("includeAll", "true"), ("limit", "50"), ("sortOrder", "desc")],
        check=lambda d: isinstance(d, list) and len(d) == 2,
    ),
    Case(
        "query_run_data_by_tags",
        lambda c: c.query_run_data_by_tags(RUN_ID, ["a", "b"], "all", include_all=True),
        "GET",
        f"/api/v1/runs/{RUN_ID}/data",
        httpx.Response(200, json=page(data_json())),
        query=[
            ("tags", "a"),
            ("tags", "b"),
            ("tagMode", "all"),
            ("includeAll", "true"),
            ("limit", "1000"),
        ],
        check=lambda d: isinstance(d[0], RunData),
    ),
    Case(
        "query_run_data",
        lambda c: c.query_run_data(
            RUN_ID,
            key="k",
            keys=["k1", "k2"],
            key_starts_with="customer-",
            key_pattern="c*?",
            tags="v1.0",
            tag_starts_with=["v"],
            tag_mode="any",
            include_all=True,
            limit=20,
            offset=40,
            sort_by="key",
            sort_order="asc",
        ),
        "GET",
        f"/api/v1/runs/{RUN_ID}/data",
        httpx.Response(200, json=page(data_json())),
        query=[
            ("key", "k"),
            ("keys", "k1"),
            ("keys", "k2"),
            ("keyStartsWith", "customer-"),
            ("keyPattern", "c*?"),
            ("tags", "v1.0"),
            ("tagStartsWith", "v"),
            ("tagMode", "any"),
            ("includeAll", "true"),
            ("limit", "20"),
            ("offset", "40"),
            ("sortBy", "key"),
            ("sortOrder", "asc"),
        ],
        check=lambda d: isinstance(d, Page) and d.pagination.total == 1,
    ),
    Case(
        "query_run_data no filters",
        lambda c: c.query_run_data(RUN_ID),
        "GET",
        f"/api/v1/runs/{RUN_ID}/data",
        httpx.Response(200, json=page()),
    ),
    Case(
        "update_run_data_tags",
        lambda c: c.update_run_data_tags(RUN_ID, DATA_ID, add=["new"], remove=("old",)),
        "PATCH",
        f"/api/v1/runs/{RUN_ID}/data/{DATA_ID}/tags",
        httpx.Response(200, json=data_json(tags=["validated", "new"])),
        body={"add": ["new"], "remove": ["old"]},
        check=lambda d: d.tags == ["validated", "new"],
    ),
    Case(
        "delete_run_data by key",
        lambda c: c.delete_run_data(RUN_ID, key="customer-data"),
        "DELETE",
        f"/api/v1/runs/{RUN_ID}/data",
        httpx.Response(200, json={"deleted": 3}),
        query=[("key", "customer-data")],
        check=lambda d: d == 3,
    ),
    Case(
        "retry_task (replay)",
        lambda c: c.retry_task(TASK_ID, input_data={"n": 2}),
        "POST",
        f"/api/v1/tasks/{TASK_ID}/retry",
        httpx.Response(200, json=task_json(status="queued")),
        body={"inputData": {"n": 2}},
        check=lambda d: isinstance(d, Task) and d.status is TaskStatus.QUEUED,
    ),
    Case(
        "retry_task",
        lambda c: c.retry_task(TASK_ID),
        "POST",
        f"/api/v1/tasks/{TASK_ID}/retry",
        httpx.Response(200, json=task_json(status="queued")),
        body={},
    ),
    Case(
        "retry_run",
        lambda c: c.retry_run(RUN_ID),
        "POST",
        f"/api/v1/runs/{RUN_ID}/retry",
        httpx.Response(200, json={"moved": 1, "taskIds": [TASK_ID]}),
        check=lambda d: d.moved == 1 and [str(i) for i in d.task_ids] == [TASK_ID],
    ),
    Case(
        "retry_tasks",
        lambda c: c.retry_tasks(
            run_id=RUN_ID,
            type="charge",
            status="failed",
            created_after=datetime(2026, 11, 1, tzinfo=UTC),
            limit=50,
        ),
        "POST",
        "/api/v1/tasks/retry",
        httpx.Response(200, json={"moved": 0, "taskIds": []}),
        body={
            "runId": RUN_ID,
            "type": "charge",
            "status": "failed",
            "createdAfter": "2026-11-01T00:00:00Z",
            "limit": 50,
        },
        check=lambda d: d.moved == 0,
    ),
    Case(
        "list_attempts",
        lambda c: c.list_attempts(TASK_ID),
        "GET",
        f"/api/v1/tasks/{TASK_ID}/attempts",
        httpx.Response(
            200,
            json={
                "data": [
                    {
                        "number": 1,
                        "workerId": "w",
                        "queueJobId": "j",
                        "startedAt": "2026-11-27T00:00:00.000Z",
                        "outcome": "running",
                    }
                ]
            },
        ),
        check=lambda d: d.data[0].number == 1 and d.data[0].finished_at is None,
    ),
    Case(
        "delete_run_data by id",
        lambda c: c.delete_run_data(RUN_ID, id=uuid.UUID(DATA_ID)),
        "DELETE",
        f"/api/v1/runs/{RUN_ID}/data",
        httpx.Response(200, json={"deleted": 1}),
        query=[("id", DATA_ID)],
        check=lambda d: d == 1,
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_method_sends_the_right_request_and_parses_the_answer(
    make_client: Callable[..., tuple[ForemanClient, FakeApi]], case: Case
) -> None:
    client, api = make_client(case.reply)
    result = case.invoke(client)
    assert result.success, result.error
    assert result.error is None
    assert case.check(result.data)
    assert len(api.requests) == 1
    request = api.last
    assert request.method == case.method
    assert request.url.path == case.path
    assert query_of(request) == case.query
    assert body_of(request) == case.body
    assert request.headers["Authorization"] == f"Bearer {KEY}"


def test_health_sends_no_key_and_a_degraded_service_is_an_answer(
    make_client: Callable[..., tuple[ForemanClient, FakeApi]],
) -> None:
    degraded = {"status": "degraded", "database": "unavailable", "redis": "ok", "version": "0.1"}
    client, api = make_client(httpx.Response(503, json=degraded))
    result = client.health()
    assert result.success
    assert isinstance(result.data, Health)
    assert result.data.status == "degraded"
    assert api.last.url.path == "/health"
    assert "Authorization" not in api.last.headers
    assert len(api.requests) == 1  # a 503 with a Health body is not retried


# ---- failures come back as Results -----------------------------------------------------


@pytest.mark.parametrize(
    ("status", "code", "message"),
    [
        (404, "not_found", "Task not found"),
        (409, "invalid_transition", "Cannot move task from completed to running"),
        (400, "invalid_request", "limit must be between 1 and 1000"),
        (401, "unauthorized", "Invalid API key"),
        (403, "forbidden", "Missing permission tasks:update"),
    ],
)
def test_api_errors_become_failed_results(
    make_client: Callable[..., tuple[ForemanClient, FakeApi]],
    status: int,
    code: str,
    message: str,
) -> None:
    client, api = make_client(error(status, code, message))
    result = client.update_task(TASK_ID, status="running")
    assert not result.success
    assert result.data is None
    assert result.error == ApiErrorInfo(status, code, message)
    assert len(api.requests) == 1  # client errors are never retried
    with pytest.raises(ApiError) as raised:
        result.unwrap()
    assert (raised.value.status, raised.value.code, raised.value.message) == (
        status,
        code,
        message,
    )
    assert str(raised.value) == f"{status} {code}: {message}"


def test_error_details_are_parsed(
    make_client: Callable[..., tuple[ForemanClient, FakeApi]],
) -> None:
    body = {
        "error": "Invalid request body",
        "code": "invalid_request",
        "details": [{"field": "inputData", "message": "Field required"}],
    }
    client, _ = make_client(httpx.Response(400, json=body))
    result = client.create_run({})
    assert result.error is not None
    assert [(d.field, d.message) for d in result.error.details] == [("inputData", "Field required")]


def test_non_json_error_body_keeps_status_and_a_code(
    make_client: Callable[..., tuple[ForemanClient, FakeApi]],
) -> None:
    client, _ = make_client(
        httpx.Response(502, text="<html>Bad Gateway</html>"), retry=RetryPolicy.none()
    )
    result = client.get_run(RUN_ID)
    assert result.error is not None
    assert (result.error.status, result.error.code) == (502, "bad_gateway")
    assert "Bad Gateway" in result.error.message


@pytest.mark.parametrize(
    "reply",
    [
        httpx.Response(200, text="not json"),
        httpx.Response(200, json={"id": "not-a-uuid"}),
        httpx.Response(200, json=[1, 2, 3]),
    ],
    ids=["not-json", "wrong-shape", "wrong-type"],
)
def test_malformed_success_is_invalid_response(
    make_client: Callable[..., tuple[ForemanClient, FakeApi]], reply: httpx.Response
) -> None:
    client, api = make_client(reply)
    result = client.get_task(TASK_ID)
    assert result.error is not None
    assert (result.error.status, result.error.code) == (200, "invalid_response")
    assert len(api.requests) == 1


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (httpx.ConnectError("connection refused"), "network_error"),
        (httpx.ReadError("connection reset"), "network_error"),
        (httpx.RemoteProtocolError("server disconnected"), "network_error"),
        (httpx.ReadTimeout("timed out"), "timeout"),
        (httpx.ConnectTimeout("timed out"), "timeout"),
    ],
)
def test_network_failures_become_results_after_bounded_retries(
    make_client: Callable[..., tuple[ForemanClient, FakeApi]],
    sleeps: list[float],
    exc: Exception,
    code: str,
) -> None:
    client, api = make_client(exc)
    result = client.get_task(TASK_ID)
    assert not result.success
    assert result.error is not None
    assert (result.error.status, result.error.code) == (None, code)
    assert type(exc).__name__ in result.error.message
    assert len(api.requests) == 4
    assert len(sleeps) == 3
    with pytest.raises(ApiError):
        result.unwrap()


# ---- local validation and misuse --------------------------------------------------------


@pytest.mark.parametrize(
    "invoke",
    [
        lambda c: c.get_task("not-a-uuid"),
        lambda c: c.update_task(TASK_ID, status="sleeping"),
        lambda c: c.list_runs(status="bogus"),
        lambda c: c.create_task(RUN_ID, "t", max_retries=11),
        lambda c: c.create_task(RUN_ID, ""),
        lambda c: c.create_run({"x": float("nan")}),
        lambda c: c.create_run_data(RUN_ID, "", 1),
    ],
    ids=["bad-uuid", "bad-status", "bad-filter", "max-retries", "empty-type", "nan", "empty-key"],
)
def test_invalid_requests_fail_before_sending(
    make_client: Callable[..., tuple[ForemanClient, FakeApi]],
    invoke: Callable[[ForemanClient], Result[Any]],
) -> None:
    client, api = make_client(httpx.Response(500))
    result = invoke(client)
    assert result.error is not None
    assert (result.error.status, result.error.code) == (None, "invalid_request")
    assert api.requests == []


def test_local_body_errors_name_the_fields(
    make_client: Callable[..., tuple[ForemanClient, FakeApi]],
) -> None:
    client, _ = make_client(httpx.Response(500))
    result = client.create_task(RUN_ID, "t", max_retries=11)
    assert result.error is not None
    assert [d.field for d in result.error.details] == ["max_retries"]


def test_misuse_raises(make_client: Callable[..., tuple[ForemanClient, FakeApi]]) -> None:
    client, api = make_client(httpx.Response(500))
    with pytest.raises(TypeError):
        client.delete_run_data(RUN_ID)
    with pytest.raises(TypeError):
        client.delete_run_data(RUN_ID, key="k", id=DATA_ID)
    with pytest.raises(TypeError):
        client.get_task(123)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        client.create_run_data(RUN_ID, "k", 1, tags=[1])  # type: ignore[list-item]
    assert api.requests == []


@pytest.mark.parametrize("url", ["ftp://api.test", "api.test:8000", "http://"])
def test_bad_base_url_is_a_configuration_error(url: str) -> None:
    with pytest.raises(ConfigurationError):
        ForemanClient(url, KEY)


@pytest.mark.parametrize(
    "options",
    [
        {"attempts": 0},
        {"attempts": None},
        {"initial_wait": -1},
        {"initial_wait": 5, "max_wait": 1},
        {"max_wait": float("inf")},
        {"deadline": 0},
    ],
)
def test_bad_retry_policy_is_a_configuration_error(options: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError):
        RetryPolicy(**options)


def test_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FOREMAN_API_URL", "http://env.test:9000/api/v1/")
    monkeypatch.setenv("FOREMAN_API_KEY", "fmn_dev_fromenv")
    api = FakeApi([httpx.Response(200, json=task_json())])
    with ForemanClient(transport=httpx.MockTransport(api)) as client:
        assert client.base_url == "http://env.test:9000"
        assert client.get_task(TASK_ID).success
    assert str(api.last.url) == f"http://env.test:9000/api/v1/tasks/{TASK_ID}"
    assert api.last.headers["Authorization"] == "Bearer fmn_dev_fromenv"

    monkeypatch.delenv("FOREMAN_API_URL")
    with ForemanClient() as client:
        assert client.base_url == "http://127.0.0.1:8000"
    with pytest.raises(ConfigurationError):
        ForemanClient(api_key="two words")


def test_base_url_path_prefix_is_kept() -> None:
    api = FakeApi([httpx.Response(200, json=run_json())])
    with ForemanClient("http://proxy.test/foreman/", KEY, transport=httpx.MockTransport(api)) as c:
        assert c.get_run(RUN_ID).success
    assert api.last.url.path == f"/foreman/api/v1/runs/{RUN_ID}"


# ---- retries ---------------------------------------------------------------------------


def test_retries_503_then_succeeds(
    make_client: Callable[..., tuple[ForemanClient, FakeApi]], sleeps: list[float]
) -> None:
    client, api = make_client(
        error(503, "service_unavailable", "Database unavailable"),
        httpx.Response(502, text="bad gateway"),
        httpx.Response(200, json=task_json()),
    )
    result = client.get_task(TASK_ID)
    assert result.success
    assert len(api.requests) == 3
    assert len(sleeps) == 2
    assert all(0 < s <= 1.0 for s in sleeps)


def test_429_waits_for_retry_after(
    make_client: Callable[..., tuple[ForemanClient, FakeApi]], sleeps: list[float]
) -> None:
    client, api = make_client(
        error(429, "rate_limited", "Too many requests", headers={"Retry-After": "0.5"}),
        httpx.Response(200, json=task_json()),
    )
    assert client.get_task(TASK_ID).success
    assert len(api.requests) == 2
    assert sleeps == [0.5]  # backoff alone would have waited at most 0.01 s


def test_retry_after_is_capped_by_max_wait(
    make_client: Callable[..., tuple[ForemanClient, FakeApi]], sleeps: list[float]
) -> None:
    client, _ = make_client(
        error(429, "rate_limited", "Too many requests", headers={"Retry-After": "900"}),
        retry=RetryPolicy(attempts=2, initial_wait=0.01, max_wait=2.0),
    )
    result = client.get_run(RUN_ID)
    assert result.error is not None
    assert (result.error.code, result.error.retry_after) == ("rate_limited", 900.0)
    assert sleeps == [2.0]


def test_retries_are_bounded_and_return_the_last_error(
    make_client: Callable[..., tuple[ForemanClient, FakeApi]], sleeps: list[float]
) -> None:
    client, api = make_client(
        error(503, "service_unavailable", "down"),
        retry=RetryPolicy(attempts=3, initial_wait=0.1, max_wait=0.3),
    )
    result = client.update_task(TASK_ID, status="completed")
    assert result.error is not None
    assert (result.error.status, result.error.code) == (503, "service_unavailable")
    assert len(api.requests) == 3
    assert len(sleeps) == 2
    assert 0.05 <= sleeps[0] <= 0.1
    assert 0.1 <= sleeps[1] <= 0.2  # exponential, with jitter in [b/2, b]


def test_no_retry_policy(
    make_client: Callable[..., tuple[ForemanClient, FakeApi]], sleeps: list[float]
) -> None:
    client, api = make_client(httpx.ConnectError("refused"), retry=RetryPolicy.none())
    assert client.get_run(RUN_ID).error is not None
    assert len(api.requests) == 1
    assert sleeps == []


def test_deadline_bounds_a_patient_policy() -> None:
    api = FakeApi([httpx.ConnectError("refused")])
    policy = RetryPolicy.patient(0.15, initial_wait=0.02, max_wait=0.05)
    with ForemanClient(
        "http://api.test", KEY, retry=policy, transport=httpx.MockTransport(api)
    ) as c:
        result = c.get_task(TASK_ID)  # real sleeps, but only for ~0.15 s
    assert result.error is not None
    assert result.error.code == "network_error"
    assert 3 <= len(api.requests) <= 12


@pytest.mark.parametrize(
    ("reply", "attempts"),
    [
        (httpx.ConnectError("refused"), 4),  # never reached the server
        (httpx.ConnectTimeout("timed out"), 4),
        (error(429, "rate_limited", "slow down"), 4),
        (error(503, "service_unavailable", "down"), 4),
        (httpx.ReadTimeout("timed out"), 1),  # may have been created: do not duplicate
        (httpx.RemoteProtocolError("disconnected"), 1),
        (httpx.Response(502, text="bad gateway"), 1),
        (httpx.Response(504, text="gateway timeout"), 1),
    ],
)
def test_creates_are_retried_only_when_the_server_surely_did_not_act(
    make_client: Callable[..., tuple[ForemanClient, FakeApi]], reply: Reply, attempts: int
) -> None:
    creates: list[Callable[[ForemanClient], Result[Any]]] = [
        lambda c: c.create_run({}),
        lambda c: c.create_task(RUN_ID, "t"),
        lambda c: c.create_run_data(RUN_ID, "k", 1),
    ]
    for invoke in creates:
        client, api = make_client(reply)
        assert not invoke(client).success
        assert len(api.requests) == attempts


def test_parse_retry_after() -> None:
    assert parse_retry_after(None) is None
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after("-1") == 0.0
    assert parse_retry_after("soon") is None
    assert parse_retry_after("nan") is None
    later = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    parsed = parse_retry_after(later)
    assert parsed is not None
    assert 25 < parsed <= 30


# ---- async parity -----------------------------------------------------------------------


def test_async_client_same_requests_and_results(sleeps: list[float]) -> None:
    async def scenario() -> None:
        client, api = make_async(
            sleeps,
            httpx.Response(201, json=run_json()),
            error(404, "not_found", "Task not found"),
            error(503, "service_unavailable", "down"),
            httpx.Response(200, json=task_json(status="running", queueJobId="j")),
            httpx.Response(200, json=page(data_json(), limit=1)),
            httpx.ConnectError("refused"),
        )
        async with client:
            created = await client.create_run({"orderId": "order-123"})
            assert isinstance(created.data, Run)
            assert body_of(api.requests[0]) == {"inputData": {"orderId": "order-123"}}

            missing = await client.get_task(TASK_ID)
            assert missing.error == ApiErrorInfo(404, "not_found", "Task not found")

            claimed = await client.update_task(TASK_ID, status="running", queue_job_id="j")
            assert claimed.success
            assert sleeps and len(sleeps) == 1  # one 503, then success
            assert body_of(api.requests[-1]) == {"status": "running", "queueJobId": "j"}

            latest = await client.get_run_data(RUN_ID, "customer-data")
            assert isinstance(latest.data, RunData)
            assert query_of(api.last) == [("key", "customer-data"), ("limit", "1")]

            failed = await client.list_tasks(run_id=RUN_ID)
            assert failed.error is not None
            assert failed.error.code == "network_error"
            assert len(sleeps) == 4

            invalid = await client.get_run("nope")
            assert invalid.error is not None
            assert invalid.error.code == "invalid_request"

    asyncio.run(scenario())


def test_both_clients_have_the_same_methods() -> None:
    def public(cls: type) -> set[str]:
        return {name for name in vars(cls) if not name.startswith("_")}

    assert public(ForemanClient) == public(AsyncForemanClient)


def test_wrong_transport_kind_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError):
        ForemanClient("http://api.test", transport=httpx.AsyncHTTPTransport())  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError):
        AsyncForemanClient("http://api.test", transport=httpx.HTTPTransport())  # type: ignore[arg-type]


# ---- Result and the exception tree ------------------------------------------------------


def test_result_helpers() -> None:
    ok = Result.ok(5)
    assert (ok.success, ok.data, ok.error, ok.unwrap()) == (True, 5, None, 5)
    assert Result.ok(None).unwrap() is None
    info = ApiErrorInfo(None, "timeout", "GET /x: ReadTimeout", retry_after=None)
    failed: Result[int] = Result.fail(info)
    assert (failed.success, failed.data, failed.error) == (False, None, info)
    with pytest.raises(ApiError) as raised:
        failed.unwrap()
    assert raised.value.status is None
    assert str(raised.value) == "timeout: GET /x: ReadTimeout"
    with pytest.raises(ValueError):
        Result(True, 1, info)
    with pytest.raises(ValueError):
        Result(False, 1, None)


def test_exception_tree() -> None:
    assert issubclass(ConfigurationError, UsageError)
    assert issubclass(RegistrationError, UsageError)
    assert issubclass(ApiError, RuntimeFailure)
    assert issubclass(Retry, HandlerSignal)
    assert issubclass(Fail, HandlerSignal)
    assert issubclass(HandlerSignal, RuntimeFailure)
    assert all(issubclass(c, ForemanError) for c in (UsageError, RuntimeFailure))
    assert Retry(2.5).delay == 2.5
    assert Retry().delay is None
    with pytest.raises(ValueError):
        Retry(-1)
    assert str(Fail("bad input")) == "bad input"


# ---- against the real app (in process, both storage backends) ---------------------------


def test_every_method_against_the_app(api: Any) -> None:
    """The client and the service agree on paths, parameters and shapes."""
    # TestClient is an httpx.Client: borrow its in-process transport to reach the app.
    transport = api.client._transport
    with ForemanClient("http://testserver", api.key("*"), transport=transport) as client:
        assert client.health().unwrap().status in ("ok", "degraded")
        run = client.create_run({"orderId": "order-123"}, metadata={"source": "test"}).unwrap()
        assert client.get_run(run.id).unwrap().input_data == {"orderId": "order-123"}
        assert client.list_runs(status="pending").unwrap().pagination.total == 1

        parent = client.create_task(run.id, "parent", input_data={"n": 1}).unwrap()
        child = client.create_task(
            str(run.id), "child", parent_task_id=parent.id, max_retries=0
        ).unwrap()
        assert child.parent_task_id == parent.id and child.max_retries == 0
        claimed = client.update_task(parent.id, status="running", queue_job_id="job-1").unwrap()
        assert claimed.status is TaskStatus.RUNNING
        again = client.update_task(parent.id, status="running", queue_job_id="job-1")
        assert again.success  # a repeated claim by the same job is answered 200
        done = client.update_task(parent.id, status=TaskStatus.COMPLETED, output_data=[1, 2])
        assert done.unwrap().output_data == [1, 2]
        conflict = client.update_task(parent.id, status="running")
        assert conflict.error is not None and conflict.error.status == 409
        children = client.list_tasks(run_id=run.id, parent_task_id=parent.id).unwrap()
        assert [t.id for t in children.data] == [child.id]
        assert client.get_task(child.id).unwrap().type == "child"

        first = client.create_run_data(run.id, "customer-data", {"v": 1}, tags=["a"]).unwrap()
        client.create_run_data(run.id, "customer-data", {"v": 2}, task_id=parent.id, tags="b")
        client.create_run_data(run.id, "other", 3, tags=["a", "b"])
        latest = client.get_run_data(run.id, "customer-data").unwrap()
        assert latest is not None and latest.value == {"v": 2}
        assert client.get_run_data(run.id, "missing").unwrap() is None
        assert [e.value for e in client.get_all_run_data(run.id, "customer-data").unwrap()] == [
            {"v": 2},
            {"v": 1},
        ]
        both = client.query_run_data_by_tags(run.id, ["a", "b"], "all").unwrap()
        assert [e.key for e in both] == ["other"]
        prefixed = client.query_run_data(run.id, key_starts_with=["customer-"], include_all=True)
        assert prefixed.unwrap().pagination.total == 2
        tagged = client.update_run_data_tags(run.id, first.id, add=["x"], remove=["a"]).unwrap()
        assert tagged.tags == ["x"]
        assert client.delete_run_data(run.id, id=first.id).unwrap() == 1
        assert client.delete_run_data(run.id, key="customer-data").unwrap() == 1

        finished = client.update_run(run.id, status="completed", output_data={"ok": True})
        assert finished.unwrap().status is RunStatus.COMPLETED
        missing = client.get_task(uuid.uuid4())
        assert missing.error is not None and missing.error.code == "not_found"


# ---- a newer server ----------------------------------------------------------------------


def test_statuses_and_fields_of_a_newer_server_are_read_not_refused(
    make_client: Callable[..., tuple[ForemanClient, FakeApi]],
) -> None:
    newer = task_json(status="paused", pausedBy="ops", retryAt=None)
    client, _ = make_client(
        httpx.Response(200, json=newer),
        httpx.Response(200, json=page(newer, task_json())),
        httpx.Response(200, json=run_json(status="archived")),
    )
    task = client.get_task(TASK_ID).unwrap()
    assert task.status == "paused" and isinstance(task.status, TaskStatus)
    assert task.status not in set(TaskStatus)  # none of the statuses this version knows
    assert json.loads(task.model_dump_json(by_alias=True))["status"] == "paused"
    listed = client.list_tasks().unwrap().data
    assert [t.status for t in listed] == ["paused", TaskStatus.PENDING]
    assert client.get_run(RUN_ID).unwrap().status == "archived"
    # ...but this version never sends one it does not know
    refused = client.update_task(TASK_ID, status="paused")
    assert refused.error is not None and refused.error.code == "invalid_request"
