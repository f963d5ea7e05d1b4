"""Fault injection with real processes: does every task still finish, exactly once?

    .venv/bin/python bench/chaos.py [--tasks 500] [--only NAME …] [--workers 3] [--ci]
                                    [--keep-logs] [--verbose]

Each experiment builds its own little deployment and throws it away afterwards:

* a throwaway PostgreSQL database ``foreman_chaos_<random>`` on ``FOREMAN_CHAOS_POSTGRES_URL``
  (default ``postgresql://postgres@127.0.0.1:5432/postgres``), dropped ``WITH (FORCE)``;
* its own ``redis-server`` on a free port, without persistence, in a temporary directory
  (the machine's Redis is never touched);
* ``foreman-api migrate``, ``foreman-api keys create …`` and one ``foreman-api serve``;
* ``--workers`` (3) ``foreman-worker --app bench.chaos_app`` processes.

It submits ``--tasks`` tasks of mixed durations (mostly 0-300 ms, 5 % 1-3 s; 3 % fail their
first attempt, 2 % fail every attempt and end ``failed``) over four runs, starts the workers,
injects the experiment's fault while they work, then waits until every task is terminal or
nothing has finished for ``stall_seconds`` (60 s; the CI version 30 s). It reads the
outcome straight from PostgreSQL and reports:

* **stranded** — tasks not terminal at the end (must be 0);
* **stale outcome** — completed tasks whose ``outputData.jobId`` (the RQ job that ran the attempt,
  see ``bench/chaos_app.py``) is not the task's ``queueJobId``: an outcome recorded by an
  attempt that no longer held the claim, i.e. recorded twice or by the wrong attempt (must be 0);
* **counters** — each run's ``totalTasks``/``completedTasks``/``failedTasks`` against
  counts of the task table, read in one snapshot (must be exact);
* **unexpected** — terminal tasks whose status is not the planned one (information);
* **recovery** — for the tasks the fault touched, seconds from the fault until the task was
  claimed by another job or became terminal (p50 / max over those that recovered);
* **deaths** — worker processes that exited without the harness killing them.

Experiments (``--only`` takes these names): ``none``, ``kill-workers``, ``pause-worker``,
``redis-flush``, ``redis-restart``, ``kill-api``, ``postgres-outage``, ``sigterm-twice``;
see :data:`EXPERIMENTS`. ``tests/test_chaos.py`` runs all but ``none`` at :data:`CI_SCALE`
(``--ci`` here). ``--keep-logs`` keeps each experiment's directory (API, worker and Redis
logs, the handlers' notes); ``--verbose`` prints every experiment's events, not only the
failed ones'. The exit status is 0 when every experiment met the bar. The script stops by
itself (every wait has a deadline) and stops every process it started, also on Ctrl-C,
SIGTERM or an error.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import json
import logging
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import FrameType
from typing import Any

import httpx
import psycopg
import redis
from sqlalchemy.engine import make_url

from foreman_worker import ForemanClient, RetryPolicy, submit

log = logging.getLogger("chaos")

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
APP = "bench.chaos_app"
QUEUE = "chaos"
TASK_TYPE = "chaos.work"
MAX_RETRIES = 10
NOTES_ENV = "CHAOS_NOTES_DIR"
ORG = "chaos"
TERMINAL = ("completed", "failed", "cancelled")
POSTGRES_ADMIN_URL = os.environ.get(
    "FOREMAN_CHAOS_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
LIMITED_RATE = "50/1m"
"""Rate limit of the worker key in ``sigterm-twice``."""


class HarnessError(RuntimeError):
    """The harness could not set up or drive an experiment (not a finding about Foreman)."""


@dataclass(frozen=True)
class Scale:
    """How big and how long: :data:`FULL_SCALE` for the script, :data:`CI_SCALE` for tests."""

    tasks: int = 500
    runs: int = 4
    workers: int = 3
    long_fraction: float = 0.05
    stall_seconds: float = 60.0
    """Stop waiting when no task has become terminal for this long."""
    deadline_seconds: float = 600.0
    """Stop waiting after this long in any case."""
    fault_delay: float = 2.0
    """Seconds of work before the first fault."""
    kill_every: float = 3.0
    kills: int = 8
    pause_seconds: float = 15.0
    """How long ``pause-worker`` stops a worker that held no task."""
    pause_max_seconds: float = 45.0
    """The longest ``pause-worker`` waits for another job to claim the victim's task."""
    api_kills: int = 2
    api_down_seconds: float = 1.0
    outage_seconds: float = 5.0
    redis_down_seconds: float = 1.0
    seed: int = 6
    worker_timing: tuple[tuple[str, str], ...] = ()
    """Worker settings (environment) other than the defaults, e.g. a shorter lease."""


FULL_SCALE = Scale()
CI_SCALE = Scale(
    tasks=60,
    stall_seconds=30.0,
    deadline_seconds=120.0,
    fault_delay=1.5,
    kill_every=2.0,
    kills=3,
    api_kills=1,
    # A shorter lease (renewed every second) so that recoveries, which wait for leases to
    # run out, take seconds less; the protocol is the same.
    worker_timing=(
        ("FOREMAN_WORKER_LEASE", "5"),
        ("FOREMAN_WORKER_HEARTBEAT_INTERVAL", "1"),
        ("FOREMAN_WORKER_REAP_INTERVAL", "1"),
        ("FOREMAN_WORKER_SCAN_INTERVAL", "3"),
    ),
)


# --------------------------------------------------------------------------- processes

_children: list[subprocess.Popen[bytes]] = []
"""Every process the harness started; :func:`stop_all` ends those still running."""
_children_lock = threading.Lock()


def spawn(argv: list[str], env: dict[str, str], log_file: Path) -> subprocess.Popen[bytes]:
    """Start a process in its own session (so signals reach its whole group), logging to a file."""
    with log_file.open("ab") as out:
        process = subprocess.Popen(
            argv, env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    with _children_lock:
        _children.append(process)
    return process


def signal_group(process: subprocess.Popen[bytes], sig: int) -> None:
    """Send ``sig`` to the process group of ``process`` (gone already is fine)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, sig)


def terminate(processes: list[subprocess.Popen[bytes]], grace: float = 3.0) -> None:
    """SIGCONT + SIGTERM every process, wait up to ``grace`` seconds, then SIGKILL the rest."""
    for process in processes:
        if process.poll() is None:
            signal_group(process, signal.SIGCONT)
            signal_group(process, signal.SIGTERM)
    deadline = time.monotonic() + grace
    for process in processes:
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(max(deadline - time.monotonic(), 0.01))
    for process in processes:
        signal_group(process, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(5)


def stop_all() -> None:
    """Stop every process the harness started that still runs (idempotent)."""
    with _children_lock:
        alive = [p for p in _children if p.poll() is None]
        _children.clear()
    terminate(alive, grace=2.0)


atexit.register(stop_all)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def log_tail(path: Path, chars: int = 2000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return ""


# --------------------------------------------------------------------------- services


@contextlib.contextmanager
def throwaway_database(admin_url: str = POSTGRES_ADMIN_URL) -> Iterator[str]:
    """Create a PostgreSQL database, yield its URL, drop it ``WITH (FORCE)`` afterwards."""
    name = f"foreman_chaos_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin_url, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(admin_url, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def postgres_problem(admin_url: str = POSTGRES_ADMIN_URL) -> str | None:
    """Why PostgreSQL cannot be used for experiments, or None when it can."""
    try:
        with psycopg.connect(admin_url, autocommit=True, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        return f"PostgreSQL at {admin_url} is not reachable: {exc}"
    return None


@dataclass
class RedisServer:
    """A private ``redis-server`` without persistence, which can be flushed or restarted."""

    workdir: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        argv = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        argv += ["--appendonly", "no", "--dir", str(self.workdir), "--daemonize", "no"]
        self.process = spawn(argv, dict(os.environ), self.workdir / "redis.log")
        client = redis.Redis(port=self.port, socket_connect_timeout=0.5)
        deadline = time.monotonic() + 10
        try:
            while True:
                with contextlib.suppress(redis.RedisError):
                    if client.ping():
                        return
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise HarnessError(f"redis-server did not start\n{self._log()}")
                time.sleep(0.05)
        finally:
            client.close()

    def stop(self) -> None:
        if self.process is not None:
            terminate([self.process], grace=0.0)
            self.process = None

    def restart(self, down_seconds: float) -> None:
        """Kill the server (its data is gone: no persistence) and start an empty one."""
        self.stop()
        time.sleep(down_seconds)
        self.start()

    def flushall(self) -> None:
        client = redis.Redis(port=self.port)
        try:
            client.flushall()
        finally:
            client.close()

    def _log(self) -> str:
        return log_tail(self.workdir / "redis.log")


def rq_current_job(redis_url: str, pid: int) -> str | None:
    """The job that RQ's worker registry (``rq:worker:*`` hashes) says process ``pid`` runs."""
    client = redis.Redis.from_url(redis_url, socket_timeout=2, socket_connect_timeout=2)
    try:
        for key in client.scan_iter("rq:worker:*"):
            with contextlib.suppress(redis.ResponseError, ValueError):
                worker_pid, job = client.hmget(key, "pid", "current_job")
                if worker_pid is not None and int(worker_pid) == pid and job:
                    return job.decode() if isinstance(job, bytes) else str(job)
    except redis.RedisError:
        return None
    finally:
        client.close()
    return None


def _drop(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()


class TcpProxy:
    """A TCP forwarder from a local port to ``target`` that can cut and refuse connections.

    Put between the API and PostgreSQL, :meth:`cut` makes the database unreachable for the
    API only: open connections are closed and new ones are closed as soon as they are
    accepted, until :meth:`restore`. The machine's PostgreSQL keeps running for everyone else.
    """

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.2)
        self.port = int(self._listener.getsockname()[1])
        self._open = threading.Event()
        self._open.set()
        self._closed = threading.Event()
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._thread = threading.Thread(target=self._accept_loop, name="chaos-proxy", daemon=True)
        self._thread.start()

    def cut(self) -> int:
        """Close every open connection and refuse new ones; return how many were closed."""
        self._open.clear()
        with self._lock:
            sockets = list(self._sockets)
            self._sockets.clear()
        for sock in sockets:
            _drop(sock)
        return len(sockets) // 2

    def restore(self) -> None:
        self._open.set()

    def close(self) -> None:
        self._closed.set()
        self.cut()
        self._thread.join(timeout=2)
        self._listener.close()

    def _accept_loop(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            if not self._open.is_set():
                _drop(client)
                continue
            self._connect(client)

    def _connect(self, client: socket.socket) -> None:
        try:
            upstream = socket.create_connection(self.target, timeout=5)
        except OSError:
            _drop(client)
            return
        client.settimeout(None)
        upstream.settimeout(None)
        with self._lock:
            self._sockets.update((client, upstream))
        for src, dst in ((client, upstream), (upstream, client)):
            threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            with self._lock:
                self._sockets.discard(src)
                self._sockets.discard(dst)
            _drop(src)
            _drop(dst)


def foreman_api(args: list[str], env: dict[str, str]) -> str:
    """Run a ``foreman-api`` command to completion; return its stdout."""
    done = subprocess.run(
        [str(BIN / "foreman-api"), *args], env=env, cwd=ROOT, capture_output=True, text=True,
        timeout=120, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise HarnessError(f"foreman-api {args[0]} failed: {done.stderr.strip()[-2000:]}")
    return done.stdout.strip()


def create_key(env: dict[str, str], name: str, rate_limit: str) -> str:
    """A new all-permissions key of organisation :data:`ORG`."""
    return foreman_api(
        ["keys", "create", "--org", ORG, "--name", name, "--permissions", "*",
         "--rate-limit", rate_limit, "--quiet"],
        env,
    )  # fmt: skip


@dataclass
class ApiServer:
    """One ``foreman-api serve`` process on a fixed port, which can be killed and restarted."""

    env: dict[str, str]
    log_file: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> None:
        argv = [str(BIN / "foreman-api"), "serve", "--host", "127.0.0.1", "--port", str(self.port)]
        self.process = spawn(argv, self.env, self.log_file)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.process.poll() is None:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return
            time.sleep(0.1)
        raise HarnessError(
            f"the API did not start (log: {self.log_file})\n{log_tail(self.log_file)}"
        )

    def kill(self) -> None:
        if self.process is not None:
            signal_group(self.process, signal.SIGKILL)
            self.process.wait(5)
            self.process = None

    def stop(self) -> None:
        if self.process is not None:
            terminate([self.process])
            self.process = None


# --------------------------------------------------------------------------- workers


@dataclass(frozen=True)
class Note:
    """One line of a worker's notes file (see ``bench/chaos_app.py``)."""

    kind: str
    job_id: str
    task_id: str
    pid: int
    ppid: int
    at: float
    sleep: float

    @classmethod
    def parse(cls, line: str) -> Note | None:
        parts = line.split()
        if len(parts) != 7:
            return None  # a line being written right now
        kind, job_id, task_id, pid, ppid, at, sleep = parts
        return cls(kind, job_id, task_id, int(pid), int(ppid), float(at), float(sleep))


@dataclass
class Worker:
    """A ``foreman-worker`` process and what the harness did to it."""

    process: subprocess.Popen[bytes]
    log_file: Path
    key_name: str
    expected_exit: bool = False
    """The harness killed or stopped it, so its exit is no finding."""

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None


@dataclass
class WorkerPool:
    """The experiment's ``foreman-worker`` processes and the notes their handlers write."""

    env: dict[str, str]
    keys: dict[str, str]
    workdir: Path
    workers: list[Worker] = field(default_factory=list)

    @property
    def notes_dir(self) -> Path:
        return self.workdir / "notes"

    def start(self, key_name: str = "main") -> Worker:
        log_file = self.workdir / f"worker-{len(self.workers)}.log"
        env = {**self.env, "FOREMAN_API_KEY": self.keys[key_name]}
        argv = [str(BIN / "foreman-worker"), "--app", APP, "--log-level", "INFO"]
        worker = Worker(spawn(argv, env, log_file), log_file, key_name)
        self.workers.append(worker)
        return worker

    def alive(self) -> list[Worker]:
        return [w for w in self.workers if w.alive()]

    def deaths(self) -> list[Worker]:
        """Workers that exited although the harness did not stop them."""
        return [w for w in self.workers if not w.alive() and not w.expected_exit]

    def notes(self, worker: Worker) -> list[Note]:
        """Notes of the handlers ``worker`` ran (in it, or in a child it forked)."""
        found: list[Note] = []
        for path in sorted(self.notes_dir.glob("*.log")):
            for line in path.read_text().splitlines():
                note = Note.parse(line)
                if note is not None and worker.pid in (note.pid, note.ppid):
                    found.append(note)
        return found

    def job_ids(self, worker: Worker) -> set[str]:
        return {note.job_id for note in self.notes(worker)}

    def current(self, worker: Worker) -> Note | None:
        """The handler ``worker`` is running now (its last note is a start), if any."""
        notes = self.notes(worker)
        return notes[-1] if notes and notes[-1].kind == "S" else None

    def wait_ready(self, timeout: float = 20.0) -> bool:
        """Wait until every worker has run a handler (True) or ``timeout`` passed (False).

        A worker that exits meanwhile is a :class:`HarnessError` (it could not start).
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            dead = [w for w in self.workers if not w.alive()]
            if dead:
                raise HarnessError(
                    f"worker {dead[0].pid} exited at start (log: {dead[0].log_file})\n"
                    + log_tail(dead[0].log_file)
                )
            if all(self.notes(w) for w in self.workers):
                return True
            time.sleep(0.1)
        return False

    def busy(self, timeout: float, *, long_first: bool = True) -> Worker | None:
        """A live worker in the middle of a handler, preferably a long one with time left."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            any_busy: Worker | None = None
            for worker in self.alive():
                note = self.current(worker)
                if note is None:
                    continue
                left = note.at + note.sleep - time.time()
                if not long_first or (note.sleep >= 1.0 and left > 0.5):
                    return worker
                any_busy = any_busy or worker
            if any_busy is not None and time.monotonic() > deadline - timeout / 2:
                return any_busy
            time.sleep(0.05)
        return None

    def kill(self, worker: Worker) -> None:
        worker.expected_exit = True
        signal_group(worker.process, signal.SIGKILL)
        worker.process.wait(5)

    def pause(self, worker: Worker) -> None:
        signal_group(worker.process, signal.SIGSTOP)

    def resume(self, worker: Worker) -> None:
        signal_group(worker.process, signal.SIGCONT)

    def sigterm(self, worker: Worker) -> None:
        worker.expected_exit = True
        signal_group(worker.process, signal.SIGTERM)

    def stop(self) -> None:
        for worker in self.workers:
            worker.expected_exit = True
        terminate([w.process for w in self.workers])


# --------------------------------------------------------------------------- the database


@dataclass(frozen=True)
class TaskRow:
    id: str
    run_id: str
    status: str
    queue_job_id: str | None
    retry_count: int
    output: Any


@dataclass(frozen=True)
class RunRow:
    id: str
    total: int
    completed: int
    failed: int


class Store:
    """Reads of the experiment's tables, straight from PostgreSQL (never through the proxy)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._conn = psycopg.connect(url, autocommit=True)
        self._lock = threading.Lock()

    def close(self) -> None:
        self._conn.close()

    def _rows(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        with self._lock:
            return self._conn.execute(sql, params).fetchall()

    def terminal_count(self) -> int:
        [(count,)] = self._rows("SELECT count(*) FROM tasks WHERE status = ANY(%s)", list(TERMINAL))
        return int(count)

    def running_held_by(self, job_ids: set[str]) -> dict[str, str | None]:
        """Running tasks whose claim is one of ``job_ids``: task id → job id."""
        rows = self._rows(
            "SELECT id::text, queue_job_id FROM tasks WHERE status = 'running'"
            " AND queue_job_id = ANY(%s)",
            sorted(job_ids),
        )
        return dict(rows)

    def in_status(self, statuses: list[str]) -> dict[str, str | None]:
        """Tasks in one of ``statuses``: task id → current job id."""
        rows = self._rows(
            "SELECT id::text, queue_job_id FROM tasks WHERE status = ANY(%s)", statuses
        )
        return dict(rows)

    def unfinished(self) -> dict[str, str | None]:
        return self.in_status(["pending", "queued", "running", "retrying"])

    def claims(self, task_ids: list[str]) -> dict[str, tuple[str, str | None]]:
        """Task id → (status, job id) for ``task_ids``."""
        rows = self._rows(
            "SELECT id::text, status, queue_job_id FROM tasks WHERE id::text = ANY(%s)", task_ids
        )
        return {task_id: (status, job) for task_id, status, job in rows}

    def snapshot(self) -> tuple[list[TaskRow], list[RunRow]]:
        """Every task and run, read in one REPEATABLE READ transaction."""
        with psycopg.connect(self.url) as conn:
            conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
            tasks = conn.execute(
                "SELECT id::text, run_id::text, status, queue_job_id, retry_count, output_data"
                " FROM tasks"
            ).fetchall()
            runs = conn.execute(
                "SELECT id::text, total_tasks, completed_tasks, failed_tasks FROM runs"
            ).fetchall()
        return [TaskRow(*row) for row in tasks], [RunRow(*row) for row in runs]


@dataclass
class Affected:
    """A task a fault touched, and when it next moved on."""

    task_id: str
    job_id: str | None
    fault_at: float
    recovered_at: float | None = None


class RecoveryTracker:
    """Polls the tasks a fault touched until each is claimed by another job or is terminal.

    A task counts as recovered when its ``queueJobId`` differs from the one it had at the
    fault (only a claim changes it) or its status is terminal.
    """

    def __init__(self, database_url: str, interval: float = 0.2) -> None:
        self._store = Store(database_url)
        self._interval = interval
        self._entries: list[Affected] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="chaos-tracker", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        self._store.close()

    def add(self, held: dict[str, str | None], fault_at: float) -> None:
        with self._lock:
            self._entries += [Affected(t, job, fault_at) for t, job in held.items()]

    def entries(self) -> list[Affected]:
        with self._lock:
            return list(self._entries)

    def latencies(self) -> list[float]:
        return sorted(
            e.recovered_at - e.fault_at for e in self.entries() if e.recovered_at is not None
        )

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            pending = [e for e in self.entries() if e.recovered_at is None]
            if not pending:
                continue
            try:
                now_claims = self._store.claims(sorted({e.task_id for e in pending}))
            except psycopg.Error:
                log.exception("recovery tracker: read failed")
                continue
            now = time.monotonic()
            for entry in pending:
                status, job = now_claims.get(entry.task_id, ("missing", entry.job_id))
                if status in TERMINAL or job != entry.job_id:
                    entry.recovered_at = now


# --------------------------------------------------------------------------- the cluster


@dataclass
class Cluster:
    """One experiment's deployment: database, Redis, API, workers, and what happened."""

    scale: Scale
    workdir: Path
    database_url: str
    redis: RedisServer
    api: ApiServer
    pool: WorkerPool
    store: Store
    tracker: RecoveryTracker
    keys: dict[str, str]
    proxy: TcpProxy | None = None
    started: float = field(default_factory=time.monotonic)
    events: list[str] = field(default_factory=list)
    rng: random.Random = field(default_factory=random.Random)

    def event(self, message: str) -> None:
        """Note what the harness did, with the time since the experiment started."""
        line = f"{time.monotonic() - self.started:6.1f}s {message}"
        self.events.append(line)
        log.info("%s", line)

    def held_by(self, worker: Worker) -> dict[str, str | None]:
        """Running tasks claimed by jobs that ``worker`` ran.

        The jobs are those its handlers noted, and the job RQ's worker registry says it
        runs now (which covers a job killed after its claim, before its handler started).
        """
        jobs = self.pool.job_ids(worker)
        current = rq_current_job(self.redis.url, worker.pid)
        return self.store.running_held_by(jobs | {current} if current else jobs)

    def track(self, held: dict[str, str | None], fault_at: float) -> None:
        self.tracker.add(held, fault_at)


def service_env(redis_url: str) -> dict[str, str]:
    """The environment of every process: this checkout first on the path, our own Redis."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "FOREMAN_REDIS_URL": redis_url}
    for name in ("FOREMAN_API_KEY", "FOREMAN_API_URL", "FOREMAN_DATABASE_URL"):
        env.pop(name, None)
    return env


def api_database(stack: contextlib.ExitStack, database_url: str, proxied: bool) -> TcpProxy | None:
    """A proxy in front of the database for the API (closed with ``stack``), if ``proxied``."""
    if not proxied:
        return None
    url = make_url(database_url)
    proxy = TcpProxy((url.host or "127.0.0.1", url.port or 5432))
    stack.callback(proxy.close)
    return proxy


@contextlib.contextmanager
def cluster(
    scale: Scale, workdir: Path, *, proxy_database: bool = False, limited_key: bool = False
) -> Iterator[Cluster]:
    """Build a deployment in ``workdir`` and tear all of it down afterwards."""
    (workdir / "notes").mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        database_url = stack.enter_context(throwaway_database())
        redis_server = RedisServer(workdir)
        stack.callback(redis_server.stop)
        redis_server.start()
        base = service_env(redis_server.url)
        admin_env = {**base, "FOREMAN_DATABASE_URL": database_url}
        foreman_api(["migrate"], admin_env)
        rates = {"main": "unlimited", **({"limited": LIMITED_RATE} if limited_key else {})}
        key_makers = stack.enter_context(ThreadPoolExecutor(len(rates)))  # while the API starts
        made = {
            n: key_makers.submit(create_key, admin_env, f"chaos-{n}", r) for n, r in rates.items()
        }
        proxy = api_database(stack, database_url, proxy_database)
        url = make_url(database_url)
        if proxy is not None:
            url = url.set(host="127.0.0.1", port=proxy.port)
        api_env = {**base, "FOREMAN_DATABASE_URL": url.render_as_string(hide_password=False)}
        api = ApiServer(api_env, workdir / "api.log")
        stack.callback(api.stop)
        api.start()
        keys = {name: future.result() for name, future in made.items()}
        worker_env = {
            **base,
            **dict(scale.worker_timing),
            "FOREMAN_API_URL": api.url,
            NOTES_ENV: str(workdir / "notes"),
        }
        pool = WorkerPool(worker_env, keys, workdir)
        stack.callback(pool.stop)
        store = stack.enter_context(contextlib.closing(Store(database_url)))
        tracker = RecoveryTracker(database_url)
        stack.callback(tracker.stop)
        yield Cluster(
            scale=scale,
            workdir=workdir,
            database_url=database_url,
            redis=redis_server,
            api=api,
            pool=pool,
            store=store,
            tracker=tracker,
            keys=keys,
            proxy=proxy,
            rng=random.Random(scale.seed),
        )


# --------------------------------------------------------------------------- the workload


@dataclass(frozen=True)
class TaskSpec:
    """One task to submit, and the status it should end in."""

    run: int
    input: dict[str, Any]
    max_retries: int
    expected: str


def plan(scale: Scale) -> list[TaskSpec]:
    """The tasks of an experiment: mixed durations, a few flaky and a few failing ones."""
    rng = random.Random(scale.seed)
    specs = []
    for i in range(scale.tasks):
        long = rng.random() < scale.long_fraction
        sleep = round(rng.uniform(1.0, 3.0) if long else rng.uniform(0.0, 0.3), 3)
        roll = rng.random()
        data: dict[str, Any] = {"i": i, "sleep": sleep}
        if roll < 0.02:
            spec = TaskSpec(i % scale.runs, {**data, "fail": "always"}, 1, "failed")
        elif roll < 0.05:
            spec = TaskSpec(i % scale.runs, {**data, "fail": "first"}, MAX_RETRIES, "completed")
        else:
            spec = TaskSpec(i % scale.runs, data, MAX_RETRIES, "completed")
        specs.append(spec)
    return specs


def submit_all(
    c: Cluster, specs: list[TaskSpec], start_workers: Callable[[], None]
) -> dict[str, str]:
    """Create the runs, submit every task; return task id → expected status.

    The workers are started (``start_workers``) once a first batch is on the queue: they
    need seconds to start, and by then the backlog only grows while the rest is submitted,
    so no run can run out of unfinished tasks (and finish) before all its tasks exist.
    """
    retry = RetryPolicy.patient(60.0, initial_wait=0.2, max_wait=2.0)
    conn = redis.Redis.from_url(c.redis.url)
    first = min(len(specs), 10 * c.scale.runs)
    with ForemanClient(c.api.url, c.keys["main"], retry=retry) as client:
        runs = [str(client.create_run({"chaos": i}).unwrap().id) for i in range(c.scale.runs)]

        def one(spec: TaskSpec) -> tuple[str, str]:
            task = submit(
                runs[spec.run], TASK_TYPE, spec.input, client=client, queue=QUEUE,
                max_retries=spec.max_retries, connection=conn,
            )  # fmt: skip
            return str(task.id), spec.expected

        quiet = _WithoutMessage("no live worker serves")  # true until the workers start
        logging.getLogger("foreman_worker.enqueue").addFilter(quiet)
        try:
            with ThreadPoolExecutor(4) as pool:
                submitted = dict(pool.map(one, specs[:first]))
                start_workers()
                submitted.update(pool.map(one, specs[first:]))
                return submitted
        finally:
            logging.getLogger("foreman_worker.enqueue").removeFilter(quiet)
            conn.close()


class _WithoutMessage(logging.Filter):
    """Drops log records whose message contains ``text``."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text

    def filter(self, record: logging.LogRecord) -> bool:
        return self.text not in record.getMessage()


def wait_settled(c: Cluster, total: int) -> bool:
    """Wait until all ``total`` tasks are terminal (True) or progress stalls or time is up."""
    start = last_change = time.monotonic()
    last = -1
    while True:
        done = c.store.terminal_count()
        now = time.monotonic()
        if done >= total:
            return True
        if done != last:
            last, last_change = done, now
        if now - last_change > c.scale.stall_seconds:
            c.event(f"gave up: no task finished for {c.scale.stall_seconds:g}s ({done}/{total})")
            return False
        if now - start > c.scale.deadline_seconds:
            c.event(f"gave up: deadline of {c.scale.deadline_seconds:g}s ({done}/{total})")
            return False
        time.sleep(0.5)


# --------------------------------------------------------------------------- the faults


def inject_none(c: Cluster) -> None:
    """No fault: the baseline."""


def inject_kill_workers(c: Cluster) -> None:
    """SIGKILL a random worker every few seconds and start a replacement."""
    for _ in range(c.scale.kills):
        time.sleep(c.scale.kill_every)
        alive = c.pool.alive()
        if not alive:
            c.event("no live worker to kill")
            break
        victim = c.rng.choice(alive)
        c.pool.kill(victim)
        at = time.monotonic()
        held = c.held_by(victim)
        c.track(held, at)
        c.event(f"SIGKILL worker {victim.pid}, which held {len(held)} running task(s)")
        c.pool.start()


def inject_pause_worker(c: Cluster) -> None:
    """SIGSTOP a busy worker past its lease; SIGCONT it once another job has claimed its task.

    The victim preferably runs a long (1-3 s) task. It stays stopped until every task it
    held has been claimed by another job or become terminal (which needs its lease to have
    expired), at most ``pause_max_seconds``; ``pause_seconds`` if it held none. Resumed at
    once, its attempt finishes while the new claim stands (the new attempt is still
    running), so recording that outcome is a write by a stale attempt, which fencing must
    refuse.
    """
    victim = c.pool.busy(timeout=10.0) or c.rng.choice(c.pool.alive())
    c.pool.pause(victim)
    at = time.monotonic()
    held = c.held_by(victim)
    c.track(held, at)
    c.event(f"SIGSTOP worker {victim.pid}, which held {len(held)} running task(s)")
    if held:
        deadline = at + c.scale.pause_max_seconds
        while not all_moved_on(c, held) and time.monotonic() < deadline:
            time.sleep(0.05)
    else:
        time.sleep(c.scale.pause_seconds)
    states = [
        f"{status} under {'the same' if job == held[task_id] else 'another'} job"
        for task_id, (status, job) in c.store.claims(sorted(held)).items()
    ]
    c.pool.resume(victim)
    paused = time.monotonic() - at
    c.event(f"SIGCONT worker {victim.pid} after {paused:.1f}s; its task(s): {', '.join(states)}")


def all_moved_on(c: Cluster, held: dict[str, str | None]) -> bool:
    """Has each task in ``held`` been claimed by another job or become terminal?"""
    claims = c.store.claims(sorted(held))
    for task_id, job in held.items():
        status, current = claims.get(task_id, ("missing", job))
        if status not in TERMINAL and current == job:
            return False
    return True


def inject_redis_flush(c: Cluster) -> None:
    """FLUSHALL mid-load: every queue entry and marker is gone."""
    c.redis.flushall()
    at = time.monotonic()
    held = c.store.unfinished()
    c.track(held, at)
    c.event(f"FLUSHALL with {len(held)} unfinished task(s)")


def inject_redis_restart(c: Cluster) -> None:
    """Kill redis-server and start an empty one on the same port."""
    at = time.monotonic()
    c.redis.stop()
    held = c.store.unfinished()
    c.track(held, at)
    c.event(f"redis-server killed with {len(held)} unfinished task(s)")
    time.sleep(c.scale.redis_down_seconds)
    c.redis.start()
    c.event("redis-server started again, empty")


def inject_kill_api(c: Cluster) -> None:
    """SIGKILL the API and start it again on the same port."""
    for i in range(c.scale.api_kills):
        if i:
            time.sleep(c.scale.kill_every * 2)
        c.api.kill()
        at = time.monotonic()
        held = c.store.in_status(["running"])
        c.track(held, at)
        c.event(f"SIGKILL the API with {len(held)} running task(s)")
        time.sleep(c.scale.api_down_seconds)
        c.api.start()
        c.event("API started again")


def inject_postgres_outage(c: Cluster) -> None:
    """Make PostgreSQL unreachable for the API (the proxy cuts and refuses connections)."""
    if c.proxy is None:
        raise HarnessError("postgres-outage needs the database proxy")
    closed = c.proxy.cut()
    at = time.monotonic()
    held = c.store.in_status(["running"])
    c.track(held, at)
    c.event(f"PostgreSQL cut off ({closed} connection(s) closed), {len(held)} running task(s)")
    time.sleep(c.scale.outage_seconds)
    c.proxy.restore()
    c.event("PostgreSQL reachable again")


def exhaust_rate_limit(url: str, key: str, limit: int = 1000) -> float | None:
    """Spend a key's rate limit with cheap requests; return Retry-After of the first 429."""
    headers = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=url, headers=headers, timeout=5) as http:
        for _ in range(limit):
            response = http.get(f"/api/v1/tasks/{uuid.uuid4()}")
            if response.status_code == 429:
                return float(response.headers.get("Retry-After", "0"))
    return None


def inject_sigterm_twice(c: Cluster) -> None:
    """SIGTERM, then SIGTERM again, a worker that waits out a 429 (its key: 50/1m)."""
    limited = [w for w in c.pool.alive() if w.key_name == "limited"]
    if not limited:
        c.event("the worker with the rate-limited key is not running: no fault injected")
        return
    victim = limited[0]
    retry_after = exhaust_rate_limit(c.api.url, c.keys["limited"])
    c.event(f"rate limit of the victim's key spent (Retry-After {retry_after})")
    time.sleep(1.5)  # the victim's next request meets the 429
    held = c.held_by(victim)
    at = time.monotonic()
    c.pool.sigterm(victim)
    c.track(held, at)
    c.event(f"SIGTERM worker {victim.pid}, which held {len(held)} running task(s)")
    time.sleep(2.0)  # RQ ignores a second signal within 1 s of the first
    c.pool.sigterm(victim)
    second = time.monotonic()
    c.event(f"SIGTERM worker {victim.pid} again")
    try:
        code = victim.process.wait(15)
        c.event(f"worker {victim.pid} exited ({code}) {time.monotonic() - second:.1f}s later")
    except subprocess.TimeoutExpired:
        c.pool.kill(victim)
        c.event(f"worker {victim.pid} still running 15s after the second SIGTERM: SIGKILLed")
    left = c.store.running_held_by(c.pool.job_ids(victim))
    c.event(f"the victim left {len(left)} task(s) running")
    c.pool.start()


@dataclass(frozen=True)
class Experiment:
    """A named fault and what the deployment needs for it."""

    name: str
    inject: Callable[[Cluster], None]
    proxy_database: bool = False
    limited_worker: bool = False


EXPERIMENTS: dict[str, Experiment] = {
    e.name: e
    for e in [
        Experiment("none", inject_none),
        Experiment("kill-workers", inject_kill_workers),
        Experiment("pause-worker", inject_pause_worker),
        Experiment("redis-flush", inject_redis_flush),
        Experiment("redis-restart", inject_redis_restart),
        Experiment("kill-api", inject_kill_api),
        Experiment("postgres-outage", inject_postgres_outage, proxy_database=True),
        Experiment("sigterm-twice", inject_sigterm_twice, limited_worker=True),
    ]
}


# --------------------------------------------------------------------------- measuring


@dataclass
class Report:
    """What one experiment found."""

    experiment: str
    tasks: int = 0
    completed: int = 0
    failed: int = 0
    stranded: int = 0
    stale: int = 0
    counter_mismatches: int = 0
    unexpected: int = 0
    affected: int = 0
    recovered: int = 0
    recovery_p50: float | None = None
    recovery_max: float | None = None
    worker_deaths: int = 0
    handler_runs: int = 0
    wall: float = 0.0
    error: str | None = None
    details: list[str] = field(default_factory=list)
    events: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """The bar: nothing stranded, nothing recorded by a stale attempt, counters exact."""
        faults = self.stranded + self.stale + self.counter_mismatches
        return self.error is None and faults == 0

    def describe(self) -> str:
        """Everything known about the experiment, for a failing test or ``--verbose``."""
        lines = [format_table([self]), "", "events:", *self.events]
        if self.details:
            lines += ["", "details:", *self.details]
        if self.error:
            lines += ["", f"error: {self.error}"]
        return "\n".join(lines)


def _output_job(output: Any) -> Any:
    if isinstance(output, str):
        with contextlib.suppress(ValueError):
            output = json.loads(output)
    return output.get("jobId") if isinstance(output, dict) else None


def check_tasks(report: Report, tasks: list[TaskRow], expected: dict[str, str]) -> None:
    """Stranded, stale and unexpected tasks, with a few examples of each."""
    report.tasks = len(tasks)
    stranded: dict[str, int] = {}
    for task in tasks:
        if task.status == "completed":
            report.completed += 1
            job = _output_job(task.output)
            if job != task.queue_job_id:
                report.stale += 1
                if report.stale <= 5:
                    report.details.append(
                        f"stale: task {task.id} output.jobId={job} queueJobId={task.queue_job_id}"
                    )
        elif task.status == "failed":
            report.failed += 1
        if task.status not in TERMINAL:
            stranded[task.status] = stranded.get(task.status, 0) + 1
            if report.stranded < 5:
                report.details.append(
                    f"stranded: task {task.id} is {task.status}, retryCount={task.retry_count}, "
                    f"queueJobId={task.queue_job_id}"
                )
            report.stranded += 1
        elif task.status != expected.get(task.id):
            report.unexpected += 1
            if report.unexpected <= 5:
                report.details.append(
                    f"unexpected: task {task.id} is {task.status}, planned "
                    f"{expected.get(task.id)}; output {task.output}"
                )
    if stranded:
        report.details.append(f"stranded by status: {stranded}")
    if report.tasks != len(expected):
        report.details.append(f"{report.tasks} tasks in the database, {len(expected)} submitted")


def check_counters(report: Report, tasks: list[TaskRow], runs: list[RunRow]) -> None:
    """Each run's counters against the task table."""
    for run in runs:
        mine = [t for t in tasks if t.run_id == run.id]
        actual = (
            len(mine),
            sum(t.status == "completed" for t in mine),
            sum(t.status == "failed" for t in mine),
        )
        if (run.total, run.completed, run.failed) != actual:
            report.counter_mismatches += 1
            report.details.append(
                f"counters of run {run.id}: total/completed/failed "
                f"{run.total}/{run.completed}/{run.failed}, task table {actual[0]}/{actual[1]}/"
                f"{actual[2]}"
            )


def measure(c: Cluster, name: str, expected: dict[str, str], wall: float) -> Report:
    """Read the outcome from the database and the harness's own records."""
    report = Report(name, wall=wall, events=c.events)
    tasks, runs = c.store.snapshot()
    check_tasks(report, tasks, expected)
    check_counters(report, tasks, runs)
    entries = c.tracker.entries()
    latencies = c.tracker.latencies()
    report.affected, report.recovered = len(entries), len(latencies)
    if latencies:
        report.recovery_p50 = statistics.median(latencies)
        report.recovery_max = latencies[-1]
    deaths = c.pool.deaths()
    report.worker_deaths = len(deaths)
    for worker in deaths[:2]:
        last_lines = log_tail(worker.log_file, 4000).splitlines()[-8:]
        report.details.append(f"worker {worker.pid} died; its log ends:\n" + "\n".join(last_lines))
    report.handler_runs = sum(
        line.startswith("S ")
        for path in c.pool.notes_dir.glob("*.log")
        for line in path.read_text().splitlines()
    )
    return report


def run_experiment(name: str, scale: Scale = FULL_SCALE, workdir: Path | None = None) -> Report:
    """Run one experiment in a fresh deployment and report what it found.

    ``workdir`` keeps the logs (API, workers, Redis) and the handlers' notes; without it a
    temporary directory is used and removed afterwards.
    """
    experiment = EXPERIMENTS[name]
    temporary = workdir is None
    root = Path(tempfile.mkdtemp(prefix=f"chaos-{name}-")) if workdir is None else workdir
    try:
        with cluster(
            scale, root, proxy_database=experiment.proxy_database,
            limited_key=experiment.limited_worker,
        ) as c:  # fmt: skip
            report = _drive(c, experiment)
        if not temporary:
            (root / "report.md").write_text(report.describe() + "\n")
        return report
    finally:
        if temporary:
            shutil.rmtree(root, ignore_errors=True)


def _drive(c: Cluster, experiment: Experiment) -> Report:
    """Submit, start the workers, inject the fault, wait, measure."""
    c.started = time.monotonic()

    def start_workers() -> None:
        for i in range(c.scale.workers):
            last = i == c.scale.workers - 1
            c.pool.start("limited" if experiment.limited_worker and last else "main")

    expected = submit_all(c, plan(c.scale), start_workers)
    c.event(f"submitted {len(expected)} tasks")
    if c.pool.wait_ready():
        c.event(f"{c.scale.workers} workers running handlers")
    else:
        c.event(f"not every worker ran a handler within 20s of its start (logs: {c.workdir})")
    c.tracker.start()
    time.sleep(c.scale.fault_delay)
    experiment.inject(c)
    settled = wait_settled(c, len(expected))
    wall = time.monotonic() - c.started
    c.event("all tasks terminal" if settled else "stopped waiting")
    return measure(c, experiment.name, expected, wall)


# --------------------------------------------------------------------------- output


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def format_table(reports: list[Report]) -> str:
    """The reports as one markdown table."""
    head = (
        "| experiment | tasks | completed | failed | stranded | stale outcome | counters "
        "| unexpected | recovered / affected | recovery p50 / max (s) | worker deaths "
        "| handler runs | wall (s) |"
    )
    lines = [head, "|" + "---|" * 13]
    for r in reports:
        if r.error is not None:
            lines.append(f"| {r.experiment} | error: {r.error.splitlines()[0][:120]} |" + " |" * 11)
            continue
        counters = "exact" if r.counter_mismatches == 0 else f"{r.counter_mismatches} run(s) off"
        lines.append(
            f"| {r.experiment} | {r.tasks} | {r.completed} | {r.failed} | {r.stranded} "
            f"| {r.stale} | {counters} | {r.unexpected} | {r.recovered} / {r.affected} "
            f"| {_seconds(r.recovery_p50)} / {_seconds(r.recovery_max)} | {r.worker_deaths} "
            f"| {r.handler_runs} | {r.wall:.1f} |"
        )
    return "\n".join(lines)


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, help=f"tasks per experiment ({FULL_SCALE.tasks})")
    parser.add_argument("--workers", type=int, help=f"worker processes ({FULL_SCALE.workers})")
    parser.add_argument("--only", nargs="+", choices=list(EXPERIMENTS), metavar="NAME")
    parser.add_argument("--ci", action="store_true", help="use the bounded CI scale")
    parser.add_argument("--keep-logs", action="store_true", help="keep each experiment's logs")
    parser.add_argument("--verbose", action="store_true", help="print events and details")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    for signum in (signal.SIGINT, signal.SIGTERM):  # SIGINT too: it may arrive ignored
        signal.signal(signum, _raise_interrupt)
    if shutil.which("redis-server") is None:
        parser.error("redis-server is not on PATH")
    if (problem := postgres_problem()) is not None:
        parser.error(problem)
    scale = CI_SCALE if args.ci else FULL_SCALE
    scale = replace(scale, tasks=args.tasks or scale.tasks, workers=args.workers or scale.workers)
    reports: list[Report] = []
    interrupted = False
    try:
        for name in args.only or list(EXPERIMENTS):
            log.info("== %s", name)
            workdir = Path(tempfile.mkdtemp(prefix=f"chaos-{name}-")) if args.keep_logs else None
            try:
                reports.append(run_experiment(name, scale, workdir))
            except Exception as exc:  # one broken experiment must not hide the others
                log.exception("%s failed", name)
                reports.append(Report(name, error=f"{type(exc).__name__}: {exc}"))
            if workdir is not None:
                log.info("logs of %s in %s", name, workdir)
    except KeyboardInterrupt:
        interrupted = True
        log.warning("interrupted: every process started was stopped, every database dropped")
    finally:
        stop_all()
    print(format_table(reports))
    for report in reports:
        if args.verbose or not report.ok:
            print(f"\n### {report.experiment}\n\n```\n{report.describe()}\n```")
    if interrupted:
        return 130
    return 0 if all(r.ok for r in reports) else 1


if __name__ == "__main__":
    sys.exit(main())
