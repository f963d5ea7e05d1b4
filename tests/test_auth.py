"""The auth matrix: 401s with distinct codes, every permission gate, organisations isolated."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from foreman_api.auth import generate_key, hash_key
from foreman_api.schemas import Permission
from foreman_api.storage import api_keys as key_storage
from foreman_api.storage.tables import api_keys
from tests.conftest import Api

RUNS = "/api/v1/runs"
TASKS = "/api/v1/tasks"
WORKERS = "/api/v1/workers"


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    """With ``{run}``, ``{task}``, ``{claimed}``, ``{data}`` placeholders for the ids of a
    fixture world."""
    permission: Permission
    body: dict[str, Any] | None = None
    params: dict[str, str] | None = None

    @property
    def id(self) -> str:
        return f"{self.method} {self.path}"


ROUTES = [
    Route("POST", RUNS, Permission.RUNS_CREATE, {"inputData": {"n": 1}}),
    Route("GET", RUNS, Permission.RUNS_READ),
    Route("GET", RUNS + "/{run}", Permission.RUNS_READ),
    Route("PATCH", RUNS + "/{run}", Permission.RUNS_UPDATE, {"metadata": {"x": 1}}),
    Route("POST", TASKS, Permission.TASKS_CREATE, {"runId": "{run}", "type": "t"}),
    Route("GET", TASKS, Permission.TASKS_READ),
    Route("GET", TASKS + "/{task}", Permission.TASKS_READ),
    Route("PATCH", TASKS + "/{task}", Permission.TASKS_UPDATE, {"metadata": {"x": 1}}),
    Route(
        "POST",
        TASKS + "/{claimed}/heartbeat",
        Permission.TASKS_UPDATE,
        {"queueJobId": "job-w", "leaseSeconds": 30},
    ),
    Route("GET", TASKS + "/{claimed}/attempts", Permission.TASKS_READ),
    Route("POST", TASKS + "/{task}/retry", Permission.TASKS_UPDATE, {}),
    Route("POST", TASKS + "/retry", Permission.TASKS_UPDATE, {"runId": "{run}"}),
    Route("POST", RUNS + "/{run}/retry", Permission.TASKS_UPDATE),
    Route("POST", "/api/v1/reconcile", Permission.TASKS_UPDATE, {}),
    Route("PUT", WORKERS + "/{worker}", Permission.TASKS_UPDATE, {"queues": ["q"], "handlers": []}),
    Route("GET", WORKERS, Permission.TASKS_READ),
    Route("GET", "/api/v1/queues", Permission.TASKS_READ),
    Route("DELETE", WORKERS + "/{worker}", Permission.TASKS_UPDATE),
    Route("POST", RUNS + "/{run}/data", Permission.RUNDATA_WRITE, {"key": "k", "value": 1}),
    Route("GET", RUNS + "/{run}/data", Permission.RUNDATA_READ),
    Route("PATCH", RUNS + "/{run}/data/{data}/tags", Permission.RUNDATA_WRITE, {"add": ["t2"]}),
    Route("DELETE", RUNS + "/{run}/data", Permission.RUNDATA_DELETE, params={"key": "k"}),
]
ROUTE_IDS = [route.id for route in ROUTES]

SPECIFIC = [p for p in Permission if not p.value.endswith("*")]


@dataclass
class World:
    """One run with a task, a task claimed by job ``job-w`` and a run-data entry, in
    organisation ``org-a``."""

    run: str
    task: str
    claimed: str
    data: str
    worker: str = "worker-1"

    def fill(self, value: Any) -> Any:
        if isinstance(value, str):
            for name in ("run", "task", "claimed", "data", "worker"):
                value = value.replace("{" + name + "}", getattr(self, name))
            return value
        if isinstance(value, dict):
            return {k: self.fill(v) for k, v in value.items()}
        return value

    def call(self, api: Api, route: Route, headers: dict[str, str]) -> Any:
        return api.client.request(
            route.method,
            self.fill(route.path),
            headers=headers,
            json=self.fill(route.body),
            params=route.params,
        )


def build_world(api: Api, headers: dict[str, str]) -> World:
    run = api.client.post(RUNS, headers=headers, json={"inputData": {"a": 1}})
    assert run.status_code == 201, run.text
    run_id = run.json()["id"]
    task = api.client.post(TASKS, headers=headers, json={"runId": run_id, "type": "t"})
    assert task.status_code == 201, task.text
    data = api.client.post(
        f"{RUNS}/{run_id}/data", headers=headers, json={"key": "k", "value": 1, "tags": ["t1"]}
    )
    assert data.status_code == 201, data.text
    claimed = api.client.post(TASKS, headers=headers, json={"runId": run_id, "type": "t"})
    claim = {"status": "running", "queueJobId": "job-w", "leaseSeconds": 600}
    claimed_id = claimed.json()["id"]
    assert api.client.patch(f"{TASKS}/{claimed_id}", headers=headers, json=claim).is_success
    return World(run=run_id, task=task.json()["id"], claimed=claimed_id, data=data.json()["id"])


def snapshot(api: Api, world: World, headers: dict[str, str]) -> Any:
    """Everything the world holds, to compare before and after a refused request."""
    runs = api.client.get(RUNS, headers=headers).json()
    tasks = api.client.get(TASKS, headers=headers).json()
    data = api.client.get(
        f"{RUNS}/{world.run}/data", headers=headers, params={"includeAll": "true"}
    ).json()
    return runs, tasks, data


@pytest.fixture
def world(api: Api, auth: dict[str, str]) -> World:
    return build_world(api, auth)


def _template(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "{}", path)


def test_route_table_covers_every_api_route(api: Api) -> None:
    """A new route must be added to ROUTES, so its permission gate is tested."""
    document = api.client.get("/openapi.json").json()
    served = {
        (method.upper(), _template(path))
        for path, operations in document["paths"].items()
        if path.startswith("/api/v1")
        for method in operations
    }
    assert served == {(r.method, _template(r.path)) for r in ROUTES}


# ---- 401 ---------------------------------------------------------------------------------


def test_auth_failures_have_distinct_codes(api: Api) -> None:
    revoked = api.key("*")
    record = key_storage.find_by_hash(api.engine, hash_key(revoked))
    assert record is not None
    assert key_storage.revoke_key(api.engine, record.id)
    expired = api.key("*", expires_at=datetime.now(UTC) - timedelta(seconds=1))
    unknown = generate_key("dev").secret

    cases = {
        "missing_api_key": {},
        "malformed_authorization": {"Authorization": "Basic dXNlcjpwYXNz"},
        "malformed_api_key": {"Authorization": "Bearer not-a-foreman-key"},
        "invalid_api_key": {"Authorization": f"Bearer {unknown}"},
        "key_revoked": {"Authorization": f"Bearer {revoked}"},
        "key_expired": {"x-api-key": expired},
    }
    for code, headers in cases.items():
        response = api.client.get(RUNS, headers=headers)
        assert response.status_code == 401, (code, response.text)
        body = response.json()
        assert body["code"] == code
        assert body["error"]
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
        assert "RateLimit-Limit" not in response.headers
    # The secret of a real key never appears in an answer about it.
    assert revoked not in api.client.get(RUNS, headers=cases["key_revoked"]).text


def test_empty_bearer_is_malformed(api: Api) -> None:
    for value in ("Bearer", "Bearer ", "bearer    "):
        response = api.client.get(RUNS, headers={"Authorization": value})
        assert response.status_code == 401
        assert response.json()["code"] == "malformed_authorization"


def test_key_that_expires_later_works(api: Api) -> None:
    key = api.key("*", expires_at=datetime.now(UTC) + timedelta(hours=1))
    assert api.client.get(RUNS, headers={"x-api-key": key}).status_code == 200


def test_bearer_and_x_api_key_both_work(api: Api) -> None:
    key = api.key("runs:read")
    for headers in (
        {"Authorization": f"Bearer {key}"},
        {"Authorization": f"bearer {key}"},
        {"x-api-key": key},
        # A broken Authorization header does not hide a good x-api-key.
        {"Authorization": "Basic Zm9v", "x-api-key": key},
    ):
        response = api.client.get(RUNS, headers=headers)
        assert response.status_code == 200, (headers, response.text)


def test_health_needs_no_key(api: Api) -> None:
    assert api.client.get("/health").status_code == 200


def test_failed_authentications_are_limited_per_address(make_api: Callable[..., Api]) -> None:
    api = make_api(auth_failure_limit="5/1m")
    good = api.headers("*")
    bad = {"Authorization": f"Bearer {generate_key('dev').secret}"}
    codes = [api.client.get(RUNS, headers=bad).status_code for _ in range(5)]
    assert codes == [401] * 5
    refused = api.client.get(RUNS, headers=bad)
    assert refused.status_code == 429
    assert refused.json()["code"] == "rate_limited"
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    # Guessing without any key counts too.
    assert api.client.get(RUNS).status_code == 429
    # A caller with a valid key is not locked out by someone else's guessing.
    assert api.client.get(RUNS, headers=good).status_code == 200


# ---- 403 ---------------------------------------------------------------------------------


def _lacking(permission: Permission) -> list[str]:
    """Every specific permission except ``permission``: the strongest key that lacks it."""
    return [p.value for p in SPECIFIC if p is not permission]


@pytest.mark.parametrize("route", ROUTES, ids=ROUTE_IDS)
def test_permission_gate(api: Api, auth: dict[str, str], world: World, route: Route) -> None:
    before = snapshot(api, world, auth)
    resource = route.permission.value.split(":")[0]
    other_wildcards = [f"{r}:*" for r in ("runs", "tasks", "rundata") if r != resource]

    for permissions in (_lacking(route.permission), other_wildcards):
        refused = world.call(api, route, api.headers(permissions))
        assert refused.status_code == 403, (permissions, refused.text)
        body = refused.json()
        assert body["code"] == "forbidden"
        assert route.permission.value in body["error"]
        assert snapshot(api, world, auth) == before

    for permissions in ([route.permission.value], [f"{resource}:*"], ["*"]):
        allowed = world.call(api, route, api.headers(permissions))
        assert allowed.status_code in (200, 201), (permissions, allowed.text)


def test_permission_checked_before_existence(api: Api) -> None:
    """A key without the permission learns nothing about which ids exist."""
    headers = api.headers("tasks:read")
    response = api.client.get(f"{RUNS}/{uuid.uuid4()}", headers=headers)
    assert response.status_code == 403


# ---- organisations -----------------------------------------------------------------------


SCOPED = [r for r in ROUTES if "{run}" in r.path or "{run}" in str(r.body) or "{claimed}" in r.path]


@pytest.mark.parametrize("route", SCOPED, ids=[r.id for r in SCOPED])
def test_another_organisations_ids_are_404(
    api: Api, auth: dict[str, str], world: World, route: Route
) -> None:
    before = snapshot(api, world, auth)
    outsider = api.headers("*", org="org-b")
    response = world.call(api, route, outsider)
    assert response.status_code == 404, response.text
    assert response.json()["code"] == "not_found"
    assert snapshot(api, world, auth) == before
    # Exactly as for an id that exists nowhere.
    nowhere = World(
        run=str(uuid.uuid4()),
        task=str(uuid.uuid4()),
        claimed=str(uuid.uuid4()),
        data=str(uuid.uuid4()),
    )
    unknown = nowhere.call(api, route, outsider)
    assert unknown.status_code == 404
    anonymised = response.text
    for real, fake in (
        (world.run, nowhere.run),
        (world.task, nowhere.task),
        (world.data, nowhere.data),
        (world.claimed, nowhere.claimed),
    ):
        anonymised = anonymised.replace(real, fake)
    assert anonymised == unknown.text


def test_lists_show_only_the_callers_organisation(
    api: Api, auth: dict[str, str], world: World
) -> None:
    outsider = api.headers("*", org="org-b")
    for path, mine in ((RUNS, 1), (TASKS, 2)):
        page = api.client.get(path, headers=outsider).json()
        assert page["data"] == []
        assert page["pagination"]["total"] == 0
        assert api.client.get(path, headers=auth).json()["pagination"]["total"] == mine
    filtered = api.client.get(TASKS, headers=outsider, params={"runId": world.run})
    assert filtered.status_code in (200, 404)
    if filtered.status_code == 200:
        assert filtered.json()["data"] == []


def test_data_written_by_another_organisation_stays_apart(
    api: Api, auth: dict[str, str], world: World
) -> None:
    outsider = api.headers("*", org="org-b")
    their_world = build_world(api, outsider)
    mine = api.client.get(RUNS, headers=auth).json()["data"]
    assert [run["id"] for run in mine] == [world.run]
    assert all(run["orgId"] == "org-a" for run in mine)
    theirs = api.client.get(f"{RUNS}/{their_world.run}", headers=outsider).json()
    assert theirs["orgId"] == "org-b"
    # A task of one organisation cannot be attached to a run of another.
    response = api.client.post(
        TASKS,
        headers=outsider,
        json={"runId": their_world.run, "type": "t", "parentTaskId": world.task},
    )
    assert response.status_code in (400, 404), response.text


def test_last_used_is_recorded_once_per_minute_without_a_write_per_request(api: Api) -> None:
    key = api.key("runs:read")
    with api.engine.connect() as conn:
        before = conn.execute(sa.select(api_keys.c.last_used_at)).scalars().all()
    assert before == [None]
    headers = {"Authorization": f"Bearer {key}"}
    for _ in range(3):
        assert api.client.get("/api/v1/runs", headers=headers).status_code == 200
    with api.engine.connect() as conn:
        first = conn.execute(sa.select(api_keys.c.last_used_at)).scalar_one()
    assert first is not None
    for _ in range(3):
        assert api.client.get("/api/v1/runs", headers=headers).status_code == 200
    with api.engine.connect() as conn:
        again = conn.execute(sa.select(api_keys.c.last_used_at)).scalar_one()
    assert again == first  # within the minute: no further writes


def test_last_used_is_refreshed_while_the_key_lookup_is_cached(
    make_api: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("foreman_api.auth.LAST_USED_RESOLUTION", timedelta(milliseconds=50))
    api = make_api(key_cache_seconds=60)  # every request after the first is a cache hit
    headers = {"Authorization": f"Bearer {api.key('runs:read')}"}
    stamps = []
    for _ in range(2):
        assert api.client.get("/api/v1/runs", headers=headers).status_code == 200
        with api.engine.connect() as conn:
            stamps.append(conn.execute(sa.select(api_keys.c.last_used_at)).scalar_one())
        time.sleep(0.12)
    assert stamps[0] is not None
    assert stamps[1] > stamps[0]
