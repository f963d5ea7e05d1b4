"""Cross-cutting behaviour of the app: health, errors, body limit, migrations."""

from __future__ import annotations

import pytest

from foreman_api.app import UnmigratedDatabase, create_app
from foreman_api.settings import Settings
from foreman_api.storage.engine import create_engine
from tests.conftest import Api


def test_health_needs_no_key(api: Api) -> None:
    response = api.client.get("/health")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert body["database"] == "ok"
    assert body["redis"] == "not_configured"


def test_unknown_route_is_a_json_404(api: Api) -> None:
    response = api.client.get("/api/v1/nothing-here")
    assert response.status_code == 404
    assert response.json()["code"] == "not_found"


def test_body_over_the_limit_is_413(make_api: object) -> None:
    api = make_api(max_body_bytes=2048)  # type: ignore[operator]
    response = api.client.post(
        "/api/v1/runs", headers=api.headers(), json={"inputData": "x" * 4096}
    )
    assert response.status_code == 413
    assert response.json()["code"] == "payload_too_large"


def test_unmigrated_database_is_refused_with_the_fix(tmp_path: object) -> None:
    url = f"sqlite:///{tmp_path}/fresh.db"
    with pytest.raises(UnmigratedDatabase, match="foreman-api migrate"):
        create_app(Settings(database_url=url), engine=create_engine(url))
