"""The README's run command: the order pipeline end to end on embedded defaults.

Migrates a fresh SQLite database under ``.foreman/`` (or ``$FOREMAN_DEMO_DIR``), creates a
client key and a worker key (with no rate limit: a worker spends two requests per task),
starts ``foreman-api serve`` and one ``foreman-worker``, submits an order, waits for its
tasks and prints the run's tasks and data. Uses the Redis at ``FOREMAN_REDIS_URL`` (when
unset, ``redis://127.0.0.1:6379/0``) if it answers, otherwise an embedded fakeredis server,
and says which.

    python examples/demo.py
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path

import redis

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from examples.order_pipeline import Order, OrderLine, start_order  # noqa: E402
from foreman_api.auth import issue_key  # noqa: E402
from foreman_api.schemas import TERMINAL_TASK_STATUSES, RunStatus  # noqa: E402
from foreman_api.storage.engine import create_engine  # noqa: E402
from foreman_api.storage.migrate import upgrade  # noqa: E402
from foreman_worker import ForemanClient, RetryPolicy  # noqa: E402

DATABASE = Path(os.environ.get("FOREMAN_DEMO_DIR") or REPO / ".foreman") / "demo.db"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
DEADLINE_SECONDS = 90


def say(message: str) -> None:
    print(f"demo: {message}", flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def redis_url(configured: str | None) -> Iterator[str]:
    """The configured (else the default) Redis if it answers, else an embedded fakeredis."""
    url = configured or DEFAULT_REDIS_URL
    try:
        redis.Redis.from_url(url, socket_connect_timeout=1).ping()
        say(f"using Redis at {url}")
        yield url
        return
    except redis.RedisError:
        pass
    from fakeredis import TcpFakeServer

    port = free_port()
    server = TcpFakeServer(("127.0.0.1", port), server_type="redis")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    say(f"no Redis at {url}; started an embedded fakeredis server on port {port}")
    try:
        # fakeredis' TCP server speaks RESP2 only; redis-py would otherwise negotiate RESP3.
        yield f"redis://127.0.0.1:{port}/0?protocol=2"
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def process(name: str, args: list[str], env: dict[str, str]) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``python args…`` from the repository with ``env`` on top of this environment."""
    proc = subprocess.Popen([sys.executable, *args], cwd=REPO, env={**os.environ, **env})
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
        say(f"stopped {name}")


def wait_for_api(api_url: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    with ForemanClient(api_url, retry=RetryPolicy.none()) as probe:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise SystemExit("demo: the API server exited; see its output above")
            if probe.health().success:
                return
            time.sleep(0.2)
    raise SystemExit("demo: the API server did not answer within 30 s")


def print_run(client: ForemanClient, run_id: str) -> None:
    run = client.get_run(run_id).unwrap()
    print(
        f"\nrun {run.id}: {run.status.value}, {run.completed_tasks}/{run.total_tasks} tasks "
        f"completed, {run.failed_tasks} failed, {run.duration_ms} ms"
    )
    print(f"\n{'task':<16} {'status':<10} {'tries':>5}  {'parent':<10} output")
    tasks = client.list_tasks(run_id=run_id, sort_order="asc").unwrap().data
    short = {task.id: str(task.id)[:8] for task in tasks}
    for task in tasks:
        parent = short.get(task.parent_task_id, "-") if task.parent_task_id else "-"
        print(
            f"{task.type:<16} {task.status.value:<10} {task.retry_count + 1:>5}  "
            f"{parent:<10} {task.output_data}"
        )
    print(f"\n{'run data key':<22} {'tags':<22} value")
    for entry in client.query_run_data(run_id, include_all=True, sort_order="asc").unwrap().data:
        print(f"{entry.key:<22} {','.join(entry.tags):<22} {entry.value}")
    charged = client.query_run_data_by_tags(run_id, ["charged", "shipped"], "any").unwrap()
    print(f"\nrun data tagged charged or shipped: {sorted(e.key for e in charged)}")
    prefixed = client.query_run_data(run_id, key_starts_with=["customer-"], tags=["v1.0"])
    print(
        f"run data with prefix 'customer-' and tag v1.0: {[e.key for e in prefixed.unwrap().data]}"
    )


def main() -> None:
    DATABASE.parent.mkdir(parents=True, exist_ok=True)
    for leftover in DATABASE.parent.glob(f"{DATABASE.name}*"):
        leftover.unlink()
    database_url = f"sqlite:///{DATABASE}"
    engine = create_engine(database_url, pool_size=1)
    upgrade(engine)
    demo_key = partial(issue_key, engine, env="dev", org_id="demo")
    client_key, _ = demo_key(name="demo-client", permissions=["runs:*", "tasks:*", "rundata:*"])
    worker_key, _ = demo_key(
        name="demo-worker",
        permissions=["tasks:*", "rundata:*", "runs:read"],
        rate_limit="unlimited",
    )
    engine.dispose()
    shown = DATABASE.relative_to(REPO) if DATABASE.is_relative_to(REPO) else DATABASE
    say(f"migrated {shown} and created a client key and a worker key")

    port = free_port()
    api_url = f"http://127.0.0.1:{port}"
    # One API process: its rate-limit counters can live in memory, so it needs no Redis;
    # take the setting out of the environment it inherits, but use it for the worker.
    configured_redis = os.environ.pop("FOREMAN_REDIS_URL", None)
    with (
        redis_url(configured_redis) as redis_address,
        process(
            "foreman-api",
            ["-m", "foreman_api.cli", "serve", "--port", str(port), "--log-level", "warning"],
            {"FOREMAN_DATABASE_URL": database_url},
        ) as api,
        ForemanClient(api_url, client_key) as client,
    ):
        wait_for_api(api_url, api)
        say(f"API at {api_url}")
        worker_env = {
            "FOREMAN_API_URL": api_url,
            "FOREMAN_API_KEY": worker_key,
            "FOREMAN_REDIS_URL": redis_address,
        }
        os.environ["FOREMAN_REDIS_URL"] = redis_address
        with process(
            "foreman-worker",
            [
                "-m",
                "foreman_worker.cli",
                "--app",
                "examples.order_pipeline",
                "--log-level",
                "WARNING",
            ],
            worker_env,
        ):
            order = Order(
                order_id="order-123",
                customer_id="c-42",
                email="user@example.com",
                lines=[
                    OrderLine(sku="book", quantity=2, unit_price_cents=1250),
                    OrderLine(sku="pen", quantity=3, unit_price_cents=199),
                ],
            )
            wait_for_worker(client)
            run, first = start_order(client, order)
            say(f"run {run.id}: submitted validate-order {first.id}")
            finished = wait_for_tasks(client, str(run.id))
            summary = {"tasks": {t.type: t.status.value for t in finished}}
            ok = all(t.status.value == "completed" for t in finished)
            client.update_run(
                run.id, status=RunStatus.COMPLETED if ok else RunStatus.FAILED, output_data=summary
            ).unwrap()
        print_run(client, str(run.id))
        show_with_the_cli(api_url, client_key, str(run.id))
    try_next(database_url, client_key, str(run.id))
    if not ok:
        raise SystemExit(1)


def show_with_the_cli(api_url: str, key: str, run_id: str) -> None:
    """The same run through ``foreman runs show``, the command-line view."""
    print(f"\n$ foreman runs show {run_id}")
    env = {**os.environ, "FOREMAN_API_URL": api_url, "FOREMAN_API_KEY": key, "COLUMNS": "110"}
    command = [sys.executable, "-m", "foreman_worker.console", "runs", "show", run_id]
    subprocess.run(command, cwd=REPO, env=env, check=False)


def try_next(database_url: str, key: str, run_id: str) -> None:
    """Commands to look around this run (and operate Foreman) once the demo has ended."""
    bin_dir = Path(sys.executable).parent
    shown = bin_dir.relative_to(REPO) if bin_dir.is_relative_to(REPO) else bin_dir
    print(
        f"""
Try next: serve this demo's database and look around with the `foreman` command
  FOREMAN_DATABASE_URL={database_url} {shown}/foreman-api serve &
  export FOREMAN_API_URL=http://127.0.0.1:8000 FOREMAN_API_KEY={key}
  {shown}/foreman runs ls
  {shown}/foreman runs show {run_id}
  {shown}/foreman tasks ls --run {run_id}
  {shown}/foreman tasks show <task id>      # input, output, error, every attempt
  {shown}/foreman runs watch <run id>       # live, until the run finishes
  {shown}/foreman tasks retry <task id>     # a failed or cancelled task, again"""
    )


def wait_for_worker(client: ForemanClient, timeout: float = 60.0) -> None:
    """Until the worker has registered its handlers with the API (GET /workers)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        workers = client.list_workers()
        if workers.success and workers.data is not None and workers.data.data:
            return
        time.sleep(0.2)
    raise SystemExit("demo: the worker did not register with the API in time")


def wait_for_tasks(client: ForemanClient, run_id: str) -> list:  # type: ignore[type-arg]
    """Poll until the run has its three tasks and all are finished."""
    deadline = time.monotonic() + DEADLINE_SECONDS
    while time.monotonic() < deadline:
        tasks = client.list_tasks(run_id=run_id).unwrap().data
        if len(tasks) >= 3 and all(t.status in TERMINAL_TASK_STATUSES for t in tasks):
            return tasks
        time.sleep(0.25)
    raise SystemExit(f"demo: the run's tasks did not finish within {DEADLINE_SECONDS} s")


if __name__ == "__main__":
    main()
