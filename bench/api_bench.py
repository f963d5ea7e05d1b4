"""API benchmark: our API and the TypeScript reference side by side, req/s and p50/p99.

    .venv/bin/python bench/api_bench.py [--backend sqlite|postgres|both] [--duration 8]
                                        [--connections 16] [--quick] [--no-reference]
                                        [--profile [SCENARIO]]

Ours: for each backend a throwaway database (a temp SQLite file; a ``foreman_bench_*``
PostgreSQL database, dropped WITH (FORCE) at the end), ``foreman-api migrate``, an unlimited
key from ``foreman-api keys create``, and ONE ``foreman-api serve --workers 1`` process.

The reference: the TypeScript implementation (Node + Express + PostgreSQL, one process),
started with ``../shared/anchors/ts-foreman/serve.sh PORT DB`` (relative to the repository
root; ``FOREMAN_BENCH_REFERENCE_SERVE`` overrides the path) on a throwaway
``foreman_bench_ts_*`` database, dropped WITH (FORCE) at the end. serve.sh builds it once
with npm (a few minutes on the first run), creates and migrates the database, then execs
node; the script waits for ``/health`` and at the end kills serve.sh's whole process group,
whatever happens. Without node, npm, psql or serve.sh, or when the build or start fails, the
reference is skipped with a one-line message and ours is still measured; ``--no-reference``
skips it on purpose. The reference is PostgreSQL only: it runs alongside our PostgreSQL pass,
and the scenarios alternate ours/reference (ours first, then reference first, ...) so that
drift of the machine's load hits both. Its auth: ``Authorization: Bearer ts-reference-token``
plus ``x-org-id: bench``.

Both are driven by ``bench/loadgen.py`` (asyncio raw sockets, keep-alive connections, loopback
only) with the same load: ``--connections`` connections, a short warm-up, then ``--duration``
seconds or until the scenario's work runs out, and at most 500,000 requests per scenario.
Scenarios (same request bodies for both unless a comment says otherwise):

- create run: ``POST /runs``;
- create task, all in one run: ``POST /tasks``, every connection on the same run;
- get task: ``GET /tasks/{id}`` over up to 2,000 tasks made by the previous scenario;
- list tasks of a run: ``GET /tasks?runId=…&limit=20`` on a run of 200 tasks;
- write run data: ``POST /runs/{id}/data``, one run (and one task) per connection, 100 keys;
- latest by key: ``GET /runs/{id}/data?key=…`` on a run holding 2,000 entries of that one key,
  seeded through each implementation's own API; the reference's query fails (it answers
  404, "missing FROM-clause entry"): the table says "broken" with the status it gave;
- all by key: ``GET /runs/{id}/data?key=…&includeAll=true&limit=100`` on the same run;
- ours only, claim + complete: tasks created ``queued`` beforehand (one run per connection);
  each connection PATCHes a task to ``running`` with ``queueJobId`` and ``leaseSeconds``,
  then to ``completed`` with that ``queueJobId`` and ``outputData``, then the next task.
  Reported as task pairs/s with p50/p99 per PATCH request. The reference has no claim.

Before each measured load, after its setup, both databases are ``ANALYZE``d, as autovacuum
would do within a minute on a live deployment (plans on never-analysed tables are not what a
deployment runs).

The table prints ours (per backend) and the reference, and ours (PostgreSQL) ÷ reference in
req/s; then the CPU used per scenario, the machine's load average at the start, the CPU count
and each server's RSS after the benchmark.

``--profile`` runs one scenario (default: get task) on our PostgreSQL server (SQLite with
``--backend sqlite``) with ``py-spy`` attached and prints where the server's time goes (no
reference). Install it into the venv for that only: ``.venv/bin/pip install py-spy``.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parent.parent))

import loadgen
from planner import analyze

from foreman_api.storage.engine import create_engine

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
API = "/api/v1"
ORG = "bench"
POSTGRES_ADMIN_URL = os.environ.get(
    "FOREMAN_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
REFERENCE_SERVE = Path(
    os.environ.get(
        "FOREMAN_BENCH_REFERENCE_SERVE", ROOT / ".." / "shared/anchors/ts-foreman/serve.sh"
    )
).resolve()
REFERENCE_TOKEN = "ts-reference-token"  # noqa: S105 (the reference's fixed test token)
REFERENCE_DIR = os.environ.get("TS_FOREMAN_DIR", "/tmp/ts-foreman")  # noqa: S108 (serve.sh's)
REFERENCE_BUILT = Path(REFERENCE_DIR) / "node/packages/foreman-server/dist/index.js"
REFERENCE_START_TIMEOUT = 120.0
"""Seconds for serve.sh to migrate and answer once built."""
REFERENCE_BUILD_TIMEOUT = 1200.0
"""Seconds for serve.sh's first run: npm install and tsc of four packages, then start."""
MAX_REQUESTS = 500_000
"""A hard cap on requests per scenario, warm-up included."""
SEED_SECONDS = 120.0
"""A cap on the time of each (unmeasured) seeding load."""
DATA_ENTRIES = 2_000
DATA_KEY = "seed.metric"
LIST_TASKS = 200
CLAIM_TASKS_CAP = 5_000
"""Queued tasks per connection for claim + complete, at most."""

SCENARIOS: list[tuple[str, str, bool]] = [
    ("create-run", "create run", True),
    ("create-task", "create task, all in one run", True),
    ("get-task", "get task", True),
    ("list-tasks", "list tasks of a run, limit 20", True),
    ("write-data", "write run data", True),
    ("latest-by-key", "latest by key, 2,000 entries", True),
    ("all-by-key", "all by key, 2,000 entries", True),
    ("claim-complete", "claim + complete, task pairs/s", False),
]
"""(key, label, measured on the reference too)."""
PROFILE_SCENARIOS = tuple(key for key, _, _ in SCENARIOS)


# --------------------------------------------------------------------------- measurement


@dataclass
class Figures:
    rps: float
    p50_ms: float
    p99_ms: float
    count: int
    statuses: dict[int, int]
    server_cpu: float = float("nan")
    """Server process CPU, in cores (1.0 = one core busy), over the whole load."""
    postgres_cpu: float = float("nan")
    client_cpu: float = float("nan")
    machine_cpu: float = float("nan")
    """Busy CPU of the whole machine, in cores (other people's work included)."""
    requests_per_second: float = float("nan")
    """For claim + complete (where ``rps`` counts task pairs): PATCH requests per second."""
    errors: list[str] = field(default_factory=list)


def _figures(latencies: list[float], elapsed: float, statuses: dict[int, int]) -> Figures:
    latencies.sort()
    return Figures(
        rps=len(latencies) / elapsed,
        p50_ms=loadgen.percentile(latencies, 0.50) * 1000,
        p99_ms=loadgen.percentile(latencies, 0.99) * 1000,
        count=len(latencies),
        statuses=statuses,
    )


def _proc_cpu_seconds(pid: int) -> float:
    """utime + stime of one process (all its threads), in seconds."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _postgres_cpu_seconds() -> dict[int, float]:
    """CPU seconds of every process named ``postgres`` (others' load included), by pid."""
    found: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            comm = (entry / "comm").read_text().strip()
        except OSError:
            continue
        if comm == "postgres":
            found[int(entry.name)] = _proc_cpu_seconds(int(entry.name))
    return found


def _cpu_delta(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU spent between two snapshots by the processes alive at the second one."""
    return sum(seconds - before.get(pid, 0.0) for pid, seconds in after.items())


def _machine_busy_seconds() -> float:
    """Non-idle CPU seconds of the whole machine, from /proc/stat."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def rss_mib(pid: int) -> float:
    """VmRSS of a process in MiB, from /proc (psutil is not a dependency)."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


# --------------------------------------------------------------------------- the servers


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _cli() -> list[str]:
    exe = Path(sys.executable).with_name("foreman-api")
    if exe.exists():
        return [str(exe)]
    return [sys.executable, "-m", "foreman_api.cli"]


class Api:
    """A started API server on a loopback port: its auth headers and request helpers."""

    label = ""
    is_reference = False

    def __init__(self) -> None:
        self.port = _free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.database_url = ""

    def analyze(self) -> None:
        """Vacuum and refresh the planner's statistics before a measured load (see
        :mod:`planner`): without it both sides would plan on tables never analysed, and
        autovacuum would catch up with one side's writes during the next measured load."""
        if self.database_url:
            analyze(self.database_url)

    @property
    def headers(self) -> dict[str, str]:
        raise NotImplementedError

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """One synchronous request, for setup and checks (not measured)."""
        conn = http.client.HTTPConnection(HOST, self.port, timeout=30)
        try:
            payload = None if body is None else json.dumps(body)
            headers = {**self.headers, "Content-Type": "application/json"}
            conn.request(method, path, body=payload, headers=headers)
            response = conn.getresponse()
            raw = response.read()
            try:
                return response.status, json.loads(raw) if raw else None
            except ValueError:
                return response.status, raw.decode(errors="replace")
        finally:
            conn.close()

    def build(self, method: str, path: str, body: Any = None) -> bytes:
        return loadgen.build_request(
            method, API + path, host=f"{HOST}:{self.port}", headers=self.headers, body=body
        )

    def _wait_healthy(self, timeout: float, log_path: Path) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                tail = log_path.read_text(errors="replace").strip().splitlines()[-5:]
                raise RuntimeError(
                    f"it exited with status {self.process.returncode}: " + " / ".join(tail)
                )
            with contextlib.suppress(OSError, http.client.HTTPException):
                if self.request("GET", "/health")[0] == 200:
                    return
            time.sleep(0.2)
        raise RuntimeError(f"it did not answer /health within {timeout:.0f} s")


class Server(Api):
    """One ``foreman-api serve`` process (ours)."""

    def __init__(
        self, database_url: str, workdir: Path, label: str, *, workers: int = 1, **env: str
    ) -> None:
        super().__init__()
        self.label = label
        self.workers = workers
        self.env = {**os.environ, "FOREMAN_DATABASE_URL": database_url, **env}
        self.env.pop("FOREMAN_REDIS_URL", None)
        self.database_url = database_url
        self.workdir = workdir
        self.key = ""
        self.log_path = workdir / "server.log"

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}

    def prepare(self) -> None:
        subprocess.run(
            [*_cli(), "migrate"], env=self.env, check=True, capture_output=True, timeout=120
        )
        created = subprocess.run(
            [
                *_cli(),
                *("keys", "create", "--org", ORG, "--name", "bench", "--permissions", "*"),
                *("--rate-limit", "unlimited", "--quiet"),
            ],
            env=self.env,
            check=True,
            capture_output=True,
            text=True,
            timeout=60,
        )
        self.key = created.stdout.strip()

    def start(self) -> None:
        argv = [*_cli(), "serve", "--host", HOST, "--port", str(self.port)]
        argv += ["--workers", str(self.workers)]
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [*argv, "--log-level", "warning"],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
            )
        try:
            self._wait_healthy(30, self.log_path)
        except RuntimeError as exc:
            raise RuntimeError(f"our server did not start: {exc}") from None

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)


class Reference(Api):
    """The TypeScript reference, run by serve.sh in a process group of its own."""

    label = "reference"
    is_reference = True

    def __init__(self, serve: Path, database: str, workdir: Path) -> None:
        super().__init__()
        self.serve = serve
        self.database = database
        self.log_path = workdir / "reference.log"
        admin = create_engine(POSTGRES_ADMIN_URL, pool_size=1)
        self.database_url = admin.url.set(database=database).render_as_string(hide_password=False)
        admin.dispose()

    @property
    def headers(self) -> dict[str, str]:
        # The reference's auth: one fixed token, and the organisation in a header.
        return {"Authorization": f"Bearer {REFERENCE_TOKEN}", "x-org-id": ORG}

    def start(self) -> None:
        built = REFERENCE_BUILT.exists()
        if not built:
            print(
                f"reference: building it with npm into {REFERENCE_DIR} (first run "
                "only, a few minutes)...",
                file=sys.stderr,
            )
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [str(self.serve), str(self.port), self.database],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # its own process group: stop() kills all of it
            )
        # serve.sh execs node, so self.pid is node's once it answers.
        timeout = REFERENCE_START_TIMEOUT if built else REFERENCE_BUILD_TIMEOUT
        self._wait_healthy(timeout, self.log_path)

    def stop(self) -> None:
        """SIGTERM to the whole process group (serve.sh, npm, node), SIGKILL after 10 s."""
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=10)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=10)


def reference_missing() -> str | None:
    """Why the reference cannot run here, or None."""
    if not REFERENCE_SERVE.is_file():
        return f"{REFERENCE_SERVE} not found (set FOREMAN_BENCH_REFERENCE_SERVE)"
    if not os.access(REFERENCE_SERVE, os.X_OK):
        return f"{REFERENCE_SERVE} is not executable"
    missing = [
        tool for tool in ("node", "npm", "npx", "psql", "createdb") if not shutil.which(tool)
    ]
    if missing:
        return f"{', '.join(missing)} not on PATH"
    return None


def _admin_sql(statement: str) -> None:
    admin = create_engine(POSTGRES_ADMIN_URL, pool_size=1)
    try:
        with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql(statement)
    finally:
        admin.dispose()


@contextlib.contextmanager
def sqlite_database() -> Iterator[tuple[str, Path]]:
    workdir = Path(tempfile.mkdtemp(prefix="foreman_bench_"))
    try:
        yield f"sqlite:///{workdir / 'bench.db'}", workdir
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


@contextlib.contextmanager
def postgres_database() -> Iterator[tuple[str, Path]]:
    admin = create_engine(POSTGRES_ADMIN_URL, pool_size=1)
    name = f"foreman_bench_{uuid.uuid4().hex[:12]}"
    workdir = Path(tempfile.mkdtemp(prefix="foreman_bench_"))
    with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    try:
        yield admin.url.set(database=name).render_as_string(hide_password=False), workdir
    finally:
        with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()
        shutil.rmtree(workdir, ignore_errors=True)


@contextlib.contextmanager
def reference_server() -> Iterator[Reference]:
    """The reference started on a throwaway database; stopped and dropped whatever happens."""
    workdir = Path(tempfile.mkdtemp(prefix="foreman_bench_ts_"))
    reference = Reference(REFERENCE_SERVE, f"foreman_bench_ts_{uuid.uuid4().hex[:12]}", workdir)
    try:
        reference.start()
        yield reference
    finally:
        reference.stop()
        try:
            # serve.sh created it with createdb (if it got that far). Its migration also
            # creates two cluster-wide roles; they are shared by every reference database.
            _admin_sql(f'DROP DATABASE IF EXISTS "{reference.database}" WITH (FORCE)')
        finally:
            shutil.rmtree(workdir, ignore_errors=True)


# --------------------------------------------------------------------------- scenarios


@dataclass
class Settings:
    connections: int
    duration: float
    warmup: float
    metrics_cost: bool = False
    """Also run ours on PostgreSQL with metrics off, side by side."""
    only: tuple[str, ...] = ()
    """Run only these scenarios (all when empty): each on databases no other scenario has
    loaded first."""


class Bench:
    """The scenarios against one started server, each as an unmeasured setup then a load."""

    def __init__(self, api: Api, settings: Settings) -> None:
        self.api = api
        self.s = settings
        self.results: dict[str, Figures] = {}
        self.broken: dict[str, str] = {}
        """Scenarios the server answers wrongly: key → what it answered."""
        self.failed: str | None = None
        """Why the remaining scenarios are skipped (the reference only)."""
        self.peak_rss = 0.0
        self.run_ids: list[str] = []
        self.task_ids: list[str] = []
        self.shared_run = ""
        self.list_run = ""
        self.data_runs: list[tuple[str, str]] = []
        self.data_run = ""
        self.claim_slices: list[list[str]] = []

    @property
    def label(self) -> str:
        return self.api.label

    # -- plumbing

    def _call(self, method: str, path: str, body: Any = None, ok: int = 200) -> Any:
        status, answer = self.api.request(method, API + path, body)
        if status != ok:
            raise RuntimeError(f"{method} {path} answered {status}: {str(answer)[:300]}")
        return answer

    def _new_run(self, tag: str) -> str:
        return str(self._call("POST", "/runs", {"inputData": {"bench": tag}}, 201)["id"])

    def _new_task(self, run_id: str, n: int = 0) -> str:
        body = {"runId": run_id, "type": "bench.noop", "inputData": {"n": n}}
        return str(self._call("POST", "/tasks", body, 201)["id"])

    def _load(self, producers: list[loadgen.Producer]) -> tuple[loadgen.LoadResult, Figures]:
        pid = self.api.pid
        cpu0, pg0, client0 = _proc_cpu_seconds(pid), _postgres_cpu_seconds(), time.process_time()
        machine0 = _machine_busy_seconds()
        wall0 = time.perf_counter()
        result = loadgen.run(
            HOST,
            self.api.port,
            producers,
            duration=self.s.duration,
            warmup=self.s.warmup,
            max_requests=MAX_REQUESTS,
        )
        wall = time.perf_counter() - wall0
        cpu1, pg1, client1 = _proc_cpu_seconds(pid), _postgres_cpu_seconds(), time.process_time()
        machine = (_machine_busy_seconds() - machine0) / wall
        latencies, statuses = result.measured()
        figures = _figures(latencies, result.elapsed, statuses)
        # CPU over the whole load (warm-up included): a share of wall time, in cores.
        figures.server_cpu = (cpu1 - cpu0) / wall
        figures.postgres_cpu = _cpu_delta(pg0, pg1) / wall
        figures.client_cpu = (client1 - client0) / wall
        figures.machine_cpu = machine
        figures.errors = result.errors
        self.peak_rss = max(self.peak_rss, rss_mib(pid))
        return result, figures

    def _seed(self, what: str, producers: list[loadgen.Producer], count: int | None) -> None:
        """An unmeasured load that must succeed: every answer 201."""
        result = loadgen.run(
            HOST, self.api.port, producers, duration=SEED_SECONDS, warmup=0, max_requests=count
        )
        _, statuses = result.measured()
        bad = {s: n for s, n in statuses.items() if s != 201}
        if bad or result.errors or (count is not None and sum(statuses.values()) != count):
            raise RuntimeError(f"seeding {what}: statuses {statuses} errors {result.errors[:2]}")

    def _expect(self, name: str, figures: Figures, ok: int) -> None:
        bad = {s: n for s, n in figures.statuses.items() if s != ok}
        if bad or figures.errors:
            print(
                f"  ! {self.label} {name}: unexpected statuses {bad} errors {figures.errors[:3]}",
                file=sys.stderr,
            )
        self.results[name] = figures

    def _progress(self, name: str) -> None:
        f = self.results.get(name)
        if f is None:
            if name in self.broken:
                print(f"  {self.label:<18} {name:<15} broken: {self.broken[name]}", file=sys.stderr)
            return
        unit = "pairs/s" if name == "claim-complete" else "req/s"
        print(
            f"  {self.label:<18} {name:<15} {f.rps:7.0f} {unit}  p50 {f.p50_ms:6.1f} ms  "
            f"p99 {f.p99_ms:6.1f} ms  n={f.count}  cores: server {f.server_cpu:.2f} "
            f"pg {f.postgres_cpu:.2f} client {f.client_cpu:.2f} machine {f.machine_cpu:.2f}",
            file=sys.stderr,
        )

    def _repeat(self, requests: list[bytes]) -> list[loadgen.Producer]:
        """One producer per connection cycling through ``requests`` from its own offset."""

        def producer_for(i: int) -> loadgen.Producer:
            position = [i * 97]

            def produce(_status: int, _body: bytes) -> bytes | None:
                position[0] += 1
                return requests[position[0] % len(requests)]

            return produce

        return [producer_for(i) for i in range(self.s.connections)]

    # -- create run

    def setup_create_run(self) -> None:
        pass

    def create_run(self) -> None:
        sink: list[str] = []

        def producer_for(i: int) -> loadgen.Producer:
            request = self.api.build("POST", "/runs", {"inputData": {"bench": i}})

            def produce(status: int, body: bytes) -> bytes | None:
                if status == 201 and len(sink) < 10_000:
                    sink.append(json.loads(body)["id"])
                return request

            return produce

        _, figures = self._load([producer_for(i) for i in range(self.s.connections)])
        self._expect("create-run", figures, 201)
        self.run_ids = sink[: self.s.connections]

    # -- create task, every connection on one run

    def setup_create_task(self) -> None:
        self.shared_run = self._new_run("create-task")

    def create_task(self) -> None:
        sink: list[str] = []
        run_id = self.shared_run

        def producer_for(i: int) -> loadgen.Producer:
            request = self.api.build(
                "POST", "/tasks", {"runId": run_id, "type": "bench.noop", "inputData": {"n": i}}
            )

            def produce(status: int, body: bytes) -> bytes | None:
                if status == 201 and len(sink) < 10_000:
                    sink.append(json.loads(body)["id"])
                return request

            return produce

        _, figures = self._load([producer_for(i) for i in range(self.s.connections)])
        self._expect("create-task", figures, 201)
        self.task_ids = sink

    # -- get task

    def setup_get_task(self) -> None:
        if not self.task_ids:  # the create scenario did not run (--profile) or made nothing
            run_id = self._new_run("get-task")
            self.task_ids = [self._new_task(run_id, n) for n in range(200)]

    def get_task(self) -> None:
        sample = self.task_ids[:2000]
        requests = [self.api.build("GET", f"/tasks/{task}") for task in sample]
        _, figures = self._load(self._repeat(requests))
        self._expect("get-task", figures, 200)

    # -- list the tasks of a run of LIST_TASKS tasks, newest first, 20 a page

    def setup_list_tasks(self) -> None:
        run_id = self._new_run("list-tasks")
        request = self.api.build(
            "POST", "/tasks", {"runId": run_id, "type": "bench.noop", "inputData": {}}
        )
        self._seed("tasks to list", self._repeat([request]), LIST_TASKS)
        page = self._call("GET", f"/tasks?runId={run_id}&limit=20")
        if len(page["data"]) != 20 or page["pagination"]["total"] != LIST_TASKS:
            raise RuntimeError(f"list tasks: {len(page['data'])} tasks, {page['pagination']}")
        self.list_run = run_id

    def list_tasks(self) -> None:
        request = self.api.build("GET", f"/tasks?runId={self.list_run}&limit=20")
        _, figures = self._load(self._repeat([request]))
        self._expect("list-tasks", figures, 200)

    # -- write run data: one run per connection, 100 keys each

    def setup_write_data(self) -> None:
        # The reference requires a taskId (a task of the run) on every entry; ours accepts
        # one, so both get the same body: a task per connection's run, made here.
        runs = list(self.run_ids)
        while len(runs) < self.s.connections:
            runs.append(self._new_run("write-data"))
        self.data_runs = [(run, self._new_task(run, i)) for i, run in enumerate(runs)]

    def write_data(self) -> None:
        def producer_for(run: str, task: str) -> loadgen.Producer:
            counter = [0]

            def produce(_status: int, _body: bytes) -> bytes | None:
                counter[0] += 1
                c = counter[0]
                body = {
                    "taskId": task,
                    "key": f"metric.{c % 100}",
                    "value": {"step": c, "loss": 0.5},
                    "tags": ["bench", f"t{c % 10}"],
                }
                return self.api.build("POST", f"/runs/{run}/data", body)

            return produce

        _, figures = self._load([producer_for(run, task) for run, task in self.data_runs])
        self._expect("write-data", figures, 201)

    # -- latest by key, all by key: a run with DATA_ENTRIES entries of one key

    def setup_data_run(self) -> None:
        """Seeded through the API (the same requests for both implementations, each keeping
        its own bookkeeping right); the last entry, written alone after the rest, is marked."""
        if self.data_run:
            return
        started = time.perf_counter()
        run_id = self._new_run("run-data")
        task_id = self._new_task(run_id)
        counter = [0]

        def produce(_status: int, _body: bytes) -> bytes | None:
            counter[0] += 1
            body = {"taskId": task_id, "key": DATA_KEY, "value": {"version": counter[0]}}
            return self.api.build("POST", f"/runs/{run_id}/data", body)

        self._seed("run data", [produce] * self.s.connections, DATA_ENTRIES - 1)
        final = {"taskId": task_id, "key": DATA_KEY, "value": {"version": DATA_ENTRIES}}
        self._call("POST", f"/runs/{run_id}/data", final, 201)
        self.data_run = run_id
        print(
            f"  {self.label:<18} seeded {DATA_ENTRIES:,} entries of one key through the API "
            f"in {time.perf_counter() - started:.1f} s",
            file=sys.stderr,
        )

    def _data_query(self, name: str, query: str, expect: Callable[[list[Any]], bool]) -> bool:
        """Probe a run-data query once; False (and the scenario marked broken) if it fails."""
        status, body = self.api.request("GET", f"{API}/runs/{self.data_run}/data?{query}")
        if status != 200:
            message = body.get("error", body) if isinstance(body, dict) else body
            self.broken[name] = f"{status} {str(message)[:120]}"
            return False
        data = body.get("data", []) if isinstance(body, dict) else []
        if not expect(data):
            summary = [entry.get("value") for entry in data[:3]]
            print(
                f"  ! {self.label} {name}: {len(data)} entries, first values {summary!r}",
                file=sys.stderr,
            )
        return True

    def setup_latest_by_key(self) -> None:
        self.setup_data_run()

    def latest_by_key(self) -> None:
        query = f"key={DATA_KEY}"

        def latest(data: list[Any]) -> bool:
            return len(data) == 1 and data[0].get("value") == {"version": DATA_ENTRIES}

        if not self._data_query("latest-by-key", query, latest):
            return
        request = self.api.build("GET", f"/runs/{self.data_run}/data?{query}")
        _, figures = self._load(self._repeat([request]))
        self._expect("latest-by-key", figures, 200)

    def setup_all_by_key(self) -> None:
        self.setup_data_run()

    def all_by_key(self) -> None:
        query = f"key={DATA_KEY}&includeAll=true&limit=100"

        def newest_hundred(data: list[Any]) -> bool:
            return len(data) == 100 and data[0].get("value") == {"version": DATA_ENTRIES}

        if not self._data_query("all-by-key", query, newest_hundred):
            return
        request = self.api.build("GET", f"/runs/{self.data_run}/data?{query}")
        _, figures = self._load(self._repeat([request]))
        self._expect("all-by-key", figures, 200)

    # -- claim + complete (ours only: the reference has no claim)

    def setup_claim_complete(self) -> None:
        """``queued`` tasks, one run per connection, enough for the measured load."""
        created = self.results.get("create-task")
        rate = created.rps if created and created.count else 500.0
        # A task pair costs two PATCHes; pairs/s has been 0.35-0.7 x the create rate (on one
        # run). Running out early only shortens the measured window (a notice says so).
        per_connection = math.ceil(
            1.25 * rate * (self.s.warmup + self.s.duration) / self.s.connections
        )
        per_connection = max(10, min(CLAIM_TASKS_CAP, per_connection))
        slices: list[list[str]] = [[] for _ in range(self.s.connections)]

        def producer_for(i: int) -> loadgen.Producer:
            run_id = self._new_run(f"claim-{i}")
            body = {"runId": run_id, "type": "bench.noop", "inputData": {}, "status": "queued"}
            request = self.api.build("POST", "/tasks", body)
            sink = slices[i]
            sent = [0]

            def produce(status: int, answer: bytes) -> bytes | None:
                if status == 201:
                    sink.append(json.loads(answer)["id"])
                if sent[0] >= per_connection:
                    return None
                sent[0] += 1
                return request

            return produce

        started = time.perf_counter()
        self._seed("queued tasks", [producer_for(i) for i in range(self.s.connections)], None)
        self.claim_slices = slices
        print(
            f"  {self.label:<18} created {sum(map(len, slices)):,} queued tasks in "
            f"{time.perf_counter() - started:.1f} s",
            file=sys.stderr,
        )

    def claim_complete(self) -> None:
        """PATCH running (queueJobId, leaseSeconds), then PATCH completed (same queueJobId,
        outputData), task after task; per task pairs/s, latency per PATCH request."""
        slices = self.claim_slices

        def producer_for(tasks: list[str]) -> loadgen.Producer:
            step = [0]

            def produce(_status: int, _body: bytes) -> bytes | None:
                index, phase = divmod(step[0], 2)
                step[0] += 1
                if index >= len(tasks):
                    return None
                task = tasks[index]
                job = f"bench-{task}"
                if phase == 0:
                    body = {"status": "running", "queueJobId": job, "leaseSeconds": 60.0}
                else:
                    body = {"status": "completed", "queueJobId": job, "outputData": {"n": index}}
                return self.api.build("PATCH", f"/tasks/{task}", body)

            return produce

        result, figures = self._load([producer_for(tasks) for tasks in slices])
        self._expect("claim-complete", figures, 200)
        # Task pairs whose claim started inside the measured window (their complete followed).
        pairs = 0
        for log in result.connections:
            for j in range(0, len(log.latencies) - 1, 2):
                if log.starts[j] >= result.measure_start:
                    pairs += 1
        figures.requests_per_second = figures.rps
        figures.rps = pairs / result.elapsed
        if any(
            len(log.latencies) >= 2 * len(tasks)
            for log, tasks in zip(result.connections, slices, strict=True)
        ):
            print(
                f"  ({self.label} claim-complete: a connection ran out of tasks before the "
                "deadline; the rate is over the time they lasted)",
                file=sys.stderr,
            )

    # -- running

    def setup(self, key: str) -> None:
        getattr(self, "setup_" + key.replace("-", "_"))()

    def measure(self, key: str) -> None:
        getattr(self, key.replace("-", "_"))()

    def scenario(self, key: str, settle: Callable[[], None]) -> None:
        """Setup and measure one scenario, ``settle`` (every side's vacuum) in between. The
        reference's failures skip the rest of its scenarios (with a message) instead of
        stopping the benchmark."""
        if self.failed:
            return
        try:
            if not self.api.alive():
                raise RuntimeError("the server process is gone")
            self.setup(key)
            settle()
            self.measure(key)
        except Exception as exc:
            if not self.api.is_reference:
                raise
            self.failed = f"{key}: {exc}"
            print(f"reference: skipping the rest: {self.failed}", file=sys.stderr)
            return
        self._progress(key)


def run_side_by_side(benches: list[Bench]) -> None:
    """Every scenario on every server; the order flips each scenario (ours first, then the
    reference first, ...) so that a change in the machine's load falls on both. Before each
    measured load every side's database is vacuumed and analysed (see :mod:`planner`)."""

    def settle() -> None:
        for bench in benches:
            bench.api.analyze()

    for index, (key, _, on_reference) in enumerate(SCENARIOS):
        if benches and benches[0].s.only and key not in benches[0].s.only:
            continue
        order = benches if index % 2 == 0 else benches[::-1]
        for bench in order:
            if bench.api.is_reference and not on_reference:
                continue
            bench.scenario(key, settle)


# --------------------------------------------------------------------------- output


@dataclass
class Column:
    title: str
    bench: Bench
    rss: float = float("nan")


CELL = 24
OURS_PG = "ours, PostgreSQL"
OURS_PG_NO_METRICS = "ours, PG, metrics off"
REFERENCE_TITLE = "reference, PostgreSQL"


def _cell(bench: Bench, key: str, on_reference: bool) -> str:
    if bench.api.is_reference and not on_reference:
        return f"{'(no claim in its API)':^{CELL}}"
    if key in bench.broken:
        return f"{'broken (' + bench.broken[key].split()[0] + ')':^{CELL}}"
    f = bench.results.get(key)
    if f is None:
        return f"{'-':^{CELL}}"
    return f"{f.rps:8,.0f} {f.p50_ms:7.1f} {f.p99_ms:7.1f}"


def print_table(
    columns: list[Column],
    settings: Settings,
    load: tuple[float, float, float],
    reference_skipped: str | None,
) -> None:
    width = 32
    ours = next((c for c in columns if c.title == OURS_PG), None)
    ref = next((c for c in columns if c.title == REFERENCE_TITLE), None)
    print()
    print(
        f"Foreman API{', ours vs the TypeScript reference' if ref else ''}: one server process "
        f"each, "
        f"{settings.connections} keep-alive connections, {settings.duration:g} s per scenario "
        f"after {settings.warmup:g} s warm-up"
    )
    print(
        f"{os.cpu_count()} CPUs; load average at the start {load[0]:.2f} {load[1]:.2f} "
        f"{load[2]:.2f} (1, 5, 15 min); the machine is shared, figures are noisy"
    )
    print()
    ratio_head = "ours÷ref" if ours and ref else ""
    head = " | ".join(f"{c.title:^{CELL}}" for c in columns)
    print(f"{'':<{width}} | {head} | {ratio_head}".rstrip(" |"))
    sub = " | ".join(f"{'req/s':>8} {'p50 ms':>7} {'p99 ms':>7}" for _ in columns)
    print(f"{'scenario':<{width}} | {sub}" + (" |" if ratio_head else ""))
    print("-" * (width + 3 + len(sub) + 11))
    for key, label, on_reference in SCENARIOS:
        cells = " | ".join(_cell(c.bench, key, on_reference) for c in columns)
        ratio = ""
        if ours and ref and on_reference:
            mine, theirs = ours.bench.results.get(key), ref.bench.results.get(key)
            ratio = f"{mine.rps / theirs.rps:8.2f}" if mine and theirs and theirs.rps else "-"
        print((f"{label:<{width}} | {cells}" + (f" | {ratio:>8}" if ratio_head else "")).rstrip())
    print()
    if reference_skipped:
        print(f"reference: skipped: {reference_skipped}")
    for c in columns:
        if c.bench.failed:
            print(f"{c.title}: stopped early: {c.bench.failed}")
        for key, answer in c.bench.broken.items():
            print(f"{c.title}, {key}: broken, it answered {answer}")
    claims = [
        f"{c.title} {c.bench.results['claim-complete'].requests_per_second:,.0f} PATCH/s"
        for c in columns
        if "claim-complete" in c.bench.results
    ]
    if claims:
        print(
            "claim + complete: task pairs/s (two PATCHes each), p50/p99 per PATCH request; "
            + ", ".join(claims)
            + (". The reference has no claim." if ref else ".")
        )
    print(
        "RSS (VmRSS) after the benchmark: "
        + ", ".join(
            f"{c.title} {c.rss:.0f} MiB (peak seen {c.bench.peak_rss:.0f})" for c in columns
        )
    )
    print()
    print(
        "CPU in cores over each load (1.00 = one core busy): srv = the server process, "
        "pg = all postgres\nprocesses (others' included), all = the whole machine; "
        "n = requests measured:"
    )
    for key, label, _ in SCENARIOS:
        parts = []
        for c in columns:
            f = c.bench.results.get(key)
            if f is None:
                parts.append("-")
                continue
            pg = "" if c.title.endswith("SQLite") else f" pg {f.postgres_cpu:.2f}"
            parts.append(f"srv {f.server_cpu:.2f}{pg} all {f.machine_cpu:.2f} n={f.count:,}")
        print(f"{label:<{width}} | " + " | ".join(f"{part:<34}" for part in parts).rstrip())
    _print_metrics_cost(columns)
    if ref:
        print()
        print(NOTES, end="")


def _print_metrics_cost(columns: list[Column]) -> None:
    on = next((c for c in columns if c.title == OURS_PG), None)
    off = next((c for c in columns if c.title == OURS_PG_NO_METRICS), None)
    if on is None or off is None:
        return
    print()
    print(
        "metrics on ÷ off, ours on PostgreSQL in the same run: req/s, and the server's CPU "
        "per request\n(less sensitive to a busy machine than req/s):"
    )
    for key, label, _ in SCENARIOS:
        with_them, without = on.bench.results.get(key), off.bench.results.get(key)
        if not (with_them and without and without.rps and with_them.rps):
            continue
        cpu_on = 1e6 * with_them.server_cpu / with_them.rps
        cpu_off = 1e6 * without.server_cpu / without.rps
        print(
            f"  {label:<32} req/s {with_them.rps / without.rps:6.3f}   CPU/request "
            f"{cpu_on:6.0f} µs vs {cpu_off:6.0f} µs = {cpu_on / cpu_off:5.3f}"
        )


NOTES = """\
Same work on both, with these differences (the reference's API, not the harness):
- write run data: the reference requires a taskId on each entry, so both are sent one (ours
  accepts it and checks that the task belongs to the run; the reference checks too).
- all by key: both return the newest 100 of 2,000 entries; ours also counts the matches
  (pagination.total 2,000), the reference reports the page length (100) and does not count.
- latest by key: the reference's query is invalid SQL (its outer ORDER BY names an alias of
  the inner query), so it answers 404 to every key; it is not measured.
- get task / list tasks: both read the same shapes; the reference wraps every query in its own
  transaction with SET LOCAL for row-level security, ours filters on org_id.
- each side has its own database; the fixtures are the same size on both (a run of 200 tasks
  to list, 2,000 entries of one key), only the tables' sizes differ, as each side creates rows
  at its own rate during the create and write scenarios.
"""


# --------------------------------------------------------------------------- profiling


def _py_spy() -> str | None:
    local = Path(sys.executable).with_name("py-spy")
    if local.exists():
        return str(local)
    return shutil.which("py-spy")


def _summarise_folded(path: Path, top: int = 25) -> None:
    own: dict[str, int] = {}
    inclusive: dict[str, int] = {}
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = stack.split(";")
        own[frames[-1]] = own.get(frames[-1], 0) + count
        for frame in set(frames):
            inclusive[frame] = inclusive.get(frame, 0) + count
    if not total:
        print("py-spy recorded no samples")
        return
    print(f"\n{total} samples of the thread holding the GIL (py-spy --gil): the server's CPU\n")
    print(f"Top {top} by own time (where the CPU is):")
    for frame, count in sorted(own.items(), key=lambda kv: -kv[1])[:top]:
        print(f"  {100 * count / total:5.1f}%  {frame}")
    print(f"\nTop {top} by inclusive time, excluding the event loop and thread plumbing:")
    boring = (
        *("_bootstrap", "run (threading", "_worker (concurrent", "run (asyncio"),
        *("run_forever", "_run_once", "_run (asyncio", "run (uvicorn", "main ("),
        *("<module>", "serve (uvicorn", "cmd_serve", "_run_module", "run (concurrent"),
    )
    shown = 0
    for frame, count in sorted(inclusive.items(), key=lambda kv: -kv[1]):
        if any(b in frame for b in boring):
            continue
        print(f"  {100 * count / total:5.1f}%  {frame}")
        shown += 1
        if shown >= top:
            break


def profile(settings: Settings, scenario: str, backend: str = "postgres") -> int:
    spy = _py_spy()
    if spy is None:
        print(
            "py-spy is not installed. Install it into the venv for benchmarking only:\n"
            "  .venv/bin/pip install py-spy\n"
            "then rerun with --profile, or attach by hand while a benchmark runs:\n"
            "  py-spy top --pid <server pid>\n"
            "  py-spy record --pid <server pid> --duration 10 -o profile.svg"
        )
        return 2
    name = "SQLite" if backend == "sqlite" else "PostgreSQL"
    database = sqlite_database() if backend == "sqlite" else postgres_database()
    with database as (url, workdir):
        server = Server(url, workdir, f"ours ({name})")
        server.prepare()
        server.start()
        try:
            bench = Bench(server, settings)
            bench.setup(scenario)
            out = workdir / "profile.folded"
            seconds = str(int(settings.warmup + settings.duration + 1))
            spy_proc = subprocess.Popen(
                [
                    *(spy, "record", "--pid", str(server.pid), "--rate", "250"),
                    *("--format", "raw", "--output", str(out), "--duration", seconds),
                    *("--nonblocking", "--gil"),
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
            )
            time.sleep(0.5)
            bench.measure(scenario)
            bench._progress(scenario)
            output, _ = spy_proc.communicate(timeout=120)
            if spy_proc.returncode != 0 or not out.exists():
                print(f"py-spy failed ({spy_proc.returncode}): {output.decode()[-1500:]}")
                print(
                    "It needs ptrace rights on the server process (root, or "
                    "CAP_SYS_PTRACE in a container)."
                )
                return 2
            print(
                f"\nProfile of the server during '{scenario}' on {name} "
                f"(py-spy --gil, 250 Hz, {settings.duration:g} s):"
            )
            _summarise_folded(out)
            keep = Path(tempfile.gettempdir()) / f"foreman_api_profile_{scenario}.folded"
            shutil.copy(out, keep)
            print(f"\nFolded stacks kept in {keep} (flamegraph.pl or speedscope can read them).")
        finally:
            server.stop()
    return 0


# --------------------------------------------------------------------------- main


def _ours(
    backend: str, url: str, workdir: Path, settings: Settings, **env: str
) -> tuple[Server, Bench]:
    label = f"ours ({'SQLite' if backend == 'sqlite' else 'PostgreSQL'})"
    server = Server(url, workdir, label, **env)
    server.prepare()
    server.start()
    print(
        f"{server.label}: pid {server.pid}, port {server.port}, RSS {rss_mib(server.pid):.0f} MiB",
        file=sys.stderr,
    )
    return server, Bench(server, settings)


def bench_backend(
    backend: str, settings: Settings, with_reference: bool
) -> tuple[list[Column], str | None]:
    """Our server on ``backend``; with the reference (PostgreSQL), scenario by scenario.

    Returns the columns and, if the reference was wanted but could not start, why."""
    database = sqlite_database() if backend == "sqlite" else postgres_database()
    title = "ours, SQLite" if backend == "sqlite" else OURS_PG
    with database as (url, workdir):
        server, bench = _ours(backend, url, workdir, settings)
        try:
            ours = Column(title, bench)
            with contextlib.ExitStack() as stack:
                mine = [ours]
                if backend == "postgres" and settings.metrics_cost:
                    mine.append(stack.enter_context(_without_metrics(settings)))
                ref_api: Reference | None = None
                skipped = None
                if with_reference:
                    try:
                        ref_api = stack.enter_context(reference_server())
                    except Exception as exc:  # missing build tools, npm/tsc or start failure
                        skipped = f"it did not start: {exc}"
                        print(f"reference: skipped: {skipped}", file=sys.stderr)
                if ref_api is None:
                    run_side_by_side([c.bench for c in mine])
                    _note_rss(mine)
                    return mine, skipped
                print(
                    f"reference: pid {ref_api.pid}, port {ref_api.port}, "
                    f"RSS {rss_mib(ref_api.pid):.0f} MiB",
                    file=sys.stderr,
                )
                reference = Column(REFERENCE_TITLE, Bench(ref_api, settings))
                run_side_by_side([*(c.bench for c in mine), reference.bench])
                _note_rss([*mine, reference])
                return [*mine, reference], None
        finally:
            server.stop()


def _note_rss(columns: list[Column]) -> None:
    for column in columns:
        column.rss = rss_mib(column.bench.api.pid)


@contextlib.contextmanager
def _without_metrics(settings: Settings) -> Iterator[Column]:
    """Ours on PostgreSQL with ``FOREMAN_METRICS_ENABLED=false``, on its own database."""
    with postgres_database() as (url, workdir):
        server, bench = _ours("postgres", url, workdir, settings, FOREMAN_METRICS_ENABLED="false")
        try:
            yield Column(OURS_PG_NO_METRICS, bench)
        finally:
            server.stop()


def _terminate(signum: int, _frame: Any) -> None:
    """SIGTERM/SIGHUP: unwind, so that the servers are stopped and the databases dropped."""
    print(f"api_bench: signal {signum}, stopping the servers", file=sys.stderr)
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    load = os.getloadavg()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument(
        "--duration", type=float, default=8.0, help="measured seconds per scenario (default 8)"
    )
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument(
        "--quick", action="store_true", help="2 s per scenario, 0.5 s warm-up (a smoke run)"
    )
    parser.add_argument(
        "--no-reference", action="store_true", help="do not run the TypeScript reference"
    )
    parser.add_argument(
        "--only",
        action="append",
        choices=PROFILE_SCENARIOS,
        default=[],
        help="run only this scenario (repeatable): measured without the others' writes "
        "loading the databases first",
    )
    parser.add_argument(
        "--metrics-cost",
        action="store_true",
        help="also run ours on PostgreSQL with FOREMAN_METRICS_ENABLED=false, side by side",
    )
    parser.add_argument(
        "--profile",
        nargs="?",
        const="get-task",
        choices=PROFILE_SCENARIOS,
        help="profile one scenario (default get-task) of ours with py-spy, on PostgreSQL "
        "(or SQLite with --backend sqlite)",
    )
    args = parser.parse_args(argv)
    if args.connections < 1 or args.duration <= 0:
        parser.error("--connections and --duration must be positive")
    duration = 2.0 if args.quick else args.duration
    settings = Settings(
        connections=args.connections,
        duration=duration,
        warmup=0.5 if args.quick else min(1.0, duration / 5),
        metrics_cost=args.metrics_cost,
        only=tuple(args.only),
    )
    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGHUP, _terminate)
    if args.profile:
        return profile(settings, args.profile, "sqlite" if args.backend == "sqlite" else "postgres")
    backends = ["sqlite", "postgres"] if args.backend == "both" else [args.backend]
    skipped = None
    if args.no_reference:
        skipped = "--no-reference"
    elif "postgres" not in backends:
        skipped = "it is PostgreSQL only: compare with --backend postgres or both"
    else:
        skipped = reference_missing()
    if skipped:
        print(f"reference: skipped: {skipped}", file=sys.stderr)
    columns: list[Column] = []
    for backend in backends:
        more, why = bench_backend(backend, settings, backend == "postgres" and not skipped)
        columns += more
        skipped = skipped or why
    print_table(columns, settings, load, skipped)
    return 0


if __name__ == "__main__":
    sys.exit(main())
