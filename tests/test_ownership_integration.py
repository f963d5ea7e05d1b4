"""Task ownership end to end, with real processes: a paused worker's late result is refused,
handler options hold whoever submits, and a worker never takes another organisation's task.

Each of these lost or corrupted tasks before the database owned them (issue 6).
"""

from __future__ import annotations

import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest
import redis

from foreman_api.schemas import TaskStatus
from foreman_worker import ForemanClient, enqueue, submit
from foreman_worker.registry import Registry
from tests.test_worker_integration import (  # noqa: F401 - api is a fixture
    QUEUE,
    ApiServer,
    Workers,
    api,
    prepare_database,
    runs,
    wait_terminal,
)
from tests.worker_apps.handlers import DECLARED_QUEUE

pytestmark = pytest.mark.integration


def worker_env(
    api: ApiServer, redis_url: str, key: str | None = None, **extra: str
) -> dict[str, str]:
    return {
        **api.env,
        "FOREMAN_API_URL": api.url,
        "FOREMAN_API_KEY": key or api.key,
        "FOREMAN_REDIS_URL": redis_url,
        **extra,
    }


@pytest.fixture
def pools(tmp_path: Path) -> Iterator[list[Workers]]:
    started: list[Workers] = []
    yield started
    for pool in started:
        pool.stop()


def start_pool(
    pools: list[Workers], env: dict[str, str], log_dir: Path, *, queue: str = QUEUE, count: int = 1
) -> Workers:
    log_dir.mkdir(parents=True, exist_ok=True)
    pool = Workers(env=env, log_dir=log_dir, queue=queue)
    pools.append(pool)
    pool.start(count)
    return pool


def wait_for(check: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_a_paused_workers_late_result_is_refused(
    api: ApiServer, redis_url: str, tmp_path: Path, pools: list[Workers]
) -> None:
    """SIGSTOP a worker past its lease: another runs the task; the late finish is refused."""
    env = worker_env(
        api,
        redis_url,
        FOREMAN_WORKER_LEASE="3",
        FOREMAN_WORKER_HEARTBEAT_INTERVAL="1",
        FOREMAN_WORKER_REAP_INTERVAL="1",
    )
    pool = start_pool(pools, env, tmp_path / "w", count=2)
    conn = redis.Redis.from_url(redis_url)
    with ForemanClient(api.url, api.key) as client:
        run = client.create_run({}).unwrap()
        task = submit(run.id, "itest.counted", {"sleep": 6}, client=client, connection=conn)
        first = wait_for(
            lambda: client.get_task(task.id).unwrap().queue_job_id, 20, "the first claim"
        )
        pid = int(wait_for(lambda: conn.lindex(f"itest:pids:{task.id}", 0), 10, "the handler"))
        frozen = next(p for p in pool.processes if p.pid == pid)
        frozen.send_signal(signal.SIGSTOP)
        try:
            rerun = wait_for(
                lambda: (t := client.get_task(task.id).unwrap()).queue_job_id != first and t,
                30,
                "the task to be recovered and claimed again",
            )
            assert rerun.retry_count == 1
            done = wait_terminal(client, task, timeout=30)
        finally:
            frozen.send_signal(signal.SIGCONT)
        assert done.status is TaskStatus.COMPLETED
        output = cast(dict[str, Any], done.output_data)
        assert output["pid"] != pid and output["runs"] == 2
        wait_for(lambda: "discarded" in pool.logs(), 20, "the paused worker to report")
        time.sleep(1)
        after = client.get_task(task.id).unwrap()
        assert after.output_data == done.output_data and after.status is TaskStatus.COMPLETED
        assert after.queue_job_id == done.queue_job_id
        assert runs(conn, task) == 2
        run_after = client.get_run(run.id).unwrap()
        assert (run_after.completed_tasks, run_after.failed_tasks) == (1, 0)


def test_handler_options_hold_when_the_submitter_never_imported_the_handler(
    api: ApiServer,
    redis_url: str,
    tmp_path: Path,
    pools: list[Workers],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """@task("itest.declared", queue=..., max_retries=1): 2 attempts, on its own queue."""
    # This process knows no handler (the package's ``enqueue`` names the function).
    monkeypatch.setattr(sys.modules["foreman_worker.enqueue"], "registry", Registry())
    start_pool(pools, worker_env(api, redis_url), tmp_path / "w", queue=DECLARED_QUEUE)
    conn = redis.Redis.from_url(redis_url)
    with ForemanClient(api.url, api.key) as client:
        run = client.create_run({}).unwrap()
        task = submit(run.id, "itest.declared", client=client, connection=conn)
        assert (task.queue, task.max_retries) == (DECLARED_QUEUE, 1)
        done = wait_terminal(client, task, timeout=30)
    assert done.status is TaskStatus.FAILED and done.retry_count == 1
    assert runs(conn, task) == 2


def test_a_worker_never_takes_another_organisations_task(
    api: ApiServer, redis_url: str, tmp_path: Path, pools: list[Workers]
) -> None:
    other_key = prepare_database(api.env, org="itest-other")
    outsider = start_pool(pools, worker_env(api, redis_url, other_key), tmp_path / "other")
    conn = redis.Redis.from_url(redis_url)
    with ForemanClient(api.url, api.key) as client:
        run = client.create_run({}).unwrap()
        task = submit(run.id, "itest.counted", client=client, queue=QUEUE, connection=conn)
        time.sleep(3)  # the other organisation's worker listens on the same Redis
        assert client.get_task(task.id).unwrap().status is TaskStatus.QUEUED
        assert str(task.id) not in outsider.logs()
        start_pool(pools, worker_env(api, redis_url), tmp_path / "own")
        assert wait_terminal(client, task).status is TaskStatus.COMPLETED
    assert runs(conn, task) == 1


def test_a_task_whose_job_redis_lost_is_run_once(
    api: ApiServer, redis_url: str, tmp_path: Path, pools: list[Workers]
) -> None:
    """FLUSHALL while tasks wait: the reconciler puts each back, and each runs once."""
    conn = redis.Redis.from_url(redis_url)
    with ForemanClient(api.url, api.key) as client:
        run = client.create_run({}).unwrap()
        tasks = [
            submit(run.id, "itest.counted", client=client, queue=QUEUE, connection=conn)
            for _ in range(20)
        ]
        conn.flushall()
        start_pool(pools, worker_env(api, redis_url), tmp_path / "w", count=2)
        done = [wait_terminal(client, task, timeout=60) for task in tasks]
    assert all(t.status is TaskStatus.COMPLETED for t in done)
    assert [runs(conn, task) for task in tasks] == [1] * len(tasks)


def test_enqueue_of_a_task_id_looks_it_up(api: ApiServer, redis_url: str) -> None:
    """enqueue(<id>) finds the task's organisation and queue through the API."""
    conn = redis.Redis.from_url(redis_url)
    with ForemanClient(api.url, api.key) as client:
        run = client.create_run({}).unwrap()
        task = client.create_task(run.id, "itest.noop", queue=QUEUE, status="queued").unwrap()
        job = enqueue(str(task.id), connection=conn, client=client)
    assert job is not None
    assert conn.lrange(f"rq:queue:foreman:{task.org_id}:{QUEUE}", 0, -1) == [job.encode()]
