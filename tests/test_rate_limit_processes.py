"""Exact rate limiting across two real ``foreman-api serve`` processes sharing Redis."""

from __future__ import annotations

import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import sqlalchemy as sa

from foreman_api.storage.engine import create_engine
from tests.services import free_port, stop_process
from tests.test_cli import _command, cli_env

pytestmark = pytest.mark.integration

ORG = "rate-limit-processes"


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    url: str
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]


@dataclass
class Cluster:
    servers: list[Server]
    env: dict[str, str]
    cwd: Path

    def cli(self, *args: str) -> str:
        result = subprocess.run(
            [*_command(), *args],
            env=self.env,
            cwd=self.cwd,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        return result.stdout


def start_server(env: dict[str, str], cwd: Path, log: Path, *extra: str) -> Server:
    """``foreman-api serve`` on a free port (``extra``: more options), output to ``log``."""
    port = free_port()
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [*_command(), "serve", "--port", str(port), *extra],
            env=env,
            cwd=cwd,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    return Server(process, f"http://127.0.0.1:{port}", log)


def _wait_ready(server: Server, deadline: float) -> None:
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            pytest.fail(f"foreman-api serve exited early:\n{server.output()}")
        try:
            if httpx.get(f"{server.url}/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    pytest.fail(f"foreman-api serve did not become healthy:\n{server.output()}")


@pytest.fixture(params=["sqlite", "postgres"])
def cluster(request: pytest.FixtureRequest, redis_url: str, tmp_path: Path) -> Iterator[Cluster]:
    """Two API processes on one database and one Redis namespace; all torn down after."""
    if request.param == "postgres":
        database_url = str(request.getfixturevalue("postgres_url"))
    else:
        database_url = f"sqlite:///{tmp_path / 'shared.db'}"
    namespace = f"foreman-test:{uuid.uuid4().hex}"
    env = cli_env(
        database_url,
        FOREMAN_REDIS_URL=redis_url,
        FOREMAN_RATE_LIMIT_NAMESPACE=namespace,
        FOREMAN_RATE_LIMIT="100/15m",
    )
    cluster = Cluster(servers=[], env=env, cwd=tmp_path)
    try:
        cluster.cli("migrate")
        for n in range(2):
            log = tmp_path / f"server-{n}.log"
            cluster.servers.append(start_server(env, tmp_path, log, "--log-level", "warning"))
        deadline = time.monotonic() + 30
        for server in cluster.servers:
            _wait_ready(server, deadline)
        yield cluster
    finally:
        for server in cluster.servers:
            stop_process(server.process)
        if request.param == "postgres":
            engine = create_engine(database_url, pool_size=1)
            with engine.begin() as conn:
                conn.execute(sa.text("DELETE FROM api_keys WHERE org_id = :org"), {"org": ORG})
            engine.dispose()


def _key(cluster: Cluster, *extra: str) -> str:
    out = cluster.cli(
        "keys",
        "create",
        "--org",
        ORG,
        "--name",
        "rl",
        "--permissions",
        "runs:read",
        "--quiet",
        *extra,
    )
    return out.strip()


def _exhaust(cluster: Cluster, key: str, bystander: str) -> None:
    """100 requests alternating between the processes pass; the 101st on either is a 429."""
    first, second = (httpx.Client(base_url=s.url, timeout=10) for s in cluster.servers)
    headers = {"Authorization": f"Bearer {key}"}
    try:
        remaining = []
        for n in range(100):
            client = first if n % 2 == 0 else second
            response = client.get("/api/v1/runs", headers=headers)
            assert response.status_code == 200, (n, response.text)
            assert response.headers["RateLimit-Limit"] == "100"
            remaining.append(int(response.headers["RateLimit-Remaining"]))
        # One shared counter: every request saw a distinct remaining count.
        assert remaining == list(range(99, -1, -1))

        for client in (first, second):
            refused = client.get("/api/v1/runs", headers=headers)
            assert refused.status_code == 429, refused.text
            assert refused.json()["code"] == "rate_limited"
            retry_after = int(refused.headers["Retry-After"])
            assert 1 <= retry_after <= 900
            assert refused.headers["RateLimit-Remaining"] == "0"

        for client in (first, second):
            other = client.get("/api/v1/runs", headers={"x-api-key": bystander})
            assert other.status_code == 200
    finally:
        first.close()
        second.close()


def test_limit_is_exact_across_two_processes(cluster: Cluster) -> None:
    own, default, spare = (
        _key(cluster, "--rate-limit", "100/15m"),
        _key(cluster),
        _key(cluster),
    )
    _exhaust(cluster, own, bystander=spare)
    # A key without its own limit gets the server default (100/15m), just as exactly.
    _exhaust(cluster, default, bystander=spare)
