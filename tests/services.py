"""Reaching the real PostgreSQL and Redis the tests use, and failing or skipping without them.

With ``CI=true`` an unreachable service is a test failure; elsewhere the test is skipped and
says why.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import redis
import sqlalchemy as sa

from foreman_api.storage.engine import create_engine

POSTGRES_ADMIN_URL = os.environ.get(
    "FOREMAN_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
REDIS_URL = os.environ.get("FOREMAN_TEST_REDIS_URL", "redis://127.0.0.1:6379")
IN_CI = os.environ.get("CI", "").lower() == "true"


def unavailable(what: str, exc: Exception) -> None:
    message = f"{what} is not reachable ({exc.__class__.__name__}: {exc})"
    if IN_CI:
        pytest.fail(f"{message}; CI=true requires it")
    pytest.skip(message)


def redis_db_url(db: int) -> str:
    """A Redis URL on the test server with its own database number."""
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1)
    try:
        client.ping()
    except redis.RedisError as exc:
        unavailable(f"Redis at {REDIS_URL}", exc)
    finally:
        client.close()
    return f"{REDIS_URL}/{db}"


@contextmanager
def throwaway_postgres_database() -> Iterator[str]:
    """Create a PostgreSQL database for this test session and drop it afterwards."""
    admin = create_engine(POSTGRES_ADMIN_URL, pool_size=1)
    name = f"foreman_test_{uuid.uuid4().hex[:12]}"
    try:
        with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    except sa.exc.OperationalError as exc:
        admin.dispose()
        unavailable(f"PostgreSQL at {POSTGRES_ADMIN_URL}", exc)
    url = admin.url.set(database=name).render_as_string(hide_password=False)
    try:
        yield url
    finally:
        with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()
