"""Run data over HTTP on both backends: writes, every filter, latest-per-key, tags, deletes."""

from __future__ import annotations

import asyncio
import json
import threading
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import given, settings
from hypothesis import strategies as st

from foreman_api.db import Database, open_database
from foreman_api.domain.run_data_query import (
    InvalidFilter,
    build_query,
    glob_to_like,
    next_string,
)
from foreman_api.routes.run_data import ENTRY
from foreman_api.schemas import RunData
from foreman_api.storage import run_data as storage
from foreman_api.storage.tables import run_data, run_data_latest, run_data_tags
from tests.conftest import Api
from tests.test_wire import as_model, instants, json_values

BASE = "/api/v1"


# ---- helpers ----------------------------------------------------------------------------


def make_run(api: Api, *, org: str = "org-a") -> str:
    """A run of ``org``, created through the runs API."""
    response = api.client.post(
        f"{BASE}/runs", json={"inputData": {}}, headers=api.headers("runs:create", org=org)
    )
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def make_task(api: Api, run_id: str, *, org: str = "org-a") -> str:
    """A task of ``run_id``, created through the tasks API."""
    response = api.client.post(
        f"{BASE}/tasks",
        json={"runId": run_id, "type": "t"},
        headers=api.headers("tasks:create", org=org),
    )
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def put(api: Api, auth: dict[str, str], run_id: str, key: str, value: Any, **extra: Any) -> Any:
    response = api.client.post(
        f"{BASE}/runs/{run_id}/data", json={"key": key, "value": value, **extra}, headers=auth
    )
    assert response.status_code == 201, response.text
    return response.json()


def get(api: Api, auth: dict[str, str], run_id: str, params: Any = None) -> Any:
    response = api.client.get(f"{BASE}/runs/{run_id}/data", params=params, headers=auth)
    assert response.status_code == 200, response.text
    return response.json()


def keys_of(body: Any) -> list[str]:
    return [entry["key"] for entry in body["data"]]


def values_of(body: Any) -> list[Any]:
    return [entry["value"] for entry in body["data"]]


def stored_entries(api: Api) -> int:
    with api.engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(run_data)).scalar_one())


def latest_flags(api: Api, run_id: str) -> dict[str, list[Any]]:
    """For each key of the run: the values of the entries ``run_data_latest`` names."""
    with api.engine.connect() as conn:
        rows = conn.execute(
            sa.select(run_data.c.key, run_data.c.value, run_data_latest.c.seq)
            .select_from(run_data)
            .outerjoin(run_data_latest, run_data_latest.c.seq == run_data.c.seq)
            .where(run_data.c.run_id == uuid.UUID(run_id))
        ).all()
    flags: dict[str, list[Any]] = {}
    for key, value, latest_seq in rows:
        flags.setdefault(key, [])
        if latest_seq is not None:
            flags[key].append(value)
    return flags


# ---- the seed's workflow ----------------------------------------------------------------


def test_seed_workflow(api: Api, auth: dict[str, str]) -> None:
    run_id = make_run(api)
    task_id = make_task(api, run_id)
    first = put(
        api,
        auth,
        run_id,
        "customer-data",
        {"customerId": "123", "email": "user@example.com"},
        taskId=task_id,
        tags=["validated", "v1.0", "validated"],
        metadata={"source": "crm"},
    )
    assert first["tags"] == ["validated", "v1.0"]
    assert first["taskId"] == task_id
    assert first["runId"] == run_id
    assert first["orgId"] == "org-a"
    assert first["metadata"] == {"source": "crm"}
    assert first["createdAt"].endswith("Z")
    uuid.UUID(first["id"])
    put(api, auth, run_id, "customer-data", {"customerId": "123", "v": 2}, tags=["v2.0"])
    put(api, auth, run_id, "customer-prefs", {"lang": "en"}, tags=["v1.0"])
    put(api, auth, run_id, "order", 42, tags=["validated"])

    latest = get(api, auth, run_id, {"key": "customer-data"})
    assert values_of(latest) == [{"customerId": "123", "v": 2}]
    assert latest["pagination"] == {"total": 1, "limit": 100, "offset": 0}

    every = get(api, auth, run_id, {"key": "customer-data", "includeAll": "true"})
    assert [v.get("v", 1) for v in values_of(every)] == [2, 1]  # newest first
    assert every["pagination"]["total"] == 2

    any_tag = get(api, auth, run_id, {"tags": "validated,v2.0", "tagMode": "any"})
    assert sorted(keys_of(any_tag)) == ["customer-data", "order"]
    # customer-data's latest matching entry is the v2.0 one
    assert {"customerId": "123", "v": 2} in values_of(any_tag)

    all_tags = get(api, auth, run_id, {"tags": "validated,v1.0", "tagMode": "all"})
    assert values_of(all_tags) == [{"customerId": "123", "email": "user@example.com"}]

    prefix = get(api, auth, run_id, {"keyStartsWith": "customer-"})
    assert sorted(keys_of(prefix)) == ["customer-data", "customer-prefs"]
    prefix_tagged = get(api, auth, run_id, {"keyStartsWith": "customer-", "tags": "v1.0"})
    assert sorted(keys_of(prefix_tagged)) == ["customer-data", "customer-prefs"]
    assert {"customerId": "123", "email": "user@example.com"} in values_of(prefix_tagged)

    everything = get(api, auth, run_id)
    assert keys_of(everything) == ["order", "customer-prefs", "customer-data"]  # newest first


def test_latest_is_exact_within_one_millisecond(
    api: Api, auth: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    frozen = datetime(2026, 1, 1, tzinfo=UTC)
    monkeypatch.setattr(storage, "utcnow", lambda: frozen)
    run_id = make_run(api)
    for i in range(12):
        put(api, auth, run_id, "k", i, tags=["t"])
        put(api, auth, run_id, "other", -i)
    assert values_of(get(api, auth, run_id, {"key": "k"})) == [11]
    assert values_of(get(api, auth, run_id, {"tags": "t"})) == [11]
    assert values_of(get(api, auth, run_id, {"key": "k", "includeAll": True})) == list(
        range(11, -1, -1)
    )
    ascending = get(api, auth, run_id, {"key": "k", "includeAll": True, "sortOrder": "asc"})
    assert values_of(ascending) == list(range(12))
    assert latest_flags(api, run_id) == {"k": [11], "other": [-11]}


def test_latest_per_key_among_tag_matches(api: Api, auth: dict[str, str]) -> None:
    run_id = make_run(api)
    put(api, auth, run_id, "k", 1, tags=["x"])
    put(api, auth, run_id, "k", 2, tags=["x"])
    put(api, auth, run_id, "k", 3)
    assert values_of(get(api, auth, run_id, {"tags": "x"})) == [2]
    assert values_of(get(api, auth, run_id, {"tags": "x", "includeAll": 1})) == [2, 1]
    assert values_of(get(api, auth, run_id, {"key": "k"})) == [3]


# ---- filters ----------------------------------------------------------------------------

LITERAL_KEYS = ["ab", "a%", "a%b", "a_", "a_b", "a\\", "a\\b", "a*", "a*b", "aXb", "A%b"]


def test_prefix_and_pattern_match_literally(api: Api, auth: dict[str, str]) -> None:
    run_id = make_run(api)
    for key in LITERAL_KEYS:
        put(api, auth, run_id, key, key)

    def starts(prefix: str) -> list[str]:
        return sorted(keys_of(get(api, auth, run_id, {"keyStartsWith": prefix})))

    def pattern(glob: str) -> list[str]:
        return sorted(keys_of(get(api, auth, run_id, {"keyPattern": glob})))

    assert starts("a%") == ["a%", "a%b"]
    assert starts("a_") == ["a_", "a_b"]
    assert starts("a\\") == ["a\\", "a\\b"]
    assert starts("a*") == ["a*", "a*b"]
    assert starts("A") == ["A%b"]  # case-sensitive
    assert pattern("a%") == ["a%"]
    assert pattern("a%*") == ["a%", "a%b"]
    assert pattern("a_?") == ["a_b"]
    assert pattern("a\\?") == ["a\\b"]
    assert pattern("a?b") == sorted(["a%b", "a_b", "a\\b", "a*b", "aXb"])
    assert pattern("*b") == sorted(["ab", "a%b", "a_b", "a\\b", "a*b", "aXb", "A%b"])
    assert pattern("a*") == sorted(k for k in LITERAL_KEYS if k.startswith("a"))
    assert len(pattern("*")) == len(LITERAL_KEYS)
    assert pattern("?%?") == ["A%b", "a%b"]


def test_prefix_bounds_at_the_top_of_unicode(api: Api, auth: dict[str, str]) -> None:
    run_id = make_run(api)
    top = "\U0010ffff"
    for key in ["z" + top, "z" + top + "a", "z\ud7ff", "z\ue000", "{"]:
        put(api, auth, run_id, key, key)
    assert sorted(keys_of(get(api, auth, run_id, {"keyStartsWith": "z" + top}))) == [
        "z" + top,
        "z" + top + "a",
    ]
    assert keys_of(get(api, auth, run_id, {"keyStartsWith": "z\ud7ff"})) == ["z\ud7ff"]
    assert len(get(api, auth, run_id, {"keyStartsWith": "z"})["data"]) == 4


def test_key_filters_or_and_tags_and(api: Api, auth: dict[str, str]) -> None:
    run_id = make_run(api)
    put(api, auth, run_id, "alpha", 1, tags=["red"])
    put(api, auth, run_id, "beta", 2, tags=["blue"])
    put(api, auth, run_id, "gamma-1", 3, tags=["red", "blue"])
    put(api, auth, run_id, "delta", 4, tags=["red"])
    put(api, auth, run_id, "epsilon", 5, tags=["red"])
    params = {"key": "alpha", "keys": "beta", "keyStartsWith": "gam", "keyPattern": "d?lta"}
    assert sorted(keys_of(get(api, auth, run_id, params))) == [
        "alpha",
        "beta",
        "delta",
        "gamma-1",
    ]
    assert sorted(keys_of(get(api, auth, run_id, {**params, "tags": "red"}))) == [
        "alpha",
        "delta",
        "gamma-1",
    ]
    all_tags = {**params, "tags": "red,blue", "tagMode": "all"}
    assert keys_of(get(api, auth, run_id, all_tags)) == ["gamma-1"]
    assert keys_of(get(api, auth, run_id, {**params, "tags": "red", "tagStartsWith": "bl"})) == [
        "gamma-1"
    ]


def test_list_params_comma_or_repeated(api: Api, auth: dict[str, str]) -> None:
    run_id = make_run(api)
    for key in ["a", "b", "c", "x1", "y1"]:
        put(api, auth, run_id, key, key, tags=[f"tag-{key}"])
    comma = get(api, auth, run_id, {"keys": "a,b"})
    repeated = get(api, auth, run_id, [("keys", "a"), ("keys", "b")])
    assert sorted(keys_of(comma)) == sorted(keys_of(repeated)) == ["a", "b"]
    mixed = get(api, auth, run_id, [("keys", "a,b"), ("keys", "c"), ("keys", " a ")])
    assert sorted(keys_of(mixed)) == ["a", "b", "c"]
    prefixes = get(api, auth, run_id, [("keyStartsWith", "x"), ("keyStartsWith", "y")])
    assert sorted(keys_of(prefixes)) == ["x1", "y1"]
    tags = get(api, auth, run_id, [("tags", "tag-a"), ("tags", "tag-c")])
    assert sorted(keys_of(tags)) == ["a", "c"]
    assert sorted(keys_of(get(api, auth, run_id, {"tags": "tag-a,tag-c"}))) == ["a", "c"]


def test_tag_starts_with(api: Api, auth: dict[str, str]) -> None:
    run_id = make_run(api)
    put(api, auth, run_id, "a", 1, tags=["v1.0", "env:prod"])
    put(api, auth, run_id, "b", 2, tags=["v1.1"])
    put(api, auth, run_id, "c", 3, tags=["v2.0", "env:dev"])
    put(api, auth, run_id, "d", 4, tags=["v1%"])
    assert sorted(keys_of(get(api, auth, run_id, {"tagStartsWith": "v1."}))) == ["a", "b"]
    assert keys_of(get(api, auth, run_id, {"tagStartsWith": "v1%"})) == ["d"]
    assert sorted(keys_of(get(api, auth, run_id, {"tagStartsWith": "v1.,env:d"}))) == [
        "a",
        "b",
        "c",
    ]
    every = {"tagStartsWith": "v1.,env:", "tagMode": "all"}
    assert keys_of(get(api, auth, run_id, every)) == ["a"]


def test_sorting_and_pagination(api: Api, auth: dict[str, str]) -> None:
    run_id = make_run(api)
    for key in ["c", "a", "e", "b", "d"]:
        put(api, auth, run_id, key, key)
    put(api, auth, run_id, "a", "a2")
    page = get(api, auth, run_id, {"limit": 2, "offset": 1})
    assert keys_of(page) == ["d", "b"]
    assert page["pagination"] == {"total": 5, "limit": 2, "offset": 1}
    by_key = get(api, auth, run_id, {"sortBy": "key", "sortOrder": "asc"})
    assert keys_of(by_key) == ["a", "b", "c", "d", "e"]
    assert values_of(by_key)[0] == "a2"
    beyond = get(api, auth, run_id, {"offset": 10})
    assert beyond["data"] == []
    assert beyond["pagination"]["total"] == 5
    all_entries = get(api, auth, run_id, {"includeAll": True, "limit": 1000})
    assert all_entries["pagination"]["total"] == 6
    updated = get(api, auth, run_id, {"sortBy": "updatedAt", "sortOrder": "asc"})
    assert len(updated["data"]) == 5


@pytest.mark.parametrize(
    "params",
    [
        {"limit": 0},
        {"limit": 1001},
        {"limit": "x"},
        {"offset": -1},
        {"offset": 2**63},
        {"sortBy": "value"},
        {"sortOrder": "up"},
        {"tagMode": "some"},
        {"includeAll": "perhaps"},
        {"keys": "a\x00"},
        {"keyStartsWith": "x" * 256},
        {"tags": ",".join(f"t{i}" for i in range(101))},
    ],
)
def test_bad_query_is_400(api: Api, auth: dict[str, str], params: dict[str, Any]) -> None:
    run_id = make_run(api)
    response = api.client.get(f"{BASE}/runs/{run_id}/data", params=params, headers=auth)
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["code"] == "invalid_request"
    assert body["details"][0]["field"]


# ---- tags PATCH -------------------------------------------------------------------------


def test_patch_tags(api: Api, auth: dict[str, str]) -> None:
    run_id = make_run(api)
    entry = put(api, auth, run_id, "k", 1, tags=["a", "b", "c"])
    response = api.client.patch(
        f"{BASE}/runs/{run_id}/data/{entry['id']}/tags",
        json={"add": ["d", "a", "d"], "remove": ["b", "zz"]},
        headers=auth,
    )
    assert response.status_code == 200, response.text
    patched = response.json()
    assert patched["tags"] == ["a", "c", "d"]
    assert patched["updatedAt"] >= entry["updatedAt"]
    assert patched["createdAt"] == entry["createdAt"]
    assert keys_of(get(api, auth, run_id, {"tags": "d"})) == ["k"]
    assert get(api, auth, run_id, {"tags": "b"})["data"] == []
    assert get(api, auth, run_id, {"tags": "a,c,d", "tagMode": "all"})["data"][0]["tags"] == [
        "a",
        "c",
        "d",
    ]
    with api.engine.connect() as conn:
        rows = conn.execute(sa.select(run_data_tags.c.tag)).scalars().all()
    assert sorted(rows) == ["a", "c", "d"]

    unknown = api.client.patch(
        f"{BASE}/runs/{run_id}/data/{uuid.uuid4()}/tags", json={"add": ["x"]}, headers=auth
    )
    assert unknown.status_code == 404
    both = api.client.patch(
        f"{BASE}/runs/{run_id}/data/{entry['id']}/tags",
        json={"add": ["x"], "remove": ["x"]},
        headers=auth,
    )
    assert both.status_code == 400
    other_run = make_run(api)
    wrong_run = api.client.patch(
        f"{BASE}/runs/{other_run}/data/{entry['id']}/tags", json={"add": ["x"]}, headers=auth
    )
    assert wrong_run.status_code == 404
    bad_id = api.client.patch(
        f"{BASE}/runs/{run_id}/data/not-a-uuid/tags", json={"add": ["x"]}, headers=auth
    )
    assert bad_id.status_code == 400
    assert get(api, auth, run_id)["data"][0]["tags"] == ["a", "c", "d"]


# ---- deletes ----------------------------------------------------------------------------


def test_delete_by_key(api: Api, auth: dict[str, str]) -> None:
    run_id = make_run(api)
    put(api, auth, run_id, "k", 1, tags=["t"])
    put(api, auth, run_id, "k", 2, tags=["t"])
    put(api, auth, run_id, "keep", 3, tags=["t"])
    response = api.client.delete(f"{BASE}/runs/{run_id}/data", params={"key": "k"}, headers=auth)
    assert response.status_code == 200
    assert response.json() == {"deleted": 2}
    assert keys_of(get(api, auth, run_id, {"includeAll": True})) == ["keep"]
    assert keys_of(get(api, auth, run_id, {"tags": "t"})) == ["keep"]
    with api.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(run_data_tags)).scalar() == 1
    again = api.client.delete(f"{BASE}/runs/{run_id}/data", params={"key": "k"}, headers=auth)
    assert again.json() == {"deleted": 0}


def test_delete_by_id_repromotes_latest(api: Api, auth: dict[str, str]) -> None:
    run_id = make_run(api)
    first = put(api, auth, run_id, "k", 1)
    second = put(api, auth, run_id, "k", 2)
    third = put(api, auth, run_id, "k", 3)

    def delete(entry_id: str) -> Any:
        response = api.client.delete(
            f"{BASE}/runs/{run_id}/data", params={"id": entry_id}, headers=auth
        )
        assert response.status_code == 200
        return response.json()

    assert delete(second["id"]) == {"deleted": 1}  # not the latest: nothing moves
    assert values_of(get(api, auth, run_id, {"key": "k"})) == [3]
    assert delete(third["id"]) == {"deleted": 1}  # the latest: the newest remaining takes over
    assert values_of(get(api, auth, run_id, {"key": "k"})) == [1]
    assert latest_flags(api, run_id) == {"k": [1]}
    put(api, auth, run_id, "k", 4)
    assert values_of(get(api, auth, run_id, {"key": "k"})) == [4]
    assert latest_flags(api, run_id) == {"k": [4]}
    assert delete(third["id"]) == {"deleted": 0}
    assert delete(first["id"]) == {"deleted": 1}


def test_delete_by_id_removes_its_tags(api: Api, auth: dict[str, str]) -> None:
    run_id = make_run(api)
    gone = put(api, auth, run_id, "k", 1, tags=["t", "u"])
    put(api, auth, run_id, "k", 2, tags=["t"])
    response = api.client.delete(
        f"{BASE}/runs/{run_id}/data", params={"id": gone["id"]}, headers=auth
    )
    assert response.json() == {"deleted": 1}
    assert values_of(get(api, auth, run_id, {"tags": "t", "includeAll": True})) == [2]
    assert get(api, auth, run_id, {"tags": "u", "includeAll": True})["data"] == []
    with api.engine.connect() as conn:
        tags = conn.execute(sa.select(run_data_tags.c.tag)).scalars().all()
    assert tags == ["t"]


@pytest.mark.parametrize(
    "params", [{}, {"key": "k", "id": str(uuid.UUID(int=1))}, {"id": "nope"}, {"key": ""}]
)
def test_delete_needs_exactly_one_of_key_and_id(
    api: Api, auth: dict[str, str], params: dict[str, str]
) -> None:
    run_id = make_run(api)
    put(api, auth, run_id, "k", 1)
    response = api.client.delete(f"{BASE}/runs/{run_id}/data", params=params, headers=auth)
    assert response.status_code == 400, response.text
    assert stored_entries(api) == 1


# ---- validation, organisations, permissions ---------------------------------------------


def test_task_of_another_run_is_400(api: Api, auth: dict[str, str]) -> None:
    run_id = make_run(api)
    other_task = make_task(api, make_run(api))
    response = api.client.post(
        f"{BASE}/runs/{run_id}/data",
        json={"key": "k", "value": 1, "taskId": other_task},
        headers=auth,
    )
    assert response.status_code == 400
    assert response.json()["details"][0]["field"] == "taskId"
    unknown = api.client.post(
        f"{BASE}/runs/{run_id}/data",
        json={"key": "k", "value": 1, "taskId": str(uuid.uuid4())},
        headers=auth,
    )
    assert unknown.status_code == 400
    assert stored_entries(api) == 0


@pytest.mark.parametrize(
    "body",
    [
        {"key": "", "value": 1},
        {"key": "k" * 256, "value": 1},
        {"value": 1},
        {"key": "k"},
        {"key": "k", "value": 1, "extra": True},
        {"key": "k\x00", "value": 1},
        {"key": "k", "value": 1, "tags": [""]},
        {"key": "k", "value": 1, "tags": "a"},
        {"key": "k", "value": 1, "taskId": "not-a-uuid"},
        {"key": "k", "value": 1, "metadata": [1]},
        {"key": 5, "value": 1},
    ],
)
def test_bad_body_is_400_and_stores_nothing(
    api: Api, auth: dict[str, str], body: dict[str, Any]
) -> None:
    run_id = make_run(api)
    response = api.client.post(f"{BASE}/runs/{run_id}/data", json=body, headers=auth)
    assert response.status_code == 400, response.text
    assert response.json()["code"] == "invalid_request"
    assert stored_entries(api) == 0


def test_malformed_json_and_bad_run_id(api: Api, auth: dict[str, str]) -> None:
    run_id = make_run(api)
    malformed = api.client.post(
        f"{BASE}/runs/{run_id}/data",
        content=b'{"key": "k",',
        headers={**auth, "content-type": "application/json"},
    )
    assert malformed.status_code == 400
    assert api.client.get(f"{BASE}/runs/nope/data", headers=auth).status_code == 400
    assert stored_entries(api) == 0


def test_value_may_be_any_json(api: Api, auth: dict[str, str]) -> None:
    run_id = make_run(api)
    for value in [None, 0, 1.5, "s", [1, {"a": None}], {"nested": {"x": [True]}}, False]:
        assert put(api, auth, run_id, "k", value)["value"] == value
        assert values_of(get(api, auth, run_id, {"key": "k"})) == [value]


def test_other_org_is_404(api: Api, auth: dict[str, str]) -> None:
    run_id = make_run(api, org="org-b")
    entry_id = str(uuid.uuid4())
    base = f"{BASE}/runs/{run_id}/data"
    assert api.client.get(base, headers=auth).status_code == 404
    assert api.client.post(base, json={"key": "k", "value": 1}, headers=auth).status_code == 404
    patch = api.client.patch(f"{base}/{entry_id}/tags", json={"add": ["x"]}, headers=auth)
    assert patch.status_code == 404
    assert api.client.delete(base, params={"key": "k"}, headers=auth).status_code == 404
    assert api.client.delete(base, params={"id": entry_id}, headers=auth).status_code == 404
    missing = f"{BASE}/runs/{uuid.uuid4()}/data"
    assert api.client.get(missing, headers=auth).status_code == 404

    # the owner sees its entry; org-a cannot touch it by id
    owner = api.headers("*", org="org-b")
    entry = put(api, owner, run_id, "k", 1)
    patch = api.client.patch(f"{base}/{entry['id']}/tags", json={"add": ["x"]}, headers=auth)
    assert patch.status_code == 404
    assert api.client.delete(base, params={"id": entry["id"]}, headers=auth).status_code == 404
    assert values_of(get(api, owner, run_id)) == [1]
    assert get(api, owner, run_id)["data"][0]["tags"] == []


def test_permissions(api: Api) -> None:
    run_id = make_run(api)
    base = f"{BASE}/runs/{run_id}/data"
    reader = api.headers("rundata:read")
    writer = api.headers("rundata:write")
    denied = api.client.post(base, json={"key": "k", "value": 1}, headers=reader)
    assert denied.status_code == 403
    assert "rundata:write" in denied.json()["error"]
    assert api.client.post(base, json={"key": "k", "value": 1}, headers=writer).status_code == 201
    assert api.client.get(base, headers=writer).status_code == 403
    assert api.client.get(base, headers=reader).status_code == 200
    assert api.client.delete(base, params={"key": "k"}, headers=writer).status_code == 403
    deleter = api.headers("rundata:delete")
    assert api.client.delete(base, params={"key": "k"}, headers=deleter).status_code == 200


# ---- concurrency ------------------------------------------------------------------------


def run_threads(api: Api, work: Callable[[Database, int], Awaitable[None]], count: int) -> None:
    """``work(db, n)`` in ``count`` threads at once, each on a Database of its own (as
    separate processes would be: on SQLite they contend for the file's write lock)."""
    errors: list[BaseException] = []

    async def run(n: int) -> None:
        db = await open_database(api.settings.database_url)
        try:
            await work(db, n)
        finally:
            await db.close()

    def thread(n: int) -> None:
        try:
            asyncio.run(run(n))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=thread, args=(n,)) for n in range(count)]
    for started in threads:
        started.start()
    for started in threads:
        started.join()
    assert not errors, errors


def assert_latest_is_newest(api: Api, run_id: str) -> None:
    """Exactly one entry of each key is flagged latest, and it is the key's highest seq."""
    flags = latest_flags(api, run_id)
    assert all(len(latest) == 1 for latest in flags.values()), flags
    with api.engine.connect() as conn:
        of_run = run_data.c.run_id == uuid.UUID(run_id)
        newest = dict(
            conn.execute(
                sa.select(run_data.c.key, sa.func.max(run_data.c.seq))
                .where(of_run)
                .group_by(run_data.c.key)
            ).all()
        )
        flagged = dict(
            conn.execute(
                sa.select(run_data_latest.c.key, run_data_latest.c.seq).where(
                    run_data_latest.c.run_id == uuid.UUID(run_id)
                )
            ).all()
        )
    assert newest == flagged  # and no latest row is left for a key without entries


def test_concurrent_writers_keep_one_latest_per_key(api: Api) -> None:
    run_id = make_run(api)

    async def writer(db: Database, worker: int) -> None:
        for i in range(15):
            await storage.create_entry(
                db,
                org_id="org-a",
                run_id=uuid.UUID(run_id),
                key=f"k{i % 3}",
                value=[worker, i],
                task_id=None,
                tags=["t"],
                metadata=None,
            )

    run_threads(api, writer, 8)
    assert sorted(latest_flags(api, run_id)) == ["k0", "k1", "k2"]
    assert_latest_is_newest(api, run_id)


def test_concurrent_writers_and_deleters_of_one_key(api: Api, auth: dict[str, str]) -> None:
    """Writers of one key, each with several writes in flight, beside deleters of its
    newest entries (which promote the next newest): the latest stays exact."""
    run_id = make_run(api)
    written: list[uuid.UUID] = []

    async def write(db: Database, worker: int, i: int) -> None:
        row = await storage.create_entry(
            db,
            org_id="org-a",
            run_id=uuid.UUID(run_id),
            key="hot",
            value=[worker, i],
            task_id=None,
            tags=[f"w{worker}"],
            metadata=None,
        )
        written.append(row["id"])

    async def work(db: Database, worker: int) -> None:
        if worker < 6:
            for i in range(0, 12, 3):
                await asyncio.gather(*(write(db, worker, i + j) for j in range(3)))
            return
        for _ in range(10):  # delete whatever entry is newest at the moment
            if written:
                await storage.delete_by_id(
                    db, org_id="org-a", run_id=uuid.UUID(run_id), entry_id=written[-1]
                )
            await asyncio.sleep(0.001)

    run_threads(api, work, 8)
    assert_latest_is_newest(api, run_id)
    remaining = get(api, auth, run_id, {"key": "hot", "includeAll": True, "limit": 1000})
    latest = get(api, auth, run_id, {"key": "hot"})
    assert latest["data"] == remaining["data"][:1]
    assert latest["pagination"]["total"] == 1


# ---- responses --------------------------------------------------------------------------


@settings(max_examples=100, deadline=None)
@given(st.data())
def test_entry_rows_encode_as_the_run_data_model(data: st.DataObject) -> None:
    """Entries are written straight from rows: exactly the JSON of the RunData model."""
    row = {
        "seq": data.draw(st.integers(1, 2**40)),  # columns no response shows
        "total": 7,
        "id": uuid.uuid4(),
        "run_id": uuid.uuid4(),
        "task_id": data.draw(st.none() | st.uuids()),
        "org_id": data.draw(st.text(min_size=1, max_size=8)),
        "key": data.draw(st.text(min_size=1, max_size=8)),
        "value": data.draw(json_values),
        "tags": data.draw(st.lists(st.text(min_size=1, max_size=8), max_size=4)),
        "metadata": data.draw(st.none() | st.dictionaries(st.text(), json_values, max_size=3)),
        "created_at": data.draw(instants),
        "updated_at": data.draw(instants),
    }
    assert json.loads(ENTRY.encode(row)) == as_model(RunData, row)


# ---- the pure query parser --------------------------------------------------------------


def test_next_string() -> None:
    assert next_string("ab") == "ac"
    assert next_string("a\U0010ffff") == "b"
    assert next_string("\U0010ffff\U0010ffff") is None
    assert next_string("") is None
    assert next_string("a\ud7ff") == "a\ue000"


def test_glob_to_like_escapes_sql_wildcards() -> None:
    assert glob_to_like("a%_\\*?") == "a\\%\\_\\\\%_"


def test_build_query_normalises() -> None:
    query = build_query(key="k,1", keys=["a,b", "b"], key_pattern=["x*", "lit", "*"])
    assert query.keys == ("k,1", "a", "b", "lit")
    assert [r.low for r in query.key_prefixes] == ["x"]
    assert query.match_all_keys
    assert not query.filters_keys
    with pytest.raises(InvalidFilter) as exc:
        build_query(limit=0)
    assert exc.value.field == "limit"


def test_a_listed_page_reads_exactly_as_each_entry_was_created(
    api: Api, auth: dict[str, str]
) -> None:
    """Pages carry JSON as stored text and (on PostgreSQL) timestamps formatted by the
    database: the same entries as the create responses, field for field."""
    run_id = make_run(api)
    task_id = make_task(api, run_id)
    values: list[Any] = [
        None,
        0,
        -(2**70),
        2.5,
        1e-7,
        "",
        'ünï\\côdé " quotes \n and 🚀',
        [],
        {},
        {"nested": [1, {"deep": [True, False, None]}], "x": "y"},
    ]
    created = [
        put(
            api,
            auth,
            run_id,
            f"k{i % 3}",
            value,
            tags=[f"t{i}", "shared"] if i % 2 else [],
            metadata={"i": i, "s": "m"} if i % 3 else None,
            taskId=task_id if i % 2 else None,
        )
        for i, value in enumerate(values)
    ]
    page = get(api, auth, run_id, {"includeAll": "true", "sortOrder": "asc"})
    assert page["data"] == created
    assert page["pagination"]["total"] == len(values)
    latest = get(api, auth, run_id, {"sortBy": "key", "sortOrder": "asc"})
    assert latest["data"] == [created[9], created[7], created[8]]  # k0, k1, k2
