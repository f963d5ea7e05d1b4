"""Shared fixtures: the API on each storage backend, API keys to call it with, and the
session's own Redis server."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from foreman_api.app import create_app
from foreman_api.auth import issue_key
from foreman_api.settings import Settings
from foreman_api.storage.engine import create_engine
from foreman_api.storage.migrate import upgrade
from foreman_api.storage.tables import metadata
from foreman_worker.enqueue import default_namespace
from tests.services import RedisServer, private_redis_server, throwaway_postgres_database
from tests.worker_world import World, open_world

BACKENDS = ["sqlite", "postgres"]


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    with throwaway_postgres_database() as url:
        yield url


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A ``redis-server`` of this session alone, on a free port; killed at the end.

    Use ``redis_server.url(db)``, or ``restart()`` / ``stop()`` / ``start()`` to inject faults
    (it comes back empty on the same port). Most tests want ``redis_url`` instead.
    """
    with private_redis_server(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """An empty database on the session's Redis that no other test is handed."""
    return redis_server.fresh_url()


@pytest.fixture(scope="session", params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="session")
def database_url(
    backend: str, tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> str:
    if backend == "postgres":
        return str(request.getfixturevalue("postgres_url"))
    return f"sqlite:///{tmp_path_factory.mktemp('db') / 'foreman.db'}"


@pytest.fixture(scope="session")
def migrated_engine(database_url: str) -> Iterator[sa.Engine]:
    engine = create_engine(database_url)
    upgrade(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def engine(migrated_engine: sa.Engine) -> Iterator[sa.Engine]:
    """The backend's engine, emptied after each test."""
    yield migrated_engine
    with migrated_engine.begin() as conn:
        for table in reversed(metadata.sorted_tables):
            conn.execute(table.delete())


@dataclass
class Api:
    """The in-process app with helpers to mint keys for it."""

    client: TestClient
    engine: sa.Engine
    settings: Settings
    keys: list[str] = field(default_factory=list)

    def key(
        self,
        permissions: str | list[str] = "*",
        *,
        org: str = "org-a",
        rate_limit: str | None = "unlimited",
        **extra: Any,
    ) -> str:
        perms = permissions.split(",") if isinstance(permissions, str) else permissions
        secret, _ = issue_key(
            self.engine,
            env=self.settings.env,
            org_id=org,
            name=f"test-{len(self.keys)}",
            permissions=perms,
            rate_limit=rate_limit,
            **extra,
        )
        self.keys.append(secret)
        return secret

    def headers(self, permissions: str | list[str] = "*", **options: Any) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key(permissions, **options)}"}


@pytest.fixture
def make_api(engine: sa.Engine) -> Iterator[Callable[..., Api]]:
    """Build an Api with settings overrides, e.g. ``make_api(rate_limit="5/1m")``."""
    clients: list[TestClient] = []

    def build(**overrides: Any) -> Api:
        defaults: dict[str, Any] = {
            "database_url": engine.url.render_as_string(hide_password=False),
            "key_cache_seconds": 0,
        }
        settings = Settings(**(defaults | overrides))
        client = TestClient(create_app(settings, engine=engine), raise_server_exceptions=False)
        client.__enter__()  # one event loop for the client's requests, closed at teardown
        clients.append(client)
        return Api(client=client, engine=engine, settings=settings)

    yield build
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture
def api(make_api: Callable[..., Api]) -> Api:
    return make_api()


@pytest.fixture
def auth(api: Api) -> dict[str, str]:
    """Headers for an all-permissions, unlimited key of organisation ``org-a``."""
    return api.headers("*")


@pytest.fixture
def world(api: Api, monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    """Organisation ``org-a`` as a worker sees it: the SDK's client on the in-process app,
    fakeredis, no queue prefix (see ``tests/worker_world.py``)."""
    monkeypatch.delenv("FOREMAN_QUEUE_PREFIX", raising=False)
    default_namespace.cache_clear()
    with open_world(api) as opened:
        yield opened
    default_namespace.cache_clear()
