"""``/metrics`` of ``foreman-api serve --workers 2``: whichever process answers a scrape,
it counts what both did (prometheus-client's multiprocess mode), on PostgreSQL."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.services import stop_process, throwaway_postgres_database
from tests.test_cli import _command, cli_env
from tests.test_metrics import parse, value
from tests.test_rate_limit_processes import Server, _wait_ready, start_server

pytestmark = pytest.mark.integration

RUNS = 24
KIND = "metrics.two-processes"


@dataclass
class TwoProcesses:
    server: Server
    key: str
    temp: Path
    """The server's TMPDIR: where ``serve`` makes the processes' shared directory."""

    def client(self) -> httpx.Client:
        """A client that opens a new connection per request, so requests spread over the
        server's processes (each accepts on the shared socket)."""
        return httpx.Client(
            base_url=self.server.url,
            headers={"Authorization": f"Bearer {self.key}"},
            limits=httpx.Limits(max_keepalive_connections=0),
            timeout=10,
        )


@pytest.fixture
def two_processes(tmp_path: Path) -> Iterator[TwoProcesses]:
    temp = tmp_path / "tmp"
    temp.mkdir()
    with throwaway_postgres_database() as database_url:
        env = cli_env(database_url, TMPDIR=str(temp), FOREMAN_RATE_LIMIT="unlimited")
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)

        def cli(*args: str) -> str:
            done = subprocess.run(
                [*_command(), *args], env=env, capture_output=True, text=True, timeout=60
            )
            assert done.returncode == 0, done.stderr
            return done.stdout

        cli("migrate")
        key = cli(
            "keys", "create", "--org", "metrics", "--name", "m", "--permissions", "*", "--quiet"
        ).strip()
        server = start_server(env, tmp_path, tmp_path / "server.log", "--workers", "2")
        try:
            _wait_ready(server, time.monotonic() + 60)
            yield TwoProcesses(server, key, temp)
        finally:
            stop_process(server.process, wait=20)


def _one_run(client: httpx.Client, n: int) -> None:
    run = client.post("/api/v1/runs", json={"inputData": {"n": n}})
    assert run.status_code == 201, run.text
    body = {"runId": run.json()["id"], "type": KIND, "status": "queued"}
    task = client.post("/api/v1/tasks", json=body)
    assert task.status_code == 201, task.text
    task_id = task.json()["id"]
    for status in ("running", "completed"):
        moved = client.patch(
            f"/api/v1/tasks/{task_id}", json={"status": status, "queueJobId": f"job-{n}"}
        )
        assert moved.status_code == 200, moved.text


def test_a_scrape_of_either_process_counts_the_work_of_both(two_processes: TwoProcesses) -> None:
    runs = 0
    with two_processes.client() as client, ThreadPoolExecutor(4) as pool:
        # The kernel hands a new connection to whichever process accepts first, which can
        # be the same one for a while: batches until both have done some of the work.
        deadline = time.monotonic() + 60
        while True:
            list(pool.map(lambda n: _one_run(client, n), range(runs, runs + RUNS)))
            runs += RUNS
            shared = [path for path in two_processes.temp.iterdir() if path.is_dir()]
            assert len(shared) == 1, shared  # made by serve for its processes
            writers = {p.stem.rsplit("_", 1)[-1] for p in shared[0].glob("counter_*.db")}
            if len(writers) == 2 or time.monotonic() > deadline:
                break
        assert len(writers) == 2, (writers, two_processes.server.output())

        scrapes = []
        for _ in range(10):  # new connections: both processes answer some of these
            response = client.get("/metrics")
            assert response.status_code == 200, response.text
            scrapes.append(parse(response.text))

    for samples in scrapes:
        counted = {
            "created": value(samples, "foreman_tasks_created_total", type=KIND),
            "completed": value(
                samples, "foreman_task_status_changes_total", type=KIND, status="completed"
            ),
            "durations": value(
                samples, "foreman_task_duration_seconds_count", type=KIND, outcome="completed"
            ),
            "runs created": value(
                samples,
                "foreman_http_requests_total",
                method="POST",
                route="/api/v1/runs",
                status="201",
            ),
            "claims and completions": value(
                samples,
                "foreman_http_requests_total",
                method="PATCH",
                route="/api/v1/tasks/{taskId}",
                status="200",
            ),
        }
        assert counted == {
            "created": runs,
            "completed": runs,
            "durations": runs,
            "runs created": runs,
            "claims and completions": 2 * runs,
        }
        assert value(samples, "foreman_tasks", type=KIND, status="completed") == runs
        assert value(samples, "foreman_runs", status="completed") == runs  # finished by itself

    stop_process(two_processes.server.process, wait=20)
    assert list(two_processes.temp.iterdir()) == []  # the shared directory went with it
