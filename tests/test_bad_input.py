"""Bad input is a 4xx with the error body, never a 500, and never changes stored data."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import sqlalchemy as sa

from foreman_api.storage.tables import run_data, runs, tasks
from tests.conftest import Api
from tests.test_auth import RUNS, TASKS, World, build_world

NOT_UUID = "not-a-uuid"


@dataclass(frozen=True)
class Case:
    id: str
    method: str
    path: str
    """May name ``{run}``, ``{task}``, ``{data}`` of the fixture world."""
    status: int = 400
    body: Any = None
    """A ``str`` or ``bytes`` is sent raw as JSON; anything else is JSON-encoded."""
    params: dict[str, Any] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)


def _nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def _nested_object(depth: int) -> str:
    return '{"a":' * depth + "1" + "}" * depth


RUN = RUNS + "/{run}"
TASK = TASKS + "/{task}"
DATA = RUNS + "/{run}/data"
TAGS = DATA + "/{data}/tags"

CASES = [
    # -- malformed JSON and wrong shapes
    Case("truncated-json", "POST", RUNS, body='{"inputData": '),
    Case("trailing-garbage", "POST", RUNS, body='{"inputData": 1} x'),
    Case("empty-body", "POST", RUNS, body=""),
    Case("json-array-body", "POST", RUNS, body="[]"),
    Case("json-string-body", "POST", RUNS, body='"run"'),
    Case("json-null-body", "POST", RUNS, body="null"),
    Case("not-utf8", "POST", RUNS, body=b'{"inputData": "\xff\xfe"}'),
    Case("text-plain", "POST", RUNS, body='{"inputData": 1}',
         headers={"content-type": "text/plain"}),
    Case("missing-required", "POST", RUNS, body={}),
    Case("unknown-field", "POST", RUNS, body={"inputData": 1, "inputdata": 2}),
    Case("unknown-field-patch-run", "PATCH", RUN, body={"outputdata": 1}),
    Case("unknown-field-task", "POST", TASKS, body={"runId": "{run}", "type": "t", "x": 1}),
    Case("unknown-field-patch-task", "PATCH", TASK, body={"state": "running"}),
    Case("unknown-field-data", "POST", DATA, body={"key": "k", "value": 1, "tag": ["a"]}),
    Case("unknown-field-tags", "PATCH", TAGS, body={"add": [], "delete": ["t1"]}),
    # -- wrong types and out-of-range values
    Case("metadata-not-object", "POST", RUNS, body={"inputData": 1, "metadata": [1]}),
    Case("task-run-id-not-uuid", "POST", TASKS, body={"runId": NOT_UUID, "type": "t"}),
    Case("task-type-number", "POST", TASKS, body={"runId": "{run}", "type": 5}),
    Case("task-type-empty", "POST", TASKS, body={"runId": "{run}", "type": ""}),
    Case("task-type-huge", "POST", TASKS, body={"runId": "{run}", "type": "t" * 100_000}),
    Case("max-retries-string", "POST", TASKS,
         body={"runId": "{run}", "type": "t", "maxRetries": "three"}),
    Case("max-retries-11", "POST", TASKS, body={"runId": "{run}", "type": "t", "maxRetries": 11}),
    Case("max-retries-negative", "POST", TASKS,
         body={"runId": "{run}", "type": "t", "maxRetries": -1}),
    Case("max-retries-fraction", "POST", TASKS,
         body={"runId": "{run}", "type": "t", "maxRetries": 1.5}),
    Case("max-retries-huge", "POST", TASKS,
         body={"runId": "{run}", "type": "t", "maxRetries": 10**30}),
    Case("parent-not-uuid", "POST", TASKS,
         body={"runId": "{run}", "type": "t", "parentTaskId": NOT_UUID}),
    Case("run-status-unknown", "PATCH", RUN, body={"status": "finished"}),
    Case("task-status-unknown", "PATCH", TASK, body={"status": "done"}),
    Case("task-status-number", "PATCH", TASK, body={"status": 3}),
    Case("queue-job-id-empty", "PATCH", TASK, body={"queueJobId": ""}),
    Case("queue-job-id-huge", "PATCH", TASK, body={"queueJobId": "j" * 10_000}),
    Case("data-key-empty", "POST", DATA, body={"key": "", "value": 1}),
    Case("data-key-256", "POST", DATA, body={"key": "k" * 256, "value": 1}),
    Case("data-key-number", "POST", DATA, body={"key": 7, "value": 1}),
    Case("data-value-missing", "POST", DATA, body={"key": "k"}),
    Case("data-tags-string", "POST", DATA, body={"key": "k", "value": 1, "tags": "a,b"}),
    Case("data-tags-too-many", "POST", DATA,
         body={"key": "k", "value": 1, "tags": [f"t{n}" for n in range(101)]}),
    Case("data-tag-huge", "POST", DATA, body={"key": "k", "value": 1, "tags": ["t" * 10_000]}),
    Case("data-task-id-not-uuid", "POST", DATA, body={"key": "k", "value": 1, "taskId": "x"}),
    Case("tags-add-not-list", "PATCH", TAGS, body={"add": "t2"}),
    # -- NaN, Infinity and numbers JSON cannot carry
    Case("nan", "POST", RUNS, body='{"inputData": NaN}'),
    Case("infinity", "POST", RUNS, body='{"inputData": {"x": Infinity}}'),
    Case("minus-infinity", "POST", RUNS, body='{"inputData": [-Infinity]}'),
    Case("overflowing-float", "POST", RUNS, body='{"inputData": 1e400}'),
    Case("nan-metadata", "POST", RUNS, body='{"inputData": 1, "metadata": {"x": NaN}}'),
    Case("nan-max-retries", "POST", TASKS,
         body='{"runId": "{run}", "type": "t", "maxRetries": NaN}'),
    Case("nan-data-value", "POST", DATA, body='{"key": "k", "value": NaN}'),
    Case("nan-output", "PATCH", TASK, body='{"outputData": NaN}'),
    Case("integer-too-long", "POST", RUNS, body='{"inputData": ' + "9" * 5000 + "}"),
    # -- NUL characters and lone surrogates (PostgreSQL cannot store NUL)
    Case("nul-input", "POST", RUNS, body={"inputData": "a\x00b"}),
    Case("nul-object-key", "POST", RUNS, body={"inputData": {"a\x00": 1}}),
    Case("nul-metadata", "POST", RUNS, body={"inputData": 1, "metadata": {"m": ["\x00"]}}),
    Case("nul-run-output", "PATCH", RUN, body={"outputData": {"x": "\x00"}}),
    Case("nul-task-type", "POST", TASKS, body={"runId": "{run}", "type": "t\x00"}),
    Case("nul-task-error", "PATCH", TASK, body={"errorData": "\x00"}),
    Case("nul-queue-job-id", "PATCH", TASK, body={"queueJobId": "\x00"}),
    Case("nul-data-key", "POST", DATA, body={"key": "k\x00", "value": 1}),
    Case("nul-data-value", "POST", DATA, body={"key": "k", "value": ["\x00"]}),
    Case("nul-data-tag", "POST", DATA, body={"key": "k", "value": 1, "tags": ["\x00"]}),
    Case("nul-tags-add", "PATCH", TAGS, body={"add": ["a\x00"]}),
    Case("surrogate-input", "POST", RUNS, body='{"inputData": "\\ud800"}'),
    Case("surrogate-object-key", "POST", RUNS, body='{"inputData": {"\\udc00": 1}}'),
    Case("surrogate-task-type", "POST", TASKS, body='{"runId": "{run}", "type": "\\udfff"}'),
    Case("surrogate-data-key", "POST", DATA, body='{"key": "\\ud83d", "value": 1}'),
    Case("surrogate-tag", "POST", DATA, body='{"key": "k", "value": 1, "tags": ["\\ud800"]}'),
    # -- deep nesting
    Case("nested-10000-arrays", "POST", RUNS, body='{"inputData": ' + _nested(10_000) + "}"),
    Case("nested-10000-objects", "POST", RUNS,
         body='{"inputData": ' + _nested_object(10_000) + "}"),
    Case("nested-100k-body", "POST", RUNS, body=_nested(100_000)),
    Case("nested-100", "POST", RUNS, body='{"inputData": ' + _nested(100) + "}"),
    Case("nested-metadata", "POST", RUNS,
         body='{"inputData": 1, "metadata": {"m": ' + _nested(500) + "}}"),
    Case("nested-data-value", "POST", DATA, body='{"key": "k", "value": ' + _nested(5000) + "}"),
    Case("nested-task-output", "PATCH", TASK, body='{"outputData": ' + _nested(5000) + "}"),
    # -- pagination, sorting and filters
    *[
        Case(f"{name}-{param}-{value}", "GET", path, params={param: value})
        for name, path in (("runs", RUNS), ("tasks", TASKS), ("data", DATA))
        for param, value in (
            ("limit", 0), ("limit", 1001), ("limit", -1), ("limit", "ten"), ("limit", 10**30),
            ("offset", -1), ("offset", "x"), ("offset", 10**30), ("offset", 2**63),
            ("sortBy", "id; DROP TABLE runs"), ("sortOrder", "sideways"),
        )
    ],
    Case("runs-status-unknown", "GET", RUNS, params={"status": "done"}),
    Case("tasks-status-unknown", "GET", TASKS, params={"status": "done"}),
    Case("tasks-run-id-not-uuid", "GET", TASKS, params={"runId": NOT_UUID}),
    Case("tasks-parent-not-uuid", "GET", TASKS, params={"parentTaskId": NOT_UUID}),
    Case("tasks-type-nul", "GET", TASKS, params={"type": "a\x00"}),
    Case("data-tag-mode", "GET", DATA, params={"tagMode": "some"}),
    Case("data-include-all", "GET", DATA, params={"includeAll": "perhaps"}),
    *[
        Case(f"data-{param}-nul", "GET", DATA, params={param: "k\x00"})
        for param in ("key", "keys", "keyStartsWith", "keyPattern", "tags", "tagStartsWith")
    ],
    Case("data-key-huge", "GET", DATA, params={"keyStartsWith": "k" * 5000}),
    # -- ids that are not UUIDs
    Case("run-id", "GET", RUNS + "/" + NOT_UUID),
    Case("run-id-patch", "PATCH", RUNS + "/" + NOT_UUID, body={"metadata": {}}),
    Case("run-id-sqlish", "GET", RUNS + "/1%20OR%201=1"),
    Case("task-id", "GET", TASKS + "/" + NOT_UUID),
    Case("task-id-patch", "PATCH", TASKS + "/12345", body={"status": "running"}),
    Case("data-run-id", "GET", RUNS + "/" + NOT_UUID + "/data"),
    Case("data-post-run-id", "POST", RUNS + "/" + NOT_UUID + "/data",
         body={"key": "k", "value": 1}),
    Case("data-entry-id", "PATCH", DATA + "/" + NOT_UUID + "/tags", body={"add": ["x"]}),
    Case("data-delete-id", "DELETE", DATA, params={"id": NOT_UUID}),
    Case("data-delete-nothing", "DELETE", DATA),
    Case("data-delete-both", "DELETE", DATA, params={"id": "{data}", "key": "k"}),
    Case("data-delete-empty-key", "DELETE", DATA, params={"key": ""}),
    Case("data-delete-nul-key", "DELETE", DATA, params={"key": "\x00"}),
    # -- bodies over the limit
    Case("body-over-limit", "POST", RUNS, status=413,
         body={"inputData": "x" * (1024 * 1024 + 1)}),
    Case("data-over-limit", "POST", DATA, status=413,
         body={"key": "k", "value": ["y" * 1000] * 1100}),
    # -- methods
    Case("method-not-allowed", "PUT", RUN, status=405, body={"inputData": 1}),
    Case("delete-run", "DELETE", RUN, status=405),
]


def count_rows(api: Api) -> dict[str, int]:
    with api.engine.connect() as conn:
        return {
            table.name: conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()
            for table in (runs, tasks, run_data)
        }


def everything(api: Api, world: World, headers: dict[str, str]) -> Any:
    """Row counts and the world's objects as the API returns them."""
    return (
        count_rows(api),
        api.client.get(f"{RUNS}/{world.run}", headers=headers).json(),
        api.client.get(f"{TASKS}/{world.task}", headers=headers).json(),
        api.client.get(
            f"{RUNS}/{world.run}/data", headers=headers, params={"includeAll": "true"}
        ).json(),
    )


def send(api: Api, world: World, case: Case, headers: dict[str, str]) -> Any:
    body = case.body
    content: bytes | None = None
    if isinstance(body, str):
        content = world.fill(body).encode()
    elif isinstance(body, bytes):
        content = body
    elif body is not None:
        content = json.dumps(world.fill(body)).encode()
    request_headers = {"content-type": "application/json", **headers, **case.headers}
    return api.client.request(
        case.method,
        world.fill(case.path),
        content=content,
        params={k: world.fill(v) if isinstance(v, str) else v for k, v in case.params.items()},
        headers=request_headers,
    )


@pytest.fixture
def world(api: Api, auth: dict[str, str]) -> World:
    return build_world(api, auth)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_refused_and_changes_nothing(
    api: Api, auth: dict[str, str], world: World, case: Case
) -> None:
    before = everything(api, world, auth)
    response = send(api, world, case, auth)
    assert response.status_code == case.status, response.text[:500]
    body = response.json()
    assert set(body) == {"error", "code", "details"}
    assert isinstance(body["error"], str) and body["error"]
    assert "Traceback" not in body["error"] and "sqlalchemy" not in response.text.lower()
    assert everything(api, world, auth) == before


def test_valid_edge_values_are_stored_exactly(api: Api, auth: dict[str, str]) -> None:
    """What is just inside the limits round-trips unchanged."""
    edge = {
        "deep": json.loads(_nested(60)),
        "big": 10**30,
        "small": -(10**18),
        "float": 1.5,
        "tiny": 1e-7,
        "unicode": "é ☃ 😀 \u200b \\ % _ ' \"",
        "empty": {"": [None, True, False, 0, ""]},
    }
    created = api.client.post(RUNS, headers=auth, json={"inputData": edge, "metadata": {}})
    assert created.status_code == 201, created.text
    fetched = api.client.get(f"{RUNS}/{created.json()['id']}", headers=auth).json()
    assert fetched["inputData"] == edge


def test_huge_but_allowed_string_is_stored(api: Api, auth: dict[str, str]) -> None:
    text = "z" * (1024 * 1024 - 100)
    created = api.client.post(RUNS, headers=auth, json={"inputData": text})
    assert created.status_code == 201
    fetched = api.client.get(f"{RUNS}/{created.json()['id']}", headers=auth)
    assert fetched.json()["inputData"] == text


@pytest.fixture
def small_body_api(make_api: Callable[..., Api]) -> Api:
    return make_api(max_body_bytes=4096)


def test_streamed_body_over_the_limit_is_413(small_body_api: Api) -> None:
    """A chunked body (no Content-Length) is counted as it arrives."""
    api = small_body_api
    headers = api.headers("*")

    def chunks() -> Iterator[bytes]:
        yield b'{"inputData": "'
        for _ in range(10):
            yield b"x" * 1024
        yield b'"}'

    before = count_rows(api)
    response = api.client.post(
        RUNS, headers={**headers, "content-type": "application/json"}, content=chunks()
    )
    assert response.status_code == 413, response.text
    assert response.json()["code"] == "payload_too_large"
    assert count_rows(api) == before


def test_lying_content_length_is_413(small_body_api: Api) -> None:
    api = small_body_api
    response = api.client.post(
        RUNS,
        headers={**api.headers("*"), "content-type": "application/json",
                 "content-length": str(10**12)},
        content=b"{}",
    )
    assert response.status_code == 413
