"""Workers through Redis outages and shutdowns: real ``foreman-worker`` processes, a real API,
and a ``redis-server`` of this module's own that the tests stop, restart and pause.

* a busy worker survives Redis going away for a few seconds, and its task completes;
* a worker started while Redis is down waits for it, then works;
* SIGTERM lets the running task finish and takes no new one; the grace bounds it, even
  while the API is unreachable; a second SIGTERM exits at once; both say so in one line;
* the ``--concurrency`` supervisor restarts crashing worker processes after a growing
  backoff, and forwards a second signal.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest
import redis

from foreman_api.schemas import Task, TaskStatus
from foreman_worker import ForemanClient, submit
from foreman_worker.cli import restart_delay
from foreman_worker.shutdown import FORCED_EXIT_STATUS
from tests.services import RedisServer, private_redis_server, stop_process
from tests.test_worker_integration import (  # noqa: F401 - api: a fixture, see api_server
    APP,
    BIN,
    QUEUE,
    ROOT,
    ApiServer,
    Workers,
    api,
    wait_terminal,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def blip_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A Redis of this module alone: the tests stop it, restart it (empty) and pause it."""
    with private_redis_server(tmp_path_factory.mktemp("blip-redis")) as server:
        yield server


@pytest.fixture
def api_server(request: pytest.FixtureRequest) -> ApiServer:
    """test_worker_integration's API server (one per module), under a name of this module."""
    return cast(ApiServer, request.getfixturevalue("api"))


@pytest.fixture
def env(api_server: ApiServer, blip_redis: RedisServer) -> dict[str, str]:
    if api_server.process is None:  # a test stopped it and did not get to restart it
        api_server.start()
    blip_redis.ensure_running()
    with redis.Redis.from_url(blip_redis.url()) as conn:
        conn.flushdb()
    return {
        **os.environ,
        "FOREMAN_API_URL": api_server.url,
        "FOREMAN_API_KEY": api_server.key,
        "FOREMAN_REDIS_URL": blip_redis.url(),
        "PYTHONPATH": str(ROOT),
    }


@pytest.fixture
def conn(blip_redis: RedisServer) -> Iterator[redis.Redis]:
    c = redis.Redis.from_url(blip_redis.url(), socket_timeout=10)
    yield c
    c.close()


@pytest.fixture
def pool(env: dict[str, str], tmp_path: Path) -> Iterator[Workers]:
    """Worker processes, started by each test (with its own settings), stopped afterwards."""
    workers = Workers(env=env, log_dir=tmp_path)
    yield workers
    workers.stop()


class Tasks:
    """Submit ``itest.counted`` tasks of one run and watch them."""

    def __init__(self, client: ForemanClient, conn: redis.Redis) -> None:
        self.client = client
        self.conn = conn
        self.run_id = client.create_run({"test": "resilience"}).unwrap().id

    def submit(self, sleep: float = 0) -> Task:
        return submit(
            self.run_id,
            "itest.counted",
            {"sleep": sleep},
            client=self.client,
            queue=QUEUE,
            connection=self.conn,
        )

    def status(self, task: Task) -> TaskStatus:
        return self.client.get_task(task.id).unwrap().status

    def wait_started(self, task: Task, timeout: float = 30) -> None:
        """Until the handler runs (it has recorded its run in Redis)."""
        deadline = time.monotonic() + timeout
        while not self.conn.get(f"itest:runs:{task.id}"):
            assert time.monotonic() < deadline, f"task {task.id} did not start"
            time.sleep(0.05)


@pytest.fixture
def tasks(api_server: ApiServer, conn: redis.Redis) -> Iterator[Tasks]:
    with ForemanClient(api_server.url, api_server.key) as client:
        yield Tasks(client, conn)


def log_of(workers: Workers, index: int = 0) -> str:
    return (workers.log_dir / f"worker-{index}.log").read_text(errors="replace")


def lines_with(text: str, needle: str) -> list[str]:
    return [line for line in text.splitlines() if needle in line]


def _busy(pool: Workers, tasks: Tasks, sleep: float, grace: str | None = None) -> Task:
    """Start one worker (with a shutdown grace of ``grace`` s) busy with a task."""
    if grace is not None:
        pool.env["FOREMAN_WORKER_SHUTDOWN_GRACE"] = grace
    pool.start(1)
    task = tasks.submit(sleep=sleep)
    tasks.wait_started(task)
    return task


# ---- Redis outages -----------------------------------------------------------------------


def _outage(server: RedisServer, kind: str, seconds: float = 3) -> None:
    if kind == "restart":  # down, then back empty (no persistence)
        server.stop()
        time.sleep(seconds)
        server.start()
    else:  # the server stops answering; its connections stay open
        assert server.process is not None
        server.process.send_signal(signal.SIGSTOP)
        time.sleep(seconds)
        server.process.send_signal(signal.SIGCONT)


def _assert_calm(workers: Workers) -> None:
    log = log_of(workers)
    assert workers.processes[0].poll() is None, log
    assert "Traceback" not in log and "quitting" not in log, log


@pytest.mark.parametrize("outage", ["restart", "pause"])
def test_busy_worker_survives_a_redis_outage_and_its_task_completes(
    pool: Workers, tasks: Tasks, blip_redis: RedisServer, outage: str
) -> None:
    task = _busy(pool, tasks, sleep=1.5)
    _outage(blip_redis, outage)  # the task ends, and the worker looks for the next, meanwhile
    done = wait_terminal(tasks.client, task, timeout=30)
    assert done.status == TaskStatus.COMPLETED, log_of(pool)
    assert cast(dict[str, Any], done.output_data)["runs"] == 1
    after = tasks.submit()  # and it goes on working
    assert wait_terminal(tasks.client, after, timeout=20).status == TaskStatus.COMPLETED
    _assert_calm(pool)


def test_idle_worker_survives_a_redis_restart(
    pool: Workers, tasks: Tasks, blip_redis: RedisServer
) -> None:
    pool.start(1)
    _outage(blip_redis, "restart")
    task = tasks.submit()
    assert wait_terminal(tasks.client, task, timeout=20).status == TaskStatus.COMPLETED
    _assert_calm(pool)
    assert len(lines_with(log_of(pool), "Redis unavailable while")) == 1, log_of(pool)


def test_worker_started_while_redis_is_down_waits_for_it(
    pool: Workers, tasks: Tasks, blip_redis: RedisServer
) -> None:
    blip_redis.stop()
    starting = threading.Thread(target=pool.start, args=(1,))  # until it listens
    starting.start()
    try:
        time.sleep(3)
        assert pool.processes and pool.processes[0].poll() is None  # waiting, not exiting
    finally:
        blip_redis.start()  # from this thread: the server dies with the thread that starts it
        starting.join(60)
    task = tasks.submit()
    assert wait_terminal(tasks.client, task, timeout=20).status == TaskStatus.COMPLETED
    log = log_of(pool)
    assert len(lines_with(log, "cannot reach Redis")) == 1, log
    assert "Traceback" not in log, log


# ---- shutdown ----------------------------------------------------------------------------


def test_sigterm_finishes_the_running_task_and_takes_no_other(pool: Workers, tasks: Tasks) -> None:
    pool.start(1)
    running = tasks.submit(sleep=2)
    waiting = tasks.submit()
    tasks.wait_started(running)
    worker = pool.processes[0]
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(20) == 0, log_of(pool)
    assert tasks.status(running) == TaskStatus.COMPLETED
    assert tasks.status(waiting) not in (TaskStatus.RUNNING, TaskStatus.COMPLETED)
    assert not tasks.conn.get(f"itest:runs:{waiting.id}")
    assert "Traceback" not in log_of(pool)


def _assert_one_line_exit(pool: Workers, started: float, needle: str, within: float) -> float:
    worker = pool.processes[0]
    code = worker.wait(within + 10)
    elapsed = time.monotonic() - started
    log = log_of(pool)
    assert code == FORCED_EXIT_STATUS, log
    assert len(lines_with(log, needle)) == 1, log
    assert "Traceback" not in log, log
    assert elapsed < within, (elapsed, log)
    return elapsed


def test_shutdown_grace_bounds_a_task_that_takes_too_long(pool: Workers, tasks: Tasks) -> None:
    task = _busy(pool, tasks, sleep=30, grace="1.5")
    started = time.monotonic()
    pool.processes[0].send_signal(signal.SIGTERM)
    elapsed = _assert_one_line_exit(pool, started, "grace of 1.5s ran out", within=4)
    assert elapsed >= 1.4
    assert tasks.status(task) == TaskStatus.RUNNING  # left for its lease to recover


def test_second_sigterm_exits_at_once(pool: Workers, tasks: Tasks) -> None:
    task = _busy(pool, tasks, sleep=30)
    worker = pool.processes[0]
    worker.send_signal(signal.SIGTERM)
    time.sleep(1.5)  # not a duplicate delivery of the first (those are ignored for 1 s)
    assert worker.poll() is None
    started = time.monotonic()
    worker.send_signal(signal.SIGTERM)
    _assert_one_line_exit(pool, started, "second SIGTERM", within=1.5)
    assert tasks.status(task) == TaskStatus.RUNNING


def test_shutdown_grace_bounds_api_retries(
    pool: Workers, tasks: Tasks, api_server: ApiServer
) -> None:
    task = _busy(pool, tasks, sleep=1.5, grace="3")
    started = time.monotonic()
    pool.processes[0].send_signal(signal.SIGTERM)
    api_server.stop()  # the task ends while the API is down: its completion is retried
    try:
        elapsed = _assert_one_line_exit(pool, started, "grace of 3s ran out", within=6)
        assert elapsed >= 2.9
    finally:
        api_server.start()
    assert tasks.status(task) == TaskStatus.RUNNING


# ---- the supervisor ----------------------------------------------------------------------


def test_restart_delay_doubles_up_to_30s() -> None:
    assert [restart_delay(n) for n in range(1, 8)] == [1, 2, 4, 8, 16, 30, 30]


def _supervisor(
    env: dict[str, str], log: Path, *apps: str, concurrency: int = 2
) -> subprocess.Popen[bytes]:
    args = [str(BIN / "foreman-worker"), "--queue", QUEUE, "--concurrency", str(concurrency)]
    for app in apps:
        args += ["--app", app]
    with log.open("ab") as out:
        return subprocess.Popen(args, env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)


def test_supervisor_restarts_crashing_workers_with_growing_delays(
    env: dict[str, str], tmp_path: Path
) -> None:
    crashes = tmp_path / "crashes"
    log = tmp_path / "supervisor.log"
    supervisor = _supervisor(
        {**env, "ITEST_CRASH_LOG": str(crashes)}, log, APP, "tests.worker_apps.crash_in_children"
    )
    restarts = re.compile(r"exited with 2 after ([\d.]+)s; starting another in ([\d.]+)s")
    try:
        deadline = time.monotonic() + 60  # a worker process may take seconds to start
        while len(restarts.findall(log.read_text())) < 4:
            assert time.monotonic() < deadline, log.read_text()
            assert supervisor.poll() is None, log.read_text()
            time.sleep(0.1)
        supervisor.send_signal(signal.SIGTERM)  # ends the backoff: no restart, no wait
        assert supervisor.wait(10) == 0, log.read_text()
    finally:
        stop_process(supervisor, signal.SIGKILL)
    text = log.read_text()
    delays = [float(delay) for _lived, delay in restarts.findall(text)]
    # two worker processes, each restarted after 1 s, then after 2 s: not in a tight loop
    assert delays[:4] == [1, 1, 2, 2], text
    assert delays == sorted(delays), text
    assert len(crashes.read_text().splitlines()) <= len(delays) + 2, text


def test_supervisor_forwards_a_second_signal(
    env: dict[str, str], tmp_path: Path, tasks: Tasks
) -> None:
    log = tmp_path / "supervisor.log"
    supervisor = _supervisor(env, log, APP)
    try:
        task = tasks.submit(sleep=30)
        tasks.wait_started(task)
        supervisor.send_signal(signal.SIGTERM)
        time.sleep(1.5)  # the idle worker process has left; the busy one is finishing
        assert supervisor.poll() is None, log.read_text()
        started = time.monotonic()
        supervisor.send_signal(signal.SIGTERM)
        assert supervisor.wait(10) == FORCED_EXIT_STATUS, log.read_text()
        assert time.monotonic() - started < 4  # not the 30 s grace
    finally:
        stop_process(supervisor, signal.SIGKILL)
    text = log.read_text()
    assert len(lines_with(text, "second SIGTERM")) == 1, text
    assert "Traceback" not in text, text
    assert tasks.status(task) == TaskStatus.RUNNING
