"""The seed document's "Common Workflows", replayed over HTTP exactly as the TypeScript
client published with it (``@codespin/foreman-client``) sends them, against the in-process
app on each backend.

What that client puts on the wire (``src/api.ts``, ``src/http-client.ts``): ``fetch`` with
``Content-Type: application/json`` on every request and ``Authorization: Bearer <key>``;
bodies are ``JSON.stringify`` of the input; query strings are ``URLSearchParams`` of the
parameters, arrays joined with commas (so ``,`` travels as ``%2C``), booleans as
``true``/``false``, spaces as ``+``. Its ``QueryRunDataParams`` spell ``sortBy`` in
snake_case (``created_at``, ``updated_at``, ``key``). A call succeeds when the response is
2xx; the client then reads the body as the shapes in its ``src/api-types.ts``.

The seed's ``getRunData``, ``getAllRunData`` and ``queryRunDataByTags`` are not functions of
that client: it offers ``queryRunData`` for all of them, called as below. ``queue.add`` is
BullMQ's, not an API call.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from tests.conftest import Api

# The fields the client's types declare (src/api-types.ts): each must be in our answer.
RUN_FIELDS = {
    "id",
    "orgId",
    "status",
    "inputData",
    "outputData",
    "errorData",
    "metadata",
    "totalTasks",
    "completedTasks",
    "failedTasks",
    "createdAt",
    "updatedAt",
    "startedAt",
    "completedAt",
    "durationMs",
}
TASK_FIELDS = {
    "id",
    "runId",
    "parentTaskId",
    "orgId",
    "type",
    "status",
    "inputData",
    "outputData",
    "errorData",
    "metadata",
    "retryCount",
    "maxRetries",
    "createdAt",
    "updatedAt",
    "queuedAt",
    "startedAt",
    "completedAt",
    "durationMs",
    "queueJobId",
}
RUN_DATA_FIELDS = {
    "id",
    "runId",
    "taskId",
    "orgId",
    "key",
    "value",
    "tags",
    "metadata",
    "createdAt",
    "updatedAt",
}
PAGINATION_FIELDS = {"total", "limit", "offset"}
_FORM_SAFE = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789*-._")


def _form_encode(text: str) -> str:
    """``application/x-www-form-urlencoded`` as ``URLSearchParams`` writes it."""
    out = []
    for char in text:
        if char in _FORM_SAFE:
            out.append(char)
        elif char == " ":
            out.append("+")
        else:
            out.extend(f"%{byte:02X}" for byte in char.encode())
    return "".join(out)


def build_query_string(params: dict[str, Any]) -> str:
    """The client's ``buildQueryString``: skips null/undefined, joins arrays with commas,
    writes objects as JSON, everything else with ``String(value)``."""
    pairs = []
    for name, value in params.items():
        if value is None:
            continue
        if isinstance(value, list):
            text = ",".join(str(item) for item in value)
        elif isinstance(value, dict):
            text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
        elif isinstance(value, bool):
            text = "true" if value else "false"
        else:
            text = str(value)
        pairs.append(f"{_form_encode(name)}={_form_encode(text)}")
    return "?" + "&".join(pairs) if pairs else ""


class SeedClient:
    """The published client's API functions, as HTTP requests (one method each)."""

    def __init__(self, api: Api, key: str) -> None:
        self.client = api.client
        self.headers = {"Content-Type": "application/json", "Authorization": f"Bearer {key}"}
        self.calls: list[tuple[str, str, int]] = []

    def send(self, method: str, path: str, body: Any = None) -> httpx.Response:
        """One request as ``httpRequest`` makes it."""
        content = (
            None if body is None else json.dumps(body, separators=(",", ":"), ensure_ascii=False)
        )
        response = self.client.request(
            method, f"/api/v1{path}", content=content, headers=self.headers
        )
        self.calls.append((method, f"/api/v1{path}", response.status_code))
        return response

    def _request(self, method: str, path: str, body: Any = None) -> Any:
        response = self.send(method, path, body)
        assert response.is_success, (method, path, response.status_code, response.text)
        return response.json()

    def create_run(self, input: dict[str, Any]) -> Any:
        return self._request("POST", "/runs", input)

    def list_runs(self, params: dict[str, Any]) -> Any:
        return self._request("GET", f"/runs{build_query_string(params)}")

    def create_task(self, input: dict[str, Any]) -> Any:
        return self._request("POST", "/tasks", input)

    def get_task(self, task_id: str) -> Any:
        return self._request("GET", f"/tasks/{task_id}")

    def update_task(self, task_id: str, input: dict[str, Any]) -> Any:
        return self._request("PATCH", f"/tasks/{task_id}", input)

    def list_tasks(self, params: dict[str, Any]) -> Any:
        return self._request("GET", f"/tasks{build_query_string(params)}")

    def create_run_data(self, run_id: str, input: dict[str, Any]) -> Any:
        return self._request("POST", f"/runs/{run_id}/data", input)

    def query_run_data(self, run_id: str, params: dict[str, Any] | None = None) -> Any:
        query = build_query_string(params) if params else ""
        return self._request("GET", f"/runs/{run_id}/data{query}")


def has_fields(body: Any, fields: set[str]) -> bool:
    return isinstance(body, dict) and fields <= set(body)


def is_page(body: Any, fields: set[str]) -> bool:
    return (
        has_fields(body, {"data", "pagination"})
        and has_fields(body["pagination"], PAGINATION_FIELDS)
        and all(has_fields(item, fields) for item in body["data"])
    )


def test_seed_common_workflows_as_the_published_client_sends_them(api: Api) -> None:
    foreman = SeedClient(api, api.key("*"))

    # -- Creating and Executing a Task
    run = foreman.create_run({"inputData": {"orderId": "order-123"}})
    assert has_fields(run, RUN_FIELDS) and run["status"] == "pending"
    task = foreman.create_task(
        {"runId": run["id"], "type": "process-order", "inputData": {"action": "validate"}}
    )
    assert has_fields(task, TASK_FIELDS) and task["status"] == "pending"
    # queue.add('work', {taskId: task.data.id}): BullMQ, no API call
    task_data = foreman.get_task(task["id"])
    assert has_fields(task_data, TASK_FIELDS) and task_data["inputData"] == {"action": "validate"}
    running = foreman.update_task(task["id"], {"status": "running"})
    assert running["status"] == "running"
    result = {"valid": True}
    completed = foreman.update_task(task["id"], {"status": "completed", "outputData": result})
    assert has_fields(completed, TASK_FIELDS)
    assert completed["status"] == "completed" and completed["outputData"] == result

    # -- Sharing Data Between Tasks
    run_id = foreman.create_run({"inputData": {"customerId": "123"}})["id"]
    task_a = foreman.create_task({"runId": run_id, "type": "task-a", "inputData": {}})
    task_b = foreman.create_task({"runId": run_id, "type": "task-b", "inputData": {}})
    customer = {"customerId": "123", "email": "user@example.com"}
    stored = foreman.create_run_data(
        run_id,
        {
            "taskId": task_a["id"],
            "key": "customer-data",
            "value": customer,
            "tags": ["validated", "v1.0"],
        },
    )
    assert has_fields(stored, RUN_DATA_FIELDS) and stored["tags"] == ["validated", "v1.0"]
    newer = {**customer, "email": "new@example.com"}
    foreman.create_run_data(
        run_id, {"taskId": task_b["id"], "key": "customer-data", "value": newer, "tags": ["v2.0"]}
    )

    # getRunData(runId, 'customer-data'): the latest value of the key
    data = foreman.query_run_data(run_id, {"key": "customer-data"})
    assert is_page(data, RUN_DATA_FIELDS)
    assert [entry["value"] for entry in data["data"]] == [newer]
    # getAllRunData(runId, 'customer-data'): every value, in the client's own spelling
    all_data = foreman.query_run_data(
        run_id, {"key": "customer-data", "includeAll": True, "sortBy": "created_at"}
    )
    assert is_page(all_data, RUN_DATA_FIELDS)
    assert [entry["value"] for entry in all_data["data"]] == [newer, customer]  # newest first
    # queryRunDataByTags(runId, {tags: ['validated'], tagMode: 'any'})
    tagged = foreman.query_run_data(run_id, {"tags": ["validated"], "tagMode": "any"})
    assert is_page(tagged, RUN_DATA_FIELDS)
    assert [entry["id"] for entry in tagged["data"]] == [stored["id"]]
    # queryRunData(runId, {keyStartsWith: ['customer-'], tags: ['v1.0']})
    results = foreman.query_run_data(run_id, {"keyStartsWith": ["customer-"], "tags": ["v1.0"]})
    assert is_page(results, RUN_DATA_FIELDS)
    assert [entry["id"] for entry in results["data"]] == [stored["id"]]

    # -- Error Handling: a failed call's body has the `error` the client reports
    failed = foreman.send("POST", "/tasks", {"type": "process-order", "inputData": {}})
    assert failed.status_code == 400 and "runId" in failed.json()["error"]

    assert [status for _, _, status in foreman.calls] == [
        201, 201, 200, 200, 200, 201, 201, 201, 201, 201, 200, 200, 200, 200, 400,
    ]  # fmt: skip


def test_the_published_clients_list_calls(api: Api) -> None:
    """Its other list calls, spelled as its README and API reference spell them."""
    foreman = SeedClient(api, api.key("*"))
    run = foreman.create_run({"inputData": {"workflowType": "order-processing"}})
    task = foreman.create_task({"runId": run["id"], "type": "validate-order", "inputData": {}})
    foreman.create_run_data(
        run["id"],
        {"taskId": task["id"], "key": "order-validation", "value": {"valid": True},
         "tags": ["validation", "order"]},
    )  # fmt: skip
    runs = foreman.list_runs(
        {"limit": 20, "offset": 0, "status": "pending", "sortBy": "created_at", "sortOrder": "desc"}
    )
    assert is_page(runs, RUN_FIELDS) and [r["id"] for r in runs["data"]] == [run["id"]]
    tasks = foreman.list_tasks(
        {"limit": 20, "offset": 0, "runId": run["id"], "status": "pending",
         "sortBy": "created_at", "sortOrder": "desc"}
    )  # fmt: skip
    assert is_page(tasks, TASK_FIELDS) and [t["id"] for t in tasks["data"]] == [task["id"]]
    results = foreman.query_run_data(
        run["id"], {"tags": ["validation"], "sortBy": "created_at", "sortOrder": "desc"}
    )
    assert is_page(results, RUN_DATA_FIELDS) and results["pagination"]["total"] == 1


def test_query_strings_are_built_as_the_client_builds_them() -> None:
    assert build_query_string({"tags": ["validated", "v1.0"], "tagMode": "any"}) == (
        "?tags=validated%2Cv1.0&tagMode=any"
    )
    assert build_query_string({"key": "a b~é", "includeAll": True, "offset": None}) == (
        "?key=a+b%7E%C3%A9&includeAll=true"
    )
    assert build_query_string({}) == ""


# ---- sortBy: both spellings, wherever a list takes it ----------------------------------


def _listed_ids(api: Api, auth: dict[str, str], path: str, query: str) -> list[str]:
    response = api.client.get(f"/api/v1{path}?{query}", headers=auth)
    assert response.status_code == 200, response.text
    return [item["id"] for item in response.json()["data"]]


@pytest.mark.parametrize(
    ("value", "alias"),
    [("createdAt", "created_at"), ("updatedAt", "updated_at")],
)
def test_sort_by_spellings_order_alike(
    api: Api, auth: dict[str, str], value: str, alias: str
) -> None:
    run_ids = [api.client.post("/api/v1/runs", json={"inputData": i}, headers=auth).json()["id"]
               for i in range(3)]  # fmt: skip
    task_ids = [
        api.client.post(
            "/api/v1/tasks", json={"runId": run_ids[0], "type": "t"}, headers=auth
        ).json()["id"]
        for _ in range(3)
    ]
    for key in ("a", "b", "a"):
        api.client.post(
            f"/api/v1/runs/{run_ids[0]}/data", json={"key": key, "value": 1}, headers=auth
        )
    # the first task and run touched last: updatedAt orders differently from createdAt
    api.client.patch(f"/api/v1/tasks/{task_ids[0]}", json={"status": "queued"}, headers=auth)
    data_path = f"/runs/{run_ids[0]}/data"
    for path, extra in (("/runs", ""), ("/tasks", f"&runId={run_ids[0]}"), (data_path, "")):
        extra += "&includeAll=true" if path == data_path else ""
        for order in ("asc", "desc"):
            expected = _listed_ids(api, auth, path, f"sortBy={value}&sortOrder={order}{extra}")
            assert len(expected) == 3
            aliased = _listed_ids(api, auth, path, f"sortBy={alias}&sortOrder={order}{extra}")
            assert aliased == expected, (path, order)


def test_sort_by_keeps_rejecting_other_values(api: Api, auth: dict[str, str]) -> None:
    run_id = api.client.post("/api/v1/runs", json={"inputData": 1}, headers=auth).json()["id"]
    cases = {
        "/runs?sortBy=key": "'createdAt', 'updatedAt', 'created_at' or 'updated_at'",
        "/tasks?sortBy=CreatedAt": "'createdAt', 'updatedAt', 'created_at' or 'updated_at'",
        f"/runs/{run_id}/data?sortBy=created": (
            "'createdAt', 'updatedAt', 'key', 'created_at' or 'updated_at'"
        ),
    }
    for path, expected in cases.items():
        response = api.client.get(f"/api/v1{path}", headers=auth)
        assert response.status_code == 400, path
        body = response.json()
        assert body["code"] == "invalid_request"
        assert body["details"] == [{"field": "sortBy", "message": f"Input should be {expected}"}]


def test_openapi_lists_every_sort_by_spelling(api: Api) -> None:
    document = api.client.get("/openapi.json").json()
    expected = {
        "/api/v1/runs": ["createdAt", "updatedAt", "created_at", "updated_at"],
        "/api/v1/tasks": ["createdAt", "updatedAt", "created_at", "updated_at"],
        "/api/v1/runs/{runId}/data": ["createdAt", "updatedAt", "key", "created_at", "updated_at"],
    }
    listed = {}
    for path, item in document["paths"].items():
        for parameter in item.get("get", {}).get("parameters", []):
            if parameter["name"] == "sortBy":
                listed[path] = parameter["schema"]["enum"]
                assert parameter["schema"]["default"] == "createdAt"
                assert "created_at" in parameter["description"]
    assert listed == expected
