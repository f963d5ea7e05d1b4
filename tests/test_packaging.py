"""The worker install (``pip install foreman``) without the API service's stack.

Builds the wheel, installs it into a throwaway venv (its dependencies come from the
package index), and runs a handler there with ``foreman-worker`` against an API and a
Redis started by the test suite.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from foreman_api.schemas import TaskStatus
from foreman_worker import ForemanClient, submit
from tests.test_worker_integration import ROOT, ApiServer
from tests.test_worker_integration import api as api  # the fixture: a real API process

pytestmark = pytest.mark.integration

SERVER_STACK = ("fastapi", "starlette", "uvicorn", "sqlalchemy", "alembic", "psycopg", "asyncpg")
NOT_SOURCE = (
    ".git",
    ".venv",
    "build",
    "dist",
    "*.egg-info",
    "__pycache__",
    ".*_cache",
    "node_modules",
)
HANDLERS = """
from foreman_worker import TaskContext, task

@task("lean.double", queue="lean")
def double(ctx: TaskContext, data: dict[str, int]) -> dict[str, int]:
    return {"doubled": 2 * data["n"]}
"""


@pytest.fixture(scope="module")
def lean_venv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    home = tmp_path_factory.mktemp("lean")
    wheels = home / "wheels"

    def run(*args: str | Path) -> None:
        done = subprocess.run(
            [str(a) for a in args], capture_output=True, text=True, timeout=600, check=False
        )
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    # Built from a copy: setuptools writes build/ and *.egg-info next to the sources.
    source = home / "source"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(*NOT_SOURCE))
    run(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", wheels, source)
    [wheel] = wheels.glob("foreman-*.whl")
    venv = home / "venv"
    run(getattr(sys, "_base_executable", sys.executable), "-m", "venv", venv)
    run(venv / "bin" / "python", "-m", "pip", "install", "-q", wheel)
    yield venv


def test_the_worker_install_has_no_server_stack(lean_venv: Path) -> None:
    listed = subprocess.run(
        [str(lean_venv / "bin" / "python"), "-m", "pip", "list", "--format=freeze"],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout.lower()
    installed = {line.split("==")[0].replace("_", "-") for line in listed.splitlines()}
    assert {"foreman", "rq", "httpx", "redis", "pydantic"} <= installed
    assert not installed & {*SERVER_STACK, "prometheus-client", "fakeredis"}, installed
    # foreman-api says what to install instead of a traceback
    api = subprocess.run(
        [str(lean_venv / "bin" / "foreman-api"), "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert api.returncode != 0
    assert "pip install 'foreman[api]'" in api.stderr and "Traceback" not in api.stderr


def test_the_worker_install_runs_a_handler(
    lean_venv: Path, api: ApiServer, redis_url: str, tmp_path: Path
) -> None:
    (tmp_path / "lean_handlers.py").write_text(HANDLERS)
    connection = redis.Redis.from_url(redis_url)
    with ForemanClient(api.url, api.key) as client:
        run = client.create_run({"lean": True}).unwrap()
        task = submit(
            run.id, "lean.double", {"n": 21}, client=client, queue="lean", connection=connection
        )
        env = {
            "PATH": f"{lean_venv / 'bin'}:/usr/bin:/bin",
            "FOREMAN_API_URL": api.url,
            "FOREMAN_API_KEY": api.key,
            "FOREMAN_REDIS_URL": redis_url,
        }
        probe = (
            "import sys, foreman_worker.worker, foreman_worker.console; print(sorted(m for m in ("
        )
        probe += ", ".join(repr(m) for m in SERVER_STACK) + ") if m in sys.modules))"
        imported = subprocess.run(
            [str(lean_venv / "bin" / "python"), "-c", probe],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        assert imported.stdout.strip() == "[]"
        worker = subprocess.run(
            [str(lean_venv / "bin" / "foreman-worker"), "--app", "lean_handlers", "--burst"],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert worker.returncode == 0, worker.stderr[-3000:]
        deadline = time.monotonic() + 10
        done = client.get_task(task.id).unwrap()
        while done.status is not TaskStatus.COMPLETED and time.monotonic() < deadline:
            time.sleep(0.1)
            done = client.get_task(task.id).unwrap()
        assert (done.status, done.output_data) == (TaskStatus.COMPLETED, {"doubled": 42})
    connection.close()
