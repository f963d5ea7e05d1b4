"""The worker end to end: a real API server, real Redis, real ``foreman-worker`` processes.

Each test gets an empty database of the session's own Redis (the ``redis_url`` fixture).
The two-API test also makes a throwaway PostgreSQL database, dropped afterwards.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
import redis
import sqlalchemy as sa
from rq import Queue

from foreman_api.schemas import Run, Task, TaskStatus
from foreman_api.storage import tables
from foreman_api.storage.engine import create_engine
from foreman_worker import ForemanClient, enqueue, resubmit, submit
from foreman_worker.enqueue import RUN_TASK
from tests.services import free_port, stop_process, throwaway_postgres_database

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
QUEUE = "itest"
APP = "tests.worker_apps.handlers"
TERMINAL = {TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED}


@dataclass
class ApiServer:
    env: dict[str, str]
    port: int
    key: str
    log: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [
                    str(BIN / "foreman-api"),
                    "serve",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                ],
                env=self.env,
                cwd=ROOT,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return
            if self.process.poll() is not None:
                break
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"API server did not start:\n{self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process)
            self.process = None


def prepare_database(env: dict[str, str], org: str = "itest", rate_limit: str = "unlimited") -> str:
    """Migrate the database of ``env`` and create a worker key; return the key."""
    subprocess.run([str(BIN / "foreman-api"), "migrate"], env=env, check=True, capture_output=True)
    created = subprocess.run(
        [
            str(BIN / "foreman-api"),
            "keys",
            "create",
            "--org",
            org,
            "--name",
            "worker",
            "--permissions",
            "*",
            "--rate-limit",
            rate_limit,
            "--quiet",
        ],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    return created.stdout.strip()


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    home = tmp_path_factory.mktemp("api")
    env = {
        **os.environ,
        "FOREMAN_DATABASE_URL": f"sqlite:///{home / 'foreman.db'}",
        "PYTHONPATH": str(ROOT),
    }
    env.pop("FOREMAN_REDIS_URL", None)
    key = prepare_database(env)
    server = ApiServer(env=env, port=free_port(), key=key, log=home / "api.log")
    try:
        server.start()
        yield server
    finally:
        server.stop()


@dataclass
class Workers:
    env: dict[str, str]
    log_dir: Path
    queue: str = QUEUE
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def start(self, count: int = 1) -> None:
        """Start ``count`` workers and wait until each listens on its queue.

        RQ installs its signal handlers right after it logs that; until then a SIGTERM
        kills a worker that is still starting (slow on a loaded machine) instead of
        stopping it."""
        started: list[tuple[subprocess.Popen[bytes], Path]] = []
        for _ in range(count):
            path = self.log_dir / f"worker-{len(self.processes)}.log"
            log = path.open("ab")
            self.processes.append(
                subprocess.Popen(
                    [
                        str(BIN / "foreman-worker"),
                        "--app",
                        APP,
                        "--queue",
                        self.queue,
                        "--log-level",
                        "INFO",
                    ],
                    env=self.env,
                    cwd=ROOT,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )
            started.append((self.processes[-1], path))
        deadline = time.monotonic() + 30
        for process, path in started:
            while "Listening on" not in path.read_text(errors="replace"):
                assert process.poll() is None, self.logs()
                assert time.monotonic() < deadline, f"a worker did not start:\n{self.logs()}"
                time.sleep(0.05)

    def logs(self) -> str:
        return "\n".join(p.read_text()[-2000:] for p in sorted(self.log_dir.glob("worker-*.log")))

    def stop(self) -> None:
        for process in self.processes:
            stop_process(process)


@pytest.fixture
def workers(api: ApiServer, redis_url: str, tmp_path: Path) -> Iterator[Workers]:
    env = {
        **os.environ,
        "FOREMAN_API_URL": api.url,
        "FOREMAN_API_KEY": api.key,
        "FOREMAN_REDIS_URL": redis_url,
        "PYTHONPATH": str(ROOT),
        # A lost task comes back when its lease runs out: 4 s (renewed every second)
        # rather than the default 10 s, so recovery tests wait less.
        "FOREMAN_WORKER_LEASE": "4",
        "FOREMAN_WORKER_HEARTBEAT_INTERVAL": "1",
        "FOREMAN_WORKER_REAP_INTERVAL": "1",
    }
    pool = Workers(env=env, log_dir=tmp_path)
    try:
        pool.start(2)
        yield pool
    finally:
        pool.stop()


@pytest.fixture
def client(api: ApiServer) -> Iterator[ForemanClient]:
    with ForemanClient(api.url, api.key) as c:
        yield c


@pytest.fixture
def conn(redis_url: str) -> Iterator[redis.Redis]:
    c = redis.Redis.from_url(redis_url)
    yield c
    c.close()


@pytest.fixture
def new_task(client: ForemanClient, conn: redis.Redis) -> Callable[..., Task]:
    run = client.create_run({"test": True}).unwrap()

    def make(type_: str, input_data: Any = None, **options: Any) -> Task:
        return submit(
            run.id, type_, input_data, client=client, queue=QUEUE, connection=conn, **options
        )

    return make


def wait_terminal(client: ForemanClient, task: Task, timeout: float = 30) -> Task:
    deadline = time.monotonic() + timeout
    while True:
        current = client.get_task(task.id).unwrap()
        if current.status in TERMINAL or time.monotonic() > deadline:
            return current
        time.sleep(0.1)


def runs(conn: redis.Redis, task: Task) -> int:
    return int(conn.get(f"itest:runs:{task.id}") or 0)


def test_many_tasks_complete_and_run_counters_match(
    workers: Workers, client: ForemanClient, conn: redis.Redis
) -> None:
    count = 500
    run = client.create_run({"bulk": count}).unwrap()
    for i in range(count):
        submit(run.id, "itest.noop", {"i": i}, client=client, queue=QUEUE, connection=conn)
    deadline = time.monotonic() + 45
    current: Run = client.get_run(run.id).unwrap()
    while current.completed_tasks + current.failed_tasks < count and time.monotonic() < deadline:
        time.sleep(0.25)
        current = client.get_run(run.id).unwrap()
    assert (current.total_tasks, current.completed_tasks, current.failed_tasks) == (count, count, 0)
    page = client.list_tasks(run_id=run.id, limit=1000).unwrap()
    assert len(page.data) == page.pagination.total == count
    assert all(t.status == TaskStatus.COMPLETED for t in page.data)
    echoed = [cast(dict[str, Any], t.output_data)["echo"]["i"] for t in page.data]
    assert sorted(echoed) == list(range(count))
    assert rq_records_left(conn, {str(t.queue_job_id) for t in page.data}) == []


def rq_records_left(conn: redis.Redis, job_ids: set[str], wait: float = 5) -> list[str]:
    """RQ's keys that still hold one of these jobs (its hash, its executions, an entry in a
    started registry or an intermediate list), once the workers have had ``wait`` seconds
    to write their end-of-job records."""

    def left() -> list[str]:
        found = [
            key.decode()
            for pattern in ("rq:job:*", "rq:execution:*", "rq:executions:*")
            for key in conn.scan_iter(pattern)
            if key.decode().split(":")[2] in job_ids
        ]
        for key in conn.scan_iter("rq:wip:*"):
            found += [key.decode() for m in conn.zrange(key, 0, -1) if m.decode()[:32] in job_ids]
        for key in conn.scan_iter("rq:queue:*:intermediate"):
            found += [key.decode() for m in conn.lrange(key, 0, -1) if m.decode() in job_ids]
        return found

    deadline = time.monotonic() + wait
    while (found := left()) and time.monotonic() < deadline:
        time.sleep(0.1)
    return found


def test_sigkilled_worker_task_completes_on_the_other(
    workers: Workers,
    client: ForemanClient,
    conn: redis.Redis,
    new_task: Callable[..., Task],
) -> None:
    task = new_task("itest.counted", {"sleep": 3})
    deadline = time.monotonic() + 10
    while not conn.lrange(f"itest:pids:{task.id}", 0, -1) and time.monotonic() < deadline:
        time.sleep(0.05)
    [victim] = [int(p) for p in conn.lrange(f"itest:pids:{task.id}", 0, -1)]
    os.kill(victim, signal.SIGKILL)
    killed_at = time.monotonic()
    done = wait_terminal(client, task, timeout=40)
    assert done.status == TaskStatus.COMPLETED, (done, workers.logs())
    assert time.monotonic() - killed_at < 30
    pids = [int(p) for p in conn.lrange(f"itest:pids:{task.id}", 0, -1)]
    assert len(pids) == 2 and pids[1] != victim
    assert done.retry_count == 1


def test_api_outage_under_load_loses_nothing(
    api: ApiServer, workers: Workers, client: ForemanClient, new_task: Callable[..., Task]
) -> None:
    tasks = [new_task("itest.counted", {"sleep": 0.05}) for _ in range(60)]
    time.sleep(0.5)
    api.stop()
    time.sleep(5)
    api.start()
    done = [wait_terminal(client, t, timeout=50) for t in tasks]
    assert [t.status for t in done] == [TaskStatus.COMPLETED] * len(tasks), workers.logs()
    assert all(cast(dict[str, Any], t.output_data)["runs"] >= 1 for t in done)


def test_duplicate_enqueue_runs_the_handler_once(
    workers: Workers,
    client: ForemanClient,
    conn: redis.Redis,
    new_task: Callable[..., Task],
) -> None:
    for process in workers.processes:  # pause consumption so both enqueues meet a waiting job
        process.send_signal(signal.SIGSTOP)
    try:
        task = new_task("itest.counted")
        assert enqueue(task, queue=QUEUE, connection=conn) is None
    finally:
        for process in workers.processes:
            process.send_signal(signal.SIGCONT)
    done = wait_terminal(client, task)
    assert done.status == TaskStatus.COMPLETED
    time.sleep(1)
    assert runs(conn, task) == 1


def test_a_worker_claims_a_task_as_it_pops_the_job_and_a_lost_job_record_loses_nothing(
    workers: Workers,
    client: ForemanClient,
    conn: redis.Redis,
    new_task: Callable[..., Task],
) -> None:
    """A job id names its task, so a worker claims the task the moment it pops the id,
    before RQ reads the job. Here Redis has lost the job's record but not its id on the
    queue: the task is claimed under that job, which never runs; when the lease runs out
    the task is recovered, queued again and run, once."""
    for process in workers.processes:
        process.send_signal(signal.SIGSTOP)
    try:
        task = new_task("itest.counted")
        job_id = conn.get(f"foreman:enqueued:{task.id}")
        assert job_id is not None
        assert conn.delete(f"rq:job:{job_id.decode()}") == 1
    finally:
        for process in workers.processes:
            process.send_signal(signal.SIGCONT)
    deadline = time.monotonic() + 10
    while (seen := client.get_task(task.id).unwrap()).status is TaskStatus.QUEUED:
        assert time.monotonic() < deadline, workers.logs()
        time.sleep(0.02)
    assert seen.status is TaskStatus.RUNNING and seen.queue_job_id == job_id.decode()
    assert runs(conn, task) == 0

    done = wait_terminal(client, task)
    assert done.status is TaskStatus.COMPLETED, workers.logs()
    assert done.queue_job_id != job_id.decode()
    assert runs(conn, task) == 1


def test_a_job_enqueued_by_an_older_sdk_still_runs(
    workers: Workers, client: ForemanClient, conn: redis.Redis
) -> None:
    """Before job ids named their task, a job id was a bare uuid: such a job (left on a
    queue across an upgrade) is claimed when RQ starts it, and runs once."""
    run = client.create_run({"test": True}).unwrap()
    task = client.create_task(run.id, "itest.counted", queue=QUEUE, status="queued").unwrap()
    job_id = uuid.uuid4().hex
    Queue(f"foreman:itest:{QUEUE}", connection=conn).enqueue(
        RUN_TASK, str(task.id), job_id=job_id, result_ttl=0
    )
    done = wait_terminal(client, task)
    assert done.status is TaskStatus.COMPLETED, workers.logs()
    assert done.queue_job_id == job_id and runs(conn, task) == 1


def test_retries_then_success_and_failure_at_max_retries(
    workers: Workers,
    client: ForemanClient,
    conn: redis.Redis,
    new_task: Callable[..., Task],
) -> None:
    flaky = new_task("itest.flaky")
    failing = new_task("itest.always-fails", max_retries=2)
    done = wait_terminal(client, flaky)
    assert (done.status, done.retry_count, runs(conn, flaky)) == (TaskStatus.COMPLETED, 2, 3)
    assert done.output_data == {"attempt": 3}
    failed = wait_terminal(client, failing)
    assert (failed.status, failed.retry_count, runs(conn, failing)) == (TaskStatus.FAILED, 2, 3)
    assert isinstance(failed.error_data, dict)
    assert failed.error_data["type"] == "ValueError"
    assert failed.error_data["message"] == "never works" and failed.error_data["attempt"] == 3
    # every attempt is kept, with the worker that ran it and the error it ended with
    history = client.list_attempts(failing.id).unwrap().data
    assert [a.number for a in history] == [1, 2, 3]
    assert [a.outcome for a in history] == ["retrying", "retrying", "failed"]
    assert all(a.worker_id and a.queue_job_id and a.finished_at for a in history)
    assert [cast(dict[str, Any], a.error)["attempt"] for a in history] == [1, 2, 3]
    assert len({a.queue_job_id for a in history}) == 3
    flaky_history = client.list_attempts(flaky.id).unwrap().data
    assert [a.outcome for a in flaky_history] == ["retrying", "retrying", "completed"]


def test_a_failed_task_replayed_with_new_input_runs_again_and_completes(
    workers: Workers,
    client: ForemanClient,
    conn: redis.Redis,
    new_task: Callable[..., Task],
) -> None:
    task = new_task("itest.typed", {"x": 1, "y": "north"})
    failed = wait_terminal(client, task)
    assert failed.status is TaskStatus.FAILED
    assert client.get_run(task.run_id).unwrap().failed_tasks == 1
    replayed = resubmit(task.id, {"x": 1, "y": 2}, client=client, connection=conn)
    assert replayed.status is TaskStatus.QUEUED and replayed.input_data == {"x": 1, "y": 2}
    done = wait_terminal(client, task, timeout=15)  # enqueued at once, not by the reconciler
    assert (done.status, done.output_data) == (TaskStatus.COMPLETED, {"x": 2, "y": 1})
    run = client.get_run(task.run_id).unwrap()
    assert (run.total_tasks, run.completed_tasks, run.failed_tasks) == (1, 1, 0)
    history = client.list_attempts(task.id).unwrap().data
    assert [(a.number, a.outcome) for a in history] == [(1, "failed"), (2, "completed")]
    assert cast(dict[str, Any], history[0].error)["type"] == "InvalidInput"


def test_timeout_is_retried_then_fails_as_timeout_error(
    workers: Workers,
    client: ForemanClient,
    conn: redis.Redis,
    new_task: Callable[..., Task],
) -> None:
    task = new_task("itest.slow", max_retries=1)
    done = wait_terminal(client, task)
    assert (done.status, done.retry_count, runs(conn, task)) == (TaskStatus.FAILED, 1, 2)
    assert isinstance(done.error_data, dict) and done.error_data["type"] == "TimeoutError"


@pytest.mark.parametrize(
    ("type_", "input_data", "error_type", "ran"),
    [
        ("itest.no-such-type", None, "UnknownTaskType", 0),
        ("itest.typed", {"x": 1, "y": "north"}, "InvalidInput", 0),
        ("itest.non-json", None, "NonJsonOutput", 1),
        ("itest.bad-output", None, "InvalidOutput", 1),
    ],
)
def test_permanent_errors_fail_without_retry(
    workers: Workers,
    client: ForemanClient,
    conn: redis.Redis,
    new_task: Callable[..., Task],
    type_: str,
    input_data: Any,
    error_type: str,
    ran: int,
) -> None:
    task = new_task(type_, input_data)
    done = wait_terminal(client, task)
    assert (done.status, done.retry_count, runs(conn, task)) == (TaskStatus.FAILED, 0, ran)
    assert isinstance(done.error_data, dict) and done.error_data["type"] == error_type
    if error_type == "InvalidInput":
        assert "y" in str(done.error_data["message"])


def test_typed_input_is_validated_and_bad_input_fails_once_naming_the_field(
    workers: Workers,
    client: ForemanClient,
    conn: redis.Redis,
    new_task: Callable[..., Task],
) -> None:
    good = new_task("itest.lines", [{"sku": "a", "qty": 2}, {"sku": "b", "qty": "3"}])
    bad = new_task("itest.lines", [{"sku": "a", "qty": 2}, {"sku": "b", "qty": "three"}])
    done = wait_terminal(client, good)
    assert (done.status, done.output_data) == (TaskStatus.COMPLETED, {"qty": 5})
    failed = wait_terminal(client, bad)
    assert (failed.status, failed.retry_count, runs(conn, bad)) == (TaskStatus.FAILED, 0, 0)
    assert failed.max_retries == 3  # retries were left: invalid input is not retried
    # The workers' log says what happened to each task, and nothing says a failed one is OK.
    log = workers.logs()
    assert re.search(rf"task {good.id} \(itest.lines\) attempt 1 completed after", log), log
    assert re.search(
        rf"task {bad.id} \(itest.lines\) attempt 1 failed after [\d.]+s: InvalidInput: ", log
    ), log
    assert "Job OK" not in log and "Successfully completed" not in log
    error = cast(dict[str, Any], failed.error_data)
    assert error["type"] == "InvalidInput" and error["attempt"] == 1
    assert error["errors"] == [
        {
            "field": "1.qty",
            "message": "Input should be a valid integer, unable to parse string as an integer",
        }
    ]
    assert error["message"].startswith(
        "inputData is not a valid list[Line] (parameter 'lines'): 1.qty"
    )
    history = client.list_attempts(bad.id).unwrap().data
    assert [(a.number, a.outcome) for a in history] == [(1, "failed")]


def test_cancelled_task_is_skipped(
    workers: Workers,
    client: ForemanClient,
    conn: redis.Redis,
) -> None:
    run = client.create_run({}).unwrap()
    task = client.create_task(run.id, "itest.counted").unwrap()
    client.update_task(task.id, status=TaskStatus.CANCELLED).unwrap()
    enqueue(task, queue=QUEUE, connection=conn)
    typed = submit(
        run.id, "itest.typed", {"x": 1, "y": 2}, client=client, queue=QUEUE, connection=conn
    )
    assert wait_terminal(client, typed).status == TaskStatus.COMPLETED  # the queue moved on
    assert client.get_task(task.id).unwrap().status == TaskStatus.CANCELLED
    assert runs(conn, task) == 0


def test_async_handler(
    workers: Workers, client: ForemanClient, new_task: Callable[..., Task]
) -> None:
    task = new_task("itest.async", {"n": 7})
    done = wait_terminal(client, task)
    assert done.status == TaskStatus.COMPLETED
    assert done.output_data == {"async": True, "data": {"n": 7}}


def test_workers_on_two_api_processes_sharing_postgres_and_redis(
    redis_url: str, tmp_path: Path
) -> None:
    """(j) Two ``foreman-api serve`` processes on one PostgreSQL database and one Redis, one
    worker per API: tasks submitted through both APIs, into two runs, all end ``completed``
    exactly once, and each run's counters equal the task table's counts."""
    per_run, queue = 150, "itest-two-apis"
    servers: list[ApiServer] = []
    pools: list[Workers] = []
    with throwaway_postgres_database() as database_url:
        env = {
            **os.environ,
            "FOREMAN_DATABASE_URL": database_url,
            "FOREMAN_REDIS_URL": redis_url,  # shared rate-limit counters
            "PYTHONPATH": str(ROOT),
        }
        key = prepare_database(env, rate_limit="100000/1m")
        try:
            for name in ("a", "b"):
                server = ApiServer(
                    env=env, port=free_port(), key=key, log=tmp_path / f"api-{name}.log"
                )
                servers.append(server)
                server.start()
            for name, server in zip(("a", "b"), servers, strict=True):
                log_dir = tmp_path / f"workers-{name}"
                log_dir.mkdir()
                worker_env = {
                    **os.environ,
                    "FOREMAN_API_URL": server.url,
                    "FOREMAN_API_KEY": key,
                    "FOREMAN_REDIS_URL": redis_url,
                    "PYTHONPATH": str(ROOT),
                }
                pools.append(Workers(env=worker_env, log_dir=log_dir, queue=queue))
            for pool in pools:
                pool.start(1)
            clients = [ForemanClient(server.url, key) for server in servers]
            conn = redis.Redis.from_url(redis_url)
            try:
                run_ids = [str(c.create_run({"api": i}).unwrap().id) for i, c in enumerate(clients)]
                submitted: list[Task] = []
                for i in range(2 * per_run):  # alternate the API and the run of every task
                    submitted.append(
                        submit(
                            run_ids[i % 2],
                            "itest.counted",
                            {"i": i},
                            client=clients[(i // 2) % 2],
                            queue=queue,
                            connection=conn,
                        )
                    )
                deadline = time.monotonic() + 60
                while time.monotonic() < deadline:
                    runs_now = [clients[i].get_run(rid).unwrap() for i, rid in enumerate(run_ids)]
                    if all(r.completed_tasks + r.failed_tasks >= per_run for r in runs_now):
                        break
                    time.sleep(0.25)
                logs = "\n".join(p.logs() for p in pools)
                for i, run_id in enumerate(run_ids):
                    run = clients[1 - i].get_run(run_id).unwrap()  # read through the other API
                    assert (run.total_tasks, run.completed_tasks, run.failed_tasks) == (
                        per_run,
                        per_run,
                        0,
                    ), logs
                    page = clients[i].list_tasks(run_id=run_id, limit=1000).unwrap()
                    assert page.pagination.total == len(page.data) == per_run
                    assert all(t.status == TaskStatus.COMPLETED for t in page.data), logs
                # each handler ran exactly once, and both workers (so both APIs) took part
                assert [runs(conn, t) for t in submitted] == [1] * len(submitted)
                pids = {int(conn.lindex(f"itest:pids:{t.id}", 0) or 0) for t in submitted}
                assert pids == {p.processes[0].pid for p in pools}
            finally:
                conn.close()
                for c in clients:
                    c.close()
            # the task table, read directly, agrees with the run counters
            engine = create_engine(database_url, pool_size=1)
            try:
                with engine.connect() as db:
                    by_status: dict[str, int] = dict(
                        db.execute(
                            sa.select(tables.tasks.c.status, sa.func.count())
                            .where(tables.tasks.c.run_id.in_(run_ids))
                            .group_by(tables.tasks.c.status)
                        ).all()
                    )
                    counters = db.execute(
                        sa.select(
                            sa.func.sum(tables.runs.c.total_tasks),
                            sa.func.sum(tables.runs.c.completed_tasks),
                            sa.func.sum(tables.runs.c.failed_tasks),
                        ).where(tables.runs.c.id.in_(run_ids))
                    ).one()
            finally:
                engine.dispose()
            assert by_status == {"completed": 2 * per_run}
            assert tuple(counters) == (2 * per_run, 2 * per_run, 0)
        finally:
            for pool in pools:
                pool.stop()
            for server in servers:
                server.stop()


def test_startup_errors_are_one_line(api: ApiServer, redis_url: str) -> None:
    base = {
        **os.environ,
        "FOREMAN_API_URL": api.url,
        "FOREMAN_API_KEY": api.key,
        "FOREMAN_REDIS_URL": redis_url,
        "PYTHONPATH": str(ROOT),
    }
    cases = [
        ({"FOREMAN_API_KEY": "fmn_dev_" + "x" * 40}, APP, "rejected FOREMAN_API_KEY"),
        (
            {"FOREMAN_API_URL": f"http://127.0.0.1:{free_port()}"},
            APP,
            "cannot reach the Foreman API",
        ),
        # (an unreachable Redis is waited for: tests/test_worker_resilience.py)
        ({"FOREMAN_REDIS_URL": "nosuch://x"}, APP, "FOREMAN_REDIS_URL"),
        ({}, "json", "no task handlers registered"),
        # a module not found where the worker runs: the message says where it looked
        ({}, "no_such_module_xyz", f"no module 'no_such_module_xyz' in {ROOT}"),
        ({}, "no_such_module_xyz", "run foreman-worker from the directory that holds it"),
    ]
    for overrides, app, message in cases:
        result = subprocess.run(
            [str(BIN / "foreman-worker"), "--app", app, "--burst"],
            env={**base, **overrides},
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert result.returncode == 2, (app, overrides, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and message in lines[0], result.stderr
        assert "Traceback" not in result.stderr


@pytest.mark.integration
def test_sigterm_lets_the_running_task_finish(
    workers: Workers, client: ForemanClient, conn: redis.Redis, new_task: Callable[..., Task]
) -> None:
    task = new_task("itest.counted", {"sleep": 2})
    deadline = time.monotonic() + 15
    while client.get_task(task.id).unwrap().status != TaskStatus.RUNNING:
        assert time.monotonic() < deadline, workers.logs()
        time.sleep(0.05)
    for process in workers.processes:
        process.send_signal(signal.SIGTERM)
    for process in workers.processes:
        assert process.wait(20) == 0, workers.logs()
    # Both workers have exited: the task that was running when they were told to stop
    # finished first, exactly once, with its output recorded.
    finished = client.get_task(task.id).unwrap()
    assert finished.status == TaskStatus.COMPLETED, finished
    assert finished.output_data is not None
    assert runs(conn, task) == 1
