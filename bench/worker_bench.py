"""Worker throughput: raw RQ vs Foreman end to end, 1 and 2 worker processes.

    .venv/bin/python bench/worker_bench.py [--tasks 2000] [--rounds 3]
                                           [--backend postgres|sqlite|both]
                                           [--no-concurrent] [--no-profile]

Against one Redis (``--redis-url``, default ``redis://127.0.0.1:6379/11``: that database is
flushed at the start and at the end) and, for Foreman, one ``foreman-api serve`` process on
a throwaway database (PostgreSQL ``foreman_wbench_<random>`` on ``FOREMAN_BENCH_POSTGRES_URL``,
dropped WITH (FORCE) at the end; or a temp SQLite file):

* **raw RQ**: N no-op jobs (``worker_bench_app.noop``) enqueued first, then 1 or 2
  ``rq worker --burst -w rq.worker.SimpleWorker`` processes drain them;
* **Foreman**: N tasks created ``queued`` and enqueued first (``submit``: one API call with
  an idempotency key, then one Redis transaction onto ``foreman:<org>:bench``), then 1 or 2
  ``foreman-worker --burst`` processes drain them (each registers with the API, which names
  its organisation's queues, and runs its reconciler, registration and lease threads; per
  task: claim with a lease → no-op handler → fenced complete);
* **Foreman, concurrent**: N tasks submitted while 2 (non-burst) workers consume them;
* **latency**: submit → handler start, 200 tasks submitted one at a time to one idle worker
  (the handler notes its start time in Redis): p50, p99 and max;
* **profile**: one Foreman worker with per-phase timing and ``py-spy`` (if installed) on it.

Raw RQ and Foreman cases alternate ``--rounds`` times (this machine's speed drifts by
tens of percent over minutes): the table shows each case's median round, and Foreman ÷ RQ
is also printed per round, from cases that ran next to each other. Before each case the
script waits (up to 20 s) for the machine to go quiet: a case must not pay for the previous
one's leftovers (PostgreSQL's autovacuum after thousands of task updates).

Rates are N / (first job start → last job finish), from stamps the jobs themselves write
(``bench/worker_bench_app.py``); process start-up and shut-down are not counted. Every case
checks that all N tasks ended ``completed`` (the run's counters and the task list's total).
CPU per process (utime+stime from /proc over the same window) shows who is the bottleneck:
API, PostgreSQL, Redis and the workers all share this machine's cores. Each Foreman worker
also counts the API calls it makes (claims, completions, lease renewals, registrations,
reconciliations) and the CPU of its background threads; both are printed per task.

The API and the workers are started with this checkout first on ``PYTHONPATH``, so a copy
of the repository (a ``git worktree`` of an older commit) benchmarks its own code.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import redis
from rq import Queue

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(1, str(ROOT))

from planner import analyze  # noqa: E402

from foreman_api.schemas import TaskStatus  # noqa: E402
from foreman_api.storage.engine import create_engine  # noqa: E402
from foreman_worker import ForemanClient, submit  # noqa: E402
from foreman_worker.queues import Namespace  # noqa: E402

HOST = "127.0.0.1"
BIN = Path(sys.executable).parent
QUEUE = "bench"
APP = "worker_bench_app"
ORG = "bench"
"""The organisation of the benchmark's API key: its Foreman queue is ``foreman:bench:bench``."""
POSTGRES_ADMIN_URL = os.environ.get(
    "FOREMAN_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
TICK = os.sysconf("SC_CLK_TCK")
REFERENCE_RQ = 215.0
"""Raw RQ no-op jobs/s per SimpleWorker process on the reference 2-core machine."""

_children: list[subprocess.Popen[bytes]] = []
"""Every process this script started, stopped in ``stop_all`` whatever happens."""


# --------------------------------------------------------------------------- processes


def spawn(argv: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        process = subprocess.Popen(argv, env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    _children.append(process)
    return process


def stop(process: subprocess.Popen[bytes], wait: float = 10) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(wait)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


def stop_all() -> None:
    for process in reversed(_children):
        stop(process)
    _children.clear()


def _pythonpath() -> list[str]:
    return [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def cpu_seconds(pid: int) -> float | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / TICK


def rss_mib(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def postgres_pids(database: str) -> list[int]:
    """The PostgreSQL backends serving ``database`` (their title names it): other people's
    load on the same server, and its background processes, are not counted."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if (entry / "comm").read_text().strip() != "postgres":
                    continue
                title = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
                if f" {database} " in title:
                    pids.append(int(entry.name))
    return pids


def machine_busy_seconds() -> float:
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]
    return (sum(fields[:8]) - idle) / TICK


def wait_for_quiet(*, busy_below: float = 0.15, longest: float = 20.0) -> float:
    """Wait until the machine is nearly idle (under ``busy_below`` cores busy over half a
    second; at most ``longest`` seconds): what the previous case left running (PostgreSQL's
    autovacuum after thousands of updates, a server finishing its work) must not slow the
    next. Returns the seconds waited."""
    started = time.monotonic()
    while time.monotonic() - started < longest:
        before, at = machine_busy_seconds(), time.monotonic()
        time.sleep(0.5)
        if (machine_busy_seconds() - before) / (time.monotonic() - at) < busy_below:
            break
    return time.monotonic() - started


class Sampler:
    """Samples CPU and RSS of named process groups every 0.1 s while a case runs.

    The CPU window starts when the first job has stamped ``bench:firsts`` (so worker
    start-up is not counted) and ends at :meth:`finish`.
    """

    def __init__(self, conn: redis.Redis, groups: dict[str, Callable[[], list[int]]]) -> None:
        self.conn = conn
        self.groups = groups
        self.base: dict[int, float] = {}
        self.latest: dict[int, float] = {}
        self.rss: dict[int, float] = {}
        self.members: dict[str, set[int]] = {name: set() for name in groups}
        self.started_at: float | None = None
        self.machine0 = 0.0
        self._finished: tuple[dict[str, float], float, float] | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(0.1)

    def _sample(self) -> None:
        started = self.started_at is not None
        if not started and self.conn.llen("bench:firsts"):
            self.started_at = time.monotonic()
            self.machine0 = machine_busy_seconds()
        for name, pids in self.groups.items():
            for pid in pids():
                cpu = cpu_seconds(pid)
                if cpu is None:
                    continue
                self.members[name].add(pid)
                if not started:
                    self.base[pid] = cpu
                else:
                    self.base.setdefault(pid, cpu)
                self.latest[pid] = cpu
                rss = rss_mib(pid)
                if rss is not None:
                    self.rss[pid] = rss
        if not started and self.started_at is not None:
            self.base.update(self.latest)

    def finish(self) -> tuple[dict[str, float], float, float]:
        """CPU seconds per group over the window, the window in seconds, machine busy s.

        The first call closes the window; later calls return the same figures."""
        if self._finished is not None:
            return self._finished
        self._sample()
        self._stop.set()
        self._thread.join(5)
        window = time.monotonic() - (self.started_at or time.monotonic())
        machine = machine_busy_seconds() - self.machine0 if self.started_at else 0.0
        cpu = {
            name: sum(self.latest[p] - self.base.get(p, self.latest[p]) for p in pids)
            for name, pids in self.members.items()
        }
        self._finished = (cpu, window, machine)
        return self._finished


# --------------------------------------------------------------------------- services


@contextlib.contextmanager
def postgres_database() -> Iterator[str]:
    admin = create_engine(POSTGRES_ADMIN_URL, pool_size=1)
    name = f"foreman_wbench_{uuid.uuid4().hex[:12]}"
    with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    try:
        yield admin.url.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


@contextlib.contextmanager
def sqlite_database(workdir: Path) -> Iterator[str]:
    yield f"sqlite:///{workdir / 'bench.db'}"


@dataclass
class Api:
    database_url: str
    workdir: Path
    port: int = field(default_factory=free_port)
    key: str = ""
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def env(self) -> dict[str, str]:
        env = {
            **os.environ,
            "FOREMAN_DATABASE_URL": self.database_url,
            "PYTHONPATH": os.pathsep.join([str(ROOT), *_pythonpath()]),
        }
        env.pop("FOREMAN_REDIS_URL", None)  # the key is unlimited: no rate-limit counters
        return env

    def start(self) -> None:
        api = str(BIN / "foreman-api")
        subprocess.run([api, "migrate"], env=self.env, check=True, capture_output=True, timeout=120)
        self.key = subprocess.run(
            [
                api,
                "keys",
                "create",
                "--org",
                ORG,
                "--name",
                "worker",
                "--permissions",
                "*",
                "--rate-limit",
                "unlimited",
                "--quiet",
            ],
            env=self.env,
            check=True,
            capture_output=True,
            text=True,
            timeout=60,
        ).stdout.strip()
        self.process = spawn(
            [
                api,
                "serve",
                "--host",
                HOST,
                "--port",
                str(self.port),
                "--workers",
                "1",
                "--log-level",
                "warning",
            ],
            self.env,
            self.workdir / "api.log",
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return
            time.sleep(0.1)
        raise RuntimeError(f"the API did not start: {(self.workdir / 'api.log').read_text()}")

    def analyze(self) -> None:
        """Give the planner statistics of the tables as they are now (see :mod:`planner`)."""
        analyze(self.database_url)


# --------------------------------------------------------------------------- cases


@dataclass
class CaseResult:
    name: str
    processes: int
    tasks: int
    rate: float
    window: float
    cpu: dict[str, float]
    machine: float
    rss: dict[str, list[float]]
    verified: str
    calls: dict[str, float] = field(default_factory=dict)
    """What the workers counted (worker_bench_app): API calls, their seconds, thread CPU."""


class Bench:
    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.args = args
        self.n: int = args.tasks
        self.redis_url: str = args.redis_url
        self.conn = redis.Redis.from_url(self.redis_url)
        self.workdir = workdir
        self.redis_pid = int(self.conn.info("server")["process_id"])
        self.timing: list[dict[str, float]] = []
        self.notes: list[str] = []
        self.submit_calls: list[float] = []

    def reset(self) -> None:
        self.conn.flushdb()
        waited = wait_for_quiet()
        if waited > 1.0:
            self.notes.append(f"(waited {waited:.1f} s for the machine to go quiet before a case)")

    def worker_env(self, api: Api | None = None, **extra: str) -> dict[str, str]:
        env = {
            **os.environ,
            "BENCH_REDIS_URL": self.redis_url,
            "PYTHONPATH": os.pathsep.join([str(HERE), str(ROOT), *_pythonpath()]),
            **extra,
        }
        if api is not None:
            env.update(
                FOREMAN_API_URL=api.url,
                FOREMAN_API_KEY=api.key,
                FOREMAN_REDIS_URL=self.redis_url,
                FOREMAN_BENCH_CALLS="1",
            )
        return env

    def worker_calls(self) -> dict[str, float]:
        """The workers' API call counts and thread CPU, summed over the worker processes."""
        total: dict[str, float] = {}
        for raw in self.conn.lrange("bench:calls", 0, -1):
            for name, value in json.loads(raw).items():
                if name != "pid":
                    total[name] = total.get(name, 0.0) + value
        return total

    def stamps(self) -> tuple[float, float]:
        firsts = [float(v) for v in self.conn.lrange("bench:firsts", 0, -1)]
        lasts = [json.loads(v)["last"] for v in self.conn.lrange("bench:lasts", 0, -1)]
        if not firsts or not lasts:
            raise RuntimeError("the jobs left no timing stamps (did the workers run?)")
        return min(firsts), max(lasts)

    def groups(
        self, workers: list[subprocess.Popen[bytes]], api: Api | None
    ) -> dict[str, Callable[[], list[int]]]:
        groups: dict[str, Callable[[], list[int]]] = {
            "workers": lambda: [w.pid for w in workers],
            "redis": lambda: [self.redis_pid],
            "bench": lambda: [os.getpid()],
        }
        if api is not None and api.process is not None:
            api_pid = api.process.pid
            groups["api"] = lambda: [api_pid]
            if api.database_url.startswith("postgresql"):
                database = api.database_url.rsplit("/", 1)[1].split("?")[0]
                groups["postgres"] = lambda: postgres_pids(database)
        return groups

    def wait_exit(self, workers: list[subprocess.Popen[bytes]], what: str) -> None:
        deadline = time.monotonic() + max(120.0, self.n / 10)
        for worker in workers:
            left = deadline - time.monotonic()
            try:
                code = worker.wait(max(left, 0.1))
            except subprocess.TimeoutExpired:
                raise RuntimeError(f"{what}: workers still running after the deadline") from None
            if code != 0:
                raise RuntimeError(f"{what}: a worker exited with {code}; see {self.workdir}")

    def result(
        self, name: str, processes: int, sampler: Sampler, start: float, end: float, verified: str
    ) -> CaseResult:
        cpu, window, machine = sampler.finish()
        rss: dict[str, list[float]] = {}
        for group, pids in sampler.members.items():
            rss[group] = [sampler.rss[p] for p in sorted(pids) if p in sampler.rss]
        return CaseResult(
            name,
            processes,
            self.n,
            self.n / (end - start),
            end - start,
            {k: v / window if window else 0.0 for k, v in cpu.items()},
            machine / window if window else 0.0,
            rss,
            verified,
        )

    # ---- raw RQ --------------------------------------------------------------------------

    def raw_rq(self, processes: int) -> CaseResult:
        self.reset()
        queue = Queue(QUEUE, connection=self.conn)
        batch = 500
        for first in range(0, self.n, batch):
            queue.enqueue_many(
                [
                    Queue.prepare_data("worker_bench_app.noop", result_ttl=0)
                    for _ in range(first, min(first + batch, self.n))
                ]
            )
        assert queue.count == self.n
        env = self.worker_env()
        workers = [
            spawn(
                self.rq_worker_argv(burst=True),
                env,
                self.workdir / f"rq-{processes}-{i}.log",
            )
            for i in range(processes)
        ]
        sampler = Sampler(self.conn, self.groups(workers, None))
        self.wait_exit(workers, "raw RQ")
        start, end = self.stamps()
        done = sum(int(json.loads(v)["jobs"]) for v in self.conn.lrange("bench:lasts", 0, -1))
        if done != self.n or queue.count:
            raise RuntimeError(f"raw RQ ran {done} jobs of {self.n}, {queue.count} left")
        return self.result("raw RQ", processes, sampler, start, end, f"{done} jobs ran")

    # ---- Foreman -------------------------------------------------------------------------

    def submit_all(self, client: ForemanClient, run_id: str, threads: int = 4) -> None:
        def one(_: int) -> None:
            submit(run_id, "bench.noop", client=client, queue=QUEUE, connection=self.conn)

        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(one, range(self.n)))

    def verify(self, client: ForemanClient, run_id: str) -> str:
        deadline = time.monotonic() + 30
        while True:
            run = client.get_run(run_id).unwrap()
            if run.completed_tasks + run.failed_tasks >= self.n or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        listed = (
            client.list_tasks(run_id=run_id, status=TaskStatus.COMPLETED, limit=1)
            .unwrap()
            .pagination.total
        )
        counters = (run.total_tasks, run.completed_tasks, run.failed_tasks)
        if counters != (self.n, self.n, 0) or listed != self.n:
            raise RuntimeError(
                f"tasks lost or not completed: run (total, completed, failed) = "
                f"{counters}, tasks listed completed = {listed}, expected {self.n}"
            )
        return f"{listed}/{self.n} completed, run counters ok"

    def rq_worker_argv(self, burst: bool) -> list[str]:
        argv = [str(BIN / "rq"), "worker", "-w", "rq.worker.SimpleWorker", "--url", self.redis_url]
        return [*argv, "--burst", QUEUE] if burst else [*argv, QUEUE]

    def foreman_worker_argv(self, burst: bool) -> list[str]:
        argv = [str(BIN / "foreman-worker"), "--app", APP, "--queue", QUEUE]
        return [*argv, "--burst"] if burst else argv

    def foreman(
        self,
        api: Api,
        client: ForemanClient,
        processes: int,
        label: str,
        timing: bool = False,
        spy: bool = False,
    ) -> CaseResult:
        self.reset()
        run_id = str(client.create_run({"bench": label}).unwrap().id)
        self.submit_all(client, run_id)
        api.analyze()
        env = self.worker_env(api, FOREMAN_BENCH_TIMING="1" if timing else "0")
        workers = [
            spawn(
                self.foreman_worker_argv(burst=True),
                env,
                self.workdir / f"fw-{label}-{processes}-{i}.log",
            )
            for i in range(processes)
        ]
        sampler = Sampler(self.conn, self.groups(workers, api))
        spy_output = self.py_spy(workers[0].pid) if spy else None
        self.wait_exit(workers, f"Foreman {label}")
        start, end = self.stamps()
        verified = self.verify(client, run_id)
        # Burst workers exit once their organisation's (namespaced) queue is empty; a job
        # left there can only be a reconciler's late re-enqueue of a task already done.
        rq_queue = Namespace(os.environ.get("FOREMAN_QUEUE_PREFIX", "")).queue(ORG, QUEUE)
        left = Queue(rq_queue, connection=self.conn).count
        verified += f", {left} jobs left on {rq_queue}"
        result = self.result(f"Foreman {label}", processes, sampler, start, end, verified)
        result.calls = self.worker_calls()
        if timing:
            self.timing = [json.loads(v) for v in self.conn.lrange("bench:timing", 0, -1)]
        if spy_output is not None:
            spy_output()
        return result

    def foreman_concurrent(
        self, api: Api, client: ForemanClient, processes: int, label: str
    ) -> CaseResult:
        """Submit while non-burst workers consume; the window starts at the first submit."""
        self.reset()
        run_id = str(client.create_run({"bench": label}).unwrap().id)
        env = self.worker_env(api)
        workers = [
            spawn(
                self.foreman_worker_argv(burst=False),
                env,
                self.workdir / f"fw-{label}-{processes}-{i}.log",
            )
            for i in range(processes)
        ]
        deadline = time.monotonic() + 30
        while self.conn.scard("rq:workers") < processes:  # all registered with RQ
            if time.monotonic() > deadline or any(w.poll() is not None for w in workers):
                raise RuntimeError(f"workers did not start; see {self.workdir}")
            time.sleep(0.05)
        self.conn.rpush("bench:firsts", time.time())  # the window opens at the first submit
        sampler = Sampler(self.conn, self.groups(workers, api))
        self.submit_all(client, run_id)
        deadline = time.monotonic() + max(120.0, self.n / 10)
        while client.get_run(run_id).unwrap().completed_tasks < self.n:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{label}: not all tasks completed in time")
            time.sleep(0.05)
        sampler.finish()  # the CPU window ends with the work, before the workers stop
        for worker in workers:
            worker.send_signal(signal.SIGTERM)
        self.wait_exit(workers, f"Foreman {label}")
        start, end = self.stamps()
        verified = self.verify(client, run_id)
        result = self.result(f"Foreman {label}", processes, sampler, start, end, verified)
        result.calls = self.worker_calls()
        return result

    def latency(self, api: Api, client: ForemanClient, count: int = 200) -> list[float]:
        """Submit → handler start, in ms, one task at a time on an idle Foreman worker."""
        self.reset()
        run_id = str(client.create_run({"bench": "latency"}).unwrap().id)
        worker = spawn(
            self.foreman_worker_argv(burst=False),
            self.worker_env(api),
            self.workdir / "fw-latency.log",
        )

        def submit_one() -> str:
            task = submit(run_id, "bench.stamp", client=client, queue=QUEUE, connection=self.conn)
            return str(task.id)

        return self.time_starts(worker, submit_one, count, "Foreman latency")

    def raw_rq_latency(self, count: int = 200) -> list[float]:
        """Enqueue → job start, in ms, one job at a time on an idle raw RQ SimpleWorker."""
        self.reset()
        queue = Queue(QUEUE, connection=self.conn)
        worker = spawn(
            self.rq_worker_argv(burst=False), self.worker_env(), self.workdir / "rq-latency.log"
        )

        def enqueue_one() -> str:
            key = uuid.uuid4().hex
            queue.enqueue("worker_bench_app.stamp", key, result_ttl=0)
            return key

        return self.time_starts(worker, enqueue_one, count, "raw RQ latency")

    def time_starts(
        self,
        worker: subprocess.Popen[bytes],
        submit_one: Callable[[], str],
        count: int,
        what: str,
    ) -> list[float]:
        """Latencies (ms) from each ``submit_one`` call to the job's start stamp."""
        deadline = time.monotonic() + 30
        while self.conn.scard("rq:workers") < 1:
            if time.monotonic() > deadline or worker.poll() is not None:
                raise RuntimeError(f"{what}: the worker did not start; see {self.workdir}")
            time.sleep(0.05)
        time.sleep(1.0)  # past its registration and first reconcile
        latencies = []
        self.submit_calls.clear()
        for _ in range(count):
            submitted = time.time()
            key = submit_one()
            self.submit_calls.append((time.time() - submitted) * 1000)
            deadline = time.monotonic() + 10
            while (started := self.conn.hget("bench:started", key)) is None:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{what}: {key} did not start within 10 s")
                time.sleep(0.0005)
            latencies.append((float(started) - submitted) * 1000)
            time.sleep(0.02)  # idle between jobs: the worker is waiting on its queue
        worker.send_signal(signal.SIGTERM)
        self.wait_exit([worker], what)
        return latencies

    # ---- profiling -----------------------------------------------------------------------

    def py_spy(self, pid: int) -> Callable[[], None] | None:
        spy = BIN / "py-spy"
        if not spy.exists():
            self.notes.append("(py-spy is not installed in the venv: no profile)")
            return None
        out = self.workdir / "worker.folded"
        time.sleep(1.0)  # past the worker's start-up
        duration = max(1, min(4, int(self.n / 2 / REFERENCE_RQ)))
        proc = subprocess.Popen(
            [
                str(spy),
                "record",
                "--pid",
                str(pid),
                "--rate",
                "200",
                "--format",
                "raw",
                "--output",
                str(out),
                "--duration",
                str(duration),
                "--nonblocking",
                "--idle",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )

        def report() -> None:
            output, _ = proc.communicate(timeout=60)
            if proc.returncode != 0 or not out.exists():
                self.notes.append(f"py-spy failed ({proc.returncode}): {output.decode()[-800:]}")
                return
            self.notes.append(summarise_profile(out, duration))

        return report


def summarise_profile(path: Path, duration: int, top: int = 14) -> str:
    """Wall-clock profile of the worker's main thread (idle waits included)."""
    lines: list[str] = []
    out = lines.append
    inclusive: dict[str, int] = {}
    own: dict[str, int] = {}
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        frames = stack.split(";")
        if any("_bootstrap" in f for f in frames[:3]):
            continue  # the heartbeat / reaper / scheduler threads
        count = int(count_text)
        total += count
        own[frames[-1]] = own.get(frames[-1], 0) + count
        for frame in set(frames):
            inclusive[frame] = inclusive.get(frame, 0) + count
    if not total:
        return "py-spy recorded no samples of the main thread"
    out(
        f"\npy-spy on one Foreman worker, main thread, wall clock ({total} samples over "
        f"{duration} s at 200 Hz, --idle: waiting on a socket counts)"
    )
    boring = (
        "<module>",
        "main (",
        "run_worker",
        "work (",
        "_run_module",
        "_run_code",
        "console_entry",
        "execute_job (worker_bench_app",
    )
    out(f"  top {top} by inclusive time:")
    shown = 0
    for frame, count in sorted(inclusive.items(), key=lambda kv: -kv[1]):
        if any(b in frame for b in boring):
            continue
        out(f"    {100 * count / total:5.1f}%  {frame}")
        shown += 1
        if shown >= top:
            break
    out(f"  top {top // 2} by own time:")
    for frame, count in sorted(own.items(), key=lambda kv: -kv[1])[: top // 2]:
        out(f"    {100 * count / total:5.1f}%  {frame}")
    return "\n".join(lines)


# --------------------------------------------------------------------------- report


def median_case(cases: list[CaseResult]) -> CaseResult:
    """The case with the median rate (the lower middle one of an even count)."""
    return sorted(cases, key=lambda c: c.rate)[(len(cases) - 1) // 2]


def print_rounds(rounds: dict[tuple[str, int], list[CaseResult]]) -> None:
    """Each round's rates, and Foreman ÷ raw RQ within each round (run side by side)."""
    if max((len(cases) for cases in rounds.values()), default=0) < 2:
        return
    print("\nRounds (raw RQ and Foreman alternate; rates in order, then ÷RQ of each round):")
    for (name, processes), cases in rounds.items():
        rates = " / ".join(f"{c.rate:.0f}" for c in cases)
        line = f"  {name} x{processes}: {rates}"
        rq = rounds.get(("raw RQ", processes))
        if name != "raw RQ" and rq is not None and len(rq) == len(cases):
            ratios = sorted(c.rate / r.rate for c, r in zip(cases, rq, strict=True))
            shown = " / ".join(f"{c.rate / r.rate:.2f}" for c, r in zip(cases, rq, strict=True))
            line += f"   ÷RQ {shown} (median {ratios[(len(ratios) - 1) // 2]:.2f})"
        print(line)


def print_table(results: list[CaseResult], rq_rate: dict[int, float]) -> None:
    groups = ["workers", "api", "postgres", "redis", "bench"]
    print(
        f"\n{'case':<30} {'procs':>5} {'tasks':>6} {'tasks/s':>8} {'÷RQ':>6} {'/proc':>7}  "
        f"CPU cores over the window: {' '.join(f'{g:>8}' for g in groups)} {'machine':>8}"
        f"   RSS MiB (worker; api)"
    )
    for r in results:
        ratio = r.rate / rq_rate[r.processes] if r.processes in rq_rate else float("nan")
        cpu = " ".join(f"{r.cpu[g]:8.2f}" if g in r.cpu else f"{'-':>8}" for g in groups)
        worker_rss = "/".join(f"{v:.0f}" for v in r.rss.get("workers", []))
        api_rss = "/".join(f"{v:.0f}" for v in r.rss.get("api", []))
        rss = worker_rss + (f"; {api_rss}" if api_rss else "")
        print(
            f"{r.name:<30} {r.processes:>5} {r.tasks:>6} {r.rate:8.0f} {ratio:6.2f} "
            f"{r.rate / r.processes:7.0f}  {'':27}{cpu} {r.machine:8.2f}   {rss}"
        )
    by_name: dict[str, dict[int, float]] = {}
    for r in results:
        by_name.setdefault(r.name, {})[r.processes] = r.rate
    scaling = [
        f"{name} {rates[2] / rates[1]:.2f}x"
        for name, rates in by_name.items()
        if 1 in rates and 2 in rates
    ]
    if scaling:
        print("\nA second worker process (x2 ÷ x1 tasks/s): " + ", ".join(scaling))
    print(
        "\n(÷RQ: Foreman tasks/s over raw RQ jobs/s with the same number of worker processes;"
        " /proc: per worker process.\n CPU in cores = CPU seconds / window seconds; "
        "'machine' is the whole machine's busy CPU, others' load included.)"
    )
    for r in results:
        if r.cpu.get("workers") is not None and r.rate:
            per_task = {g: 1000 * v / r.rate for g, v in r.cpu.items()}
            parts = ", ".join(f"{g} {per_task[g]:.2f}" for g in groups if g in per_task)
            print(f"  CPU ms per task, {r.name} x{r.processes}: {parts}")
    for r in results:
        if r.calls:
            print(format_calls(r))
    print()
    for r in results:
        print(f"  check, {r.name} x{r.processes}: {r.verified}")


CALL_NAMES = {
    "claim": "claim",
    "complete": "complete",
    "heartbeat_task": "lease renewal",
    "register_worker": "registration",
    "reconcile_tasks": "reconcile",
    "delete_worker": "deregistration",
}


THREAD_NAMES = {
    "main thread": "main (jobs)",
    "foreman-lease": "lease keeper",
    "foreman-heartbeat": "RQ heartbeat",
    "foreman-reconciler": "reconciler",
    "foreman-reaper": "reaper",
    "foreman-presence": "registration",
    "foreman-scheduler": "scheduler",
}
"""Worker threads by name; unnamed ones (RQ's pubsub listener) are "other"."""


def format_calls(r: CaseResult) -> str:
    """The workers' API calls per task (mean wall ms each) and their threads' CPU per task."""
    n = r.tasks
    calls = r.calls
    names = [k for k in calls if not k.endswith(".s") and not k.startswith("cpu:")]
    order = [*CALL_NAMES, *sorted(set(names) - set(CALL_NAMES))]
    parts = []
    for name in order:
        count = calls.get(name, 0.0)
        if name not in calls and name not in ("heartbeat_task",):
            continue
        mean = 1000 * calls.get(f"{name}.s", 0.0) / count if count else 0.0
        label = CALL_NAMES.get(name, name)
        parts.append(
            f"{label} {count / n:.3f}"
            + (f" ({mean:.1f} ms)" if mean else "")
            + (f" [{count:.0f}]" if 0 < count < n / 10 else "")
        )
    threads: dict[str, float] = {}
    for key, seconds in calls.items():
        if key.startswith("cpu:"):
            name = THREAD_NAMES.get(key[4:], "other" if key.startswith("cpu:Thread-") else key[4:])
            threads[name] = threads.get(name, 0.0) + seconds
    known = list(THREAD_NAMES.values())
    ordered = sorted(threads.items(), key=lambda kv: [*known, kv[0]].index(kv[0]))
    cpu = ", ".join(f"{name} {1000 * v / n:.3f}" for name, v in ordered)
    return (
        f"  worker API calls per task, {r.name} x{r.processes}: {', '.join(parts)}\n"
        f"    worker threads' CPU ms per task (whole worker lives): {cpu}"
    )


def format_timing(timing: list[dict[str, float]]) -> str:
    if not timing or not timing[0].get("jobs"):
        return "(no per-phase timing came back from the worker)"
    t = timing[0]
    jobs = t["jobs"]
    lines: list[str] = []
    out = lines.append
    loop = t["loop_end"] - t["loop_start"]
    ms = {
        k: 1000 * t.get(k, 0.0) / jobs
        for k in ("claim", "handler", "complete", "runner", "execute_job", "between_jobs")
    }
    runner_other = ms["runner"] - ms["claim"] - ms["handler"] - ms["complete"]
    rq_job = ms["execute_job"] - ms["runner"]
    out(
        f"\nPer-task time in one Foreman worker ({int(jobs)} jobs, measured in the worker; "
        f"{1000 * loop / jobs:.2f} ms per task in all, {jobs / loop:.0f} tasks/s):"
    )
    rows = [
        ("claim round trip (PATCH running)", ms["claim"]),
        ("handler (no-op, incl. timeout wrapper)", ms["handler"]),
        ("complete round trip (PATCH completed)", ms["complete"]),
        ("rest of the runner (marker DEL, context, ...)", runner_other),
        ("RQ around the job (prepare, perform, success)", rq_job),
        ("RQ between jobs (dequeue, heartbeat, loop)", ms["between_jobs"]),
    ]
    for name, value in rows:
        out(f"  {name:<48} {value:7.2f} ms  {100 * value * jobs / 1000 / loop:5.1f}%")
    return "\n".join(lines)


# --------------------------------------------------------------------------- main


def percentiles(sorted_ms: list[float]) -> str:
    """p50, p99 and max of sorted latencies in ms, as printed."""
    p50 = sorted_ms[len(sorted_ms) // 2]
    p99 = sorted_ms[int(len(sorted_ms) * 0.99) - 1]
    return f"p50 {p50:.1f} ms, p99 {p99:.1f} ms, max {sorted_ms[-1]:.1f} ms"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=2000, help="tasks/jobs per case")
    parser.add_argument("--backend", choices=["postgres", "sqlite", "both"], default="postgres")
    parser.add_argument(
        "--redis-url",
        default="redis://127.0.0.1:6379/11",
        help="a Redis database of its own: it is flushed at start and end",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="raw RQ and Foreman cases alternate this many times; the table shows medians",
    )
    parser.add_argument(
        "--no-concurrent", action="store_true", help="skip the submit-while-consuming case"
    )
    parser.add_argument(
        "--no-profile", action="store_true", help="skip the timed + py-spy profile case"
    )
    parser.add_argument(
        "--latency-only", action="store_true", help="only the submit → start latency cases"
    )
    args = parser.parse_args(argv)
    if not args.redis_url.startswith(("redis://127.0.0.1", "redis://localhost")):
        parser.error("loopback Redis only")

    print(
        "$ "
        + " ".join(
            [
                Path(sys.executable).relative_to(ROOT).as_posix()
                if Path(sys.executable).is_relative_to(ROOT)
                else sys.executable,
                "bench/worker_bench.py",
                *(argv if argv is not None else sys.argv[1:]),
            ]
        )
    )
    load = os.getloadavg()
    print(
        f"{os.cpu_count()} CPUs, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; "
        f"{args.tasks} tasks per case; Redis {args.redis_url}"
    )

    def on_signal(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    # The burst cases submit before any worker has registered: the API then warns, per task,
    # that no live worker serves the type. Expected here, and one log line per task.
    logging.getLogger("foreman_worker.enqueue").setLevel(logging.ERROR)
    workdir = Path(tempfile.mkdtemp(prefix="foreman_wbench_"))
    bench = Bench(args, workdir)
    results: list[CaseResult] = []
    rounds: dict[tuple[str, int], list[CaseResult]] = {}
    keep_logs = False

    def record(result: CaseResult) -> None:
        rounds.setdefault((result.name, result.processes), []).append(result)
        unit = "jobs/s" if result.name == "raw RQ" else "tasks/s"
        print(f"  {result.name} x{result.processes}: {result.rate:.0f} {unit}", flush=True)

    try:
        backends = ["postgres", "sqlite"] if args.backend == "both" else [args.backend]
        for backend in backends:
            database = postgres_database() if backend == "postgres" else sqlite_database(workdir)
            with database as url:
                api = Api(url, workdir)
                api.start()
                label = "PostgreSQL" if backend == "postgres" else "SQLite"
                with ForemanClient(api.url, api.key) as client:
                    # Raw RQ and Foreman alternate, so a slow spell of this shared machine
                    # falls on both; each round's pair is compared (run next to each other).
                    for turn in range(0 if args.latency_only else args.rounds):
                        print(f" round {turn + 1} of {args.rounds}", flush=True)
                        for processes in (1, 2):
                            if backend == backends[0]:
                                record(bench.raw_rq(processes))
                            record(bench.foreman(api, client, processes, label))
                    if not args.no_concurrent and not args.latency_only:
                        record(bench.foreman_concurrent(api, client, 2, f"{label}, concurrent"))
                    if backend == backends[0]:
                        raw = sorted(bench.raw_rq_latency())
                        raw_enqueue = sorted(bench.submit_calls)
                        lat = sorted(bench.latency(api, client))
                        bench.notes.insert(
                            0,
                            (
                                f"\nSubmit → handler start, {label}, one worker, idle, "
                                f"{len(lat)} tasks one at a time: {percentiles(lat)}"
                                f"; of which the submit() call itself (API create + Redis "
                                f"enqueue) p50 {sorted(bench.submit_calls)[len(lat) // 2]:.1f} ms"
                                f"\nraw RQ, the same way (Queue.enqueue → job start): "
                                f"{percentiles(raw)}; of which enqueue() itself "
                                f"p50 {raw_enqueue[len(raw) // 2]:.1f} ms"
                            ),
                        )
                    if not args.no_profile and not args.latency_only and backend == backends[0]:
                        result = bench.foreman(
                            api, client, 1, f"{label}, profiled", timing=True, spy=True
                        )
                        bench.notes.insert(
                            0,
                            f"\n{result.name} x1 (per-phase timing and "
                            f"py-spy on; not in the table): "
                            f"{result.rate:.0f} tasks/s",
                        )
                        bench.notes.insert(1, format_timing(bench.timing))
                if api.process is not None:
                    stop(api.process)
        results = [median_case(cases) for cases in rounds.values()]
        rq_rate = {r.processes: r.rate for r in results if r.name == "raw RQ"}
        print_table(results, rq_rate)
        print_rounds(rounds)
        for note in bench.notes:
            print(note)
        print(
            f"\nReference: raw RQ ≈ {REFERENCE_RQ:.0f} jobs/s per SimpleWorker process on a "
            "2-core machine; target Foreman ÷ RQ ≥ 0.8 per worker process."
        )
        return 0
    except BaseException:
        keep_logs = True
        raise
    finally:
        stop_all()
        with contextlib.suppress(redis.RedisError):
            bench.conn.flushdb()
        bench.conn.close()
        if keep_logs:
            print(f"logs kept in {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
