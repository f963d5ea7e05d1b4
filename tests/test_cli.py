"""``foreman-api`` as a user runs it: a subprocess against a real database file or server."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from foreman_api.app import create_app
from foreman_api.settings import Settings
from foreman_api.storage.engine import create_engine

FOREMAN_API = Path(sys.executable).with_name("foreman-api")


def _command() -> list[str]:
    if FOREMAN_API.exists():
        return [str(FOREMAN_API)]
    found = shutil.which("foreman-api")
    return [found] if found else [sys.executable, "-m", "foreman_api.cli"]


def cli_env(database_url: str, **extra: str) -> dict[str, str]:
    """The environment of a CLI process: ours without any FOREMAN_* setting, plus these."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FOREMAN_")}
    env["FOREMAN_DATABASE_URL"] = database_url
    env.update(extra)
    return env


@dataclass
class Cli:
    database_url: str
    cwd: Path

    def run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*_command(), *args],
            env=cli_env(self.database_url),
            cwd=self.cwd,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def ok(self, *args: str) -> str:
        result = self.run(*args)
        assert result.returncode == 0, result.stderr
        return result.stdout

    def create_key(self, *args: str) -> tuple[str, str]:
        """``keys create`` → (key id, secret)."""
        out = self.ok("keys", "create", *args)
        lines = out.strip().splitlines()
        key_id = lines[0].split()[2]
        return key_id, lines[-1].strip()


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    cli = Cli(database_url=f"sqlite:///{tmp_path / 'cli.db'}", cwd=tmp_path)
    assert "database migrated" in cli.ok("migrate")
    return cli


@pytest.fixture
def pg_cli(postgres_url: str, tmp_path: Path) -> Iterator[Cli]:
    """The CLI on the session's PostgreSQL database; deletes the keys it made afterwards."""
    cli = Cli(database_url=postgres_url, cwd=tmp_path)
    assert "database migrated" in cli.ok("migrate")
    yield cli
    engine = create_engine(postgres_url, pool_size=1)
    with engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM api_keys WHERE org_id = 'cli-test-org'"))
    engine.dispose()


@pytest.fixture
def served(cli: Cli) -> Iterator[TestClient]:
    """The API, in process, over the database the CLI writes to."""
    engine = create_engine(cli.database_url, pool_size=2)
    settings = Settings(database_url=cli.database_url, key_cache_seconds=0)
    with TestClient(create_app(settings, engine=engine), raise_server_exceptions=False) as c:
        yield c
    engine.dispose()


def test_created_key_is_printed_once_and_works(cli: Cli, served: TestClient) -> None:
    key_id, secret = cli.create_key(
        "--org", "acme", "--name", "ci", "--permissions", "runs:*", "--rate-limit", "50/1m"
    )
    assert secret.startswith("fmn_dev_")
    assert len(secret.removeprefix("fmn_dev_")) >= 32

    response = served.get("/api/v1/runs", headers={"Authorization": f"Bearer {secret}"})
    assert response.status_code == 200, response.text
    assert response.headers["RateLimit-Limit"] == "50"
    # Its permissions are exactly what was asked for.
    tasks = served.get("/api/v1/tasks", headers={"x-api-key": secret})
    assert tasks.status_code == 403
    assert "tasks:read" in tasks.json()["error"]

    listing = cli.ok("keys", "list")
    assert key_id in listing
    assert secret not in listing
    assert secret[-20:] not in listing
    row = next(line for line in listing.splitlines() if line.startswith(key_id))
    assert "acme" in row
    assert "runs:*" in row
    assert "50/1m" in row
    assert "active" in row


def test_key_stored_as_a_hash_only(cli: Cli) -> None:
    _, secret = cli.create_key("--org", "acme", "--name", "ci", "--permissions", "*")
    engine = create_engine(cli.database_url, pool_size=1)
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.text("SELECT * FROM api_keys")).all()
    finally:
        engine.dispose()
    assert len(rows) == 1
    assert all(secret not in str(value) for value in rows[0])


def test_revoked_key_is_refused(cli: Cli, served: TestClient) -> None:
    key_id, secret = cli.create_key("--org", "acme", "--name", "ci", "--permissions", "*")
    headers = {"Authorization": f"Bearer {secret}"}
    assert served.get("/api/v1/runs", headers=headers).status_code == 200

    assert f"revoked key {key_id}" in cli.ok("keys", "revoke", key_id)

    response = served.get("/api/v1/runs", headers=headers)
    assert response.status_code == 401
    assert response.json()["code"] == "key_revoked"
    row = next(line for line in cli.ok("keys", "list").splitlines() if line.startswith(key_id))
    assert "revoked" in row
    # Revoking twice, or an unknown id, is a one-line error.
    again = cli.run("keys", "revoke", key_id)
    assert again.returncode == 2
    assert again.stderr.count("\n") == 1


def test_expiring_key_and_unlimited_key(cli: Cli, served: TestClient) -> None:
    _, unlimited = cli.create_key(
        "--org",
        "acme",
        "--name",
        "worker",
        "--permissions",
        "*",
        "--rate-limit",
        "unlimited",
        "--expires",
        "30d",
    )
    response = served.get("/api/v1/runs", headers={"Authorization": f"Bearer {unlimited}"})
    assert response.status_code == 200
    assert "RateLimit-Limit" not in response.headers
    moment = (datetime.now(UTC) + timedelta(hours=2)).isoformat()
    _, dated = cli.create_key(
        "--org", "acme", "--name", "dated", "--permissions", "*", "--expires", moment
    )
    assert served.get("/api/v1/runs", headers={"x-api-key": dated}).status_code == 200


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--permissions", "runs:destroy"], "unknown permission 'runs:destroy'"),
        (["--permissions", ""], "at least one permission"),
        (["--permissions", "*", "--rate-limit", "lots"], "invalid rate limit 'lots'"),
        (["--permissions", "*", "--rate-limit", "0/1m"], "must be positive"),
        (["--permissions", "*", "--expires", "tomorrow"], "invalid --expires 'tomorrow'"),
        (["--permissions", "*", "--expires", "2001-01-01"], "must be in the future"),
        (["--permissions", "*", "--expires", "99999999999d"], "invalid --expires"),
        (["--permissions", "*", "--org", "x" * 65], "organisation id"),
        (["--permissions", "*", "--name", "n" * 256], "key name"),
    ],
)
def test_bad_key_options_exit_2_with_one_line(cli: Cli, args: list[str], message: str) -> None:
    defaults = {"--org": "acme", "--name": "ci"}
    for flag, value in defaults.items():
        if flag not in args:
            args = [flag, value, *args]
    result = cli.run("keys", "create", *args)
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stderr.startswith("foreman-api: ")
    assert message in result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert "fmn_" not in result.stdout
    # Nothing was created.
    assert cli.ok("keys", "list").strip().count("\n") == 0


def test_key_lifecycle_on_postgres(pg_cli: Cli) -> None:
    key_id, secret = pg_cli.create_key(
        "--org",
        "cli-test-org",
        "--name",
        "pg",
        "--permissions",
        "runs:read,tasks:*",
        "--rate-limit",
        "10/1m",
        "--expires",
        "1d",
    )
    engine = create_engine(pg_cli.database_url, pool_size=2)
    settings = Settings(database_url=pg_cli.database_url, key_cache_seconds=0)
    try:
        with TestClient(create_app(settings, engine=engine)) as client:
            headers = {"Authorization": f"Bearer {secret}"}
            response = client.get("/api/v1/runs", headers=headers)
            assert response.status_code == 200, response.text
            assert response.headers["RateLimit-Limit"] == "10"
            listing = pg_cli.ok("keys", "list")
            assert key_id in listing
            assert secret not in listing
            pg_cli.ok("keys", "revoke", key_id)
            response = client.get("/api/v1/runs", headers=headers)
            assert response.status_code == 401
            assert response.json()["code"] == "key_revoked"
    finally:
        engine.dispose()
    bad = pg_cli.run(
        "keys", "create", "--org", "cli-test-org", "--name", "x", "--permissions", "nope"
    )
    assert bad.returncode == 2
    assert bad.stderr.count("\n") == 1


def test_revoke_rejects_a_non_id(cli: Cli) -> None:
    result = cli.run("keys", "revoke", "not-a-uuid")
    assert result.returncode == 2
    assert "keys list" in result.stderr
    assert result.stderr.count("\n") == 1


def test_commands_on_an_unmigrated_database_say_how_to_migrate(tmp_path: Path) -> None:
    cli = Cli(database_url=f"sqlite:///{tmp_path / 'fresh.db'}", cwd=tmp_path)
    for args in (("serve", "--port", "0"), ("keys", "list")):
        result = cli.run(*args, timeout=30)
        assert result.returncode != 0
        assert "foreman-api migrate" in result.stderr
        assert "Traceback" not in result.stderr


def test_unreachable_database_is_one_line(tmp_path: Path) -> None:
    cli = Cli(database_url="postgresql://nobody@127.0.0.1:1/none", cwd=tmp_path)
    result = cli.run("keys", "list", timeout=30)
    assert result.returncode == 2
    assert "cannot reach the database" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_missing_sqlite_file_is_named_and_not_created(tmp_path: Path) -> None:
    missing = tmp_path / "typo" / "foreman.db"
    cli = Cli(database_url=f"sqlite:///{missing}", cwd=tmp_path)
    for args in (("serve", "--port", "0"), ("keys", "list")):
        result = cli.run(*args, timeout=30)
        assert result.returncode == 2, result.stderr
        assert f"no SQLite database at {missing}" in result.stderr
        assert "FOREMAN_DATABASE_URL" in result.stderr
    assert not missing.parent.exists()  # nothing made on the way
    assert cli.run("migrate", timeout=60).returncode == 0  # migrate creates it
    assert missing.exists()


@pytest.mark.parametrize(
    ("command", "settings"),
    [
        ("foreman-api", "foreman_api.settings:Settings"),
        ("foreman-worker", "foreman_worker.settings:WorkerSettings"),
    ],
)
def test_help_lists_every_environment_variable(command: str, settings: str) -> None:
    module, _, name = settings.partition(":")
    model = getattr(__import__(module, fromlist=[name]), name)
    shown = subprocess.run(
        [str(FOREMAN_API.with_name(command)), "--help"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    assert "``" not in shown
    for field in model.model_fields:
        assert f"FOREMAN_{field.upper()} (default" in shown, field
