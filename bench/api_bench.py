"""API benchmark: req/s and p50/p99 latency of the real service, SQLite and PostgreSQL.

    .venv/bin/python bench/api_bench.py [--backend sqlite|postgres|both] [--duration 10]
                                        [--connections 16] [--quick] [--profile [SCENARIO]]

For each backend it creates a throwaway database (a temp SQLite file; a ``foreman_bench_*``
PostgreSQL database, dropped WITH (FORCE) at the end), runs ``foreman-api migrate``, creates
an unlimited key with ``foreman-api keys create``, starts ONE ``foreman-api serve`` process
and drives it with ``bench/loadgen.py`` (asyncio raw sockets, keep-alive connections). Each
scenario runs a short warm-up, then ``--duration`` seconds or until its work runs out. The
table shows both backends side by side with the figures of the TypeScript implementation
(Node + Express + PostgreSQL, one process, same machine class) for reference.

The run data for latest-by-key is seeded by a direct bulk SQL insert into ``run_data`` (the
last version of each key carries ``is_latest``), not through the API; the scenario checks
through the API that the latest version comes back.

``--profile`` runs one scenario (default: get task) on PostgreSQL with ``py-spy`` attached to
the server and prints where the server's time goes. Install it into the venv for that only:
``.venv/bin/pip install py-spy``.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import random
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
from datetime import timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parent.parent))

import loadgen

from foreman_api.clock import utcnow
from foreman_api.storage.engine import create_engine
from foreman_api.storage.tables import run_data

HOST = "127.0.0.1"
API = "/api/v1"
POSTGRES_ADMIN_URL = os.environ.get(
    "FOREMAN_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
MAX_REQUESTS = 500_000
"""A hard cap on requests per scenario, warm-up included."""

REFERENCE = {
    "create-task": "500-700",
    "get-task": "2,150",
    "claim-complete": "1,000",
    "write-data": "1,230",
    "latest-1k": "broken",
    "latest-100k": "broken",
}
"""The TypeScript implementation's req/s (Node + Express + PostgreSQL, one process)."""

SCENARIOS = [
    ("create-run", "create run"),
    ("create-task", "create task"),
    ("create-task-shared", "create task, all in one run"),
    ("get-task", "get task"),
    ("claim-complete", "claim + complete, per PATCH"),
    ("claim-complete/task", "claim + complete, per task"),
    ("claim-complete-shared", "  one shared run, per PATCH"),
    ("claim-complete-shared/task", "  one shared run, per task"),
    ("write-data", "write run data"),
    ("latest-1k", "latest-by-key, 1,000 entries"),
    ("latest-100k", "latest-by-key, 100,000 entries"),
]
PROFILE_SCENARIOS = ("create-run", "create-task", "get-task", "claim-complete", "write-data",
                     "latest-1k", "latest-100k")
NOTES = """\
Runs: "create task" and "claim + complete" give each connection its own run (the API's cost
per request); the "all in one run" rows put 16 connections on the tasks of ONE run, as 16
workers draining one fan-out would (each create/claim/complete also updates the run's row).
"""


# --------------------------------------------------------------------------- measurement


@dataclass
class Figures:
    rps: float
    p50_ms: float
    p99_ms: float
    count: int
    statuses: dict[int, int]
    server_cpu: float = float("nan")
    """Server process CPU, in cores (1.0 = one core busy), over the measured window."""
    postgres_cpu: float = float("nan")
    client_cpu: float = float("nan")
    machine_cpu: float = float("nan")
    """Busy CPU of the whole machine, in cores (other people's work included)."""
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
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


# --------------------------------------------------------------------------- the service


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _cli() -> list[str]:
    exe = Path(sys.executable).with_name("foreman-api")
    if exe.exists():
        return [str(exe)]
    return [sys.executable, "-m", "foreman_api.cli"]


class Server:
    """One ``foreman-api serve`` process on a free loopback port."""

    def __init__(self, database_url: str, workdir: Path) -> None:
        self.env = {**os.environ, "FOREMAN_DATABASE_URL": database_url}
        self.env.pop("FOREMAN_REDIS_URL", None)
        self.workdir = workdir
        self.port = _free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.key = ""
        self.log_path = workdir / "server.log"

    def prepare(self) -> None:
        subprocess.run([*_cli(), "migrate"], env=self.env, check=True, capture_output=True,
                       timeout=120)
        created = subprocess.run(
            [*_cli(), "keys", "create", "--org", "bench", "--name", "bench",
             "--permissions", "*", "--rate-limit", "unlimited", "--quiet"],
            env=self.env, check=True, capture_output=True, text=True, timeout=60,
        )
        self.key = created.stdout.strip()

    def start(self) -> None:
        log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [*_cli(), "serve", "--host", HOST, "--port", str(self.port), "--workers", "1",
             "--log-level", "warning"],
            env=self.env, stdout=log, stderr=subprocess.STDOUT, cwd=self.workdir,
        )
        log.close()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited: {self.log_path.read_text()[-2000:]}")
            with contextlib.suppress(OSError, http.client.HTTPException):
                if self.request("GET", "/health")[0] == 200:
                    return
            time.sleep(0.1)
        raise RuntimeError("the server did not answer /health within 30 s")

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"}

    def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """One synchronous request, for setup and checks (not measured)."""
        conn = http.client.HTTPConnection(HOST, self.port, timeout=30)
        try:
            payload = None if body is None else json.dumps(body)
            headers = {**self.headers, "Content-Type": "application/json"}
            conn.request(method, path, body=payload, headers=headers)
            response = conn.getresponse()
            raw = response.read()
            return response.status, json.loads(raw) if raw else None
        finally:
            conn.close()

    def build(self, method: str, path: str, body: Any = None) -> bytes:
        return loadgen.build_request(
            method, API + path, host=f"{HOST}:{self.port}", headers=self.headers, body=body
        )


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


# --------------------------------------------------------------------------- scenarios


@dataclass
class Settings:
    connections: int
    duration: float
    warmup: float
    small_entries: int = 1_000
    small_keys: int = 100
    big_entries: int = 100_000
    big_keys: int = 1_000


class Bench:
    """Runs the scenarios against one started server, in order, sharing ids between them."""

    def __init__(self, server: Server, settings: Settings, database_url: str) -> None:
        self.server = server
        self.s = settings
        self.database_url = database_url
        self.results: dict[str, Figures] = {}
        self.run_ids: list[str] = []
        self.task_ids: list[str] = []
        self.org_id = "bench"
        self.peak_rss = 0.0
        self.task_sinks: list[list[str]] = []
        self.shared_task_sinks: list[list[str]] = []

    def _load(self, producers: list[loadgen.Producer]) -> tuple[loadgen.LoadResult, Figures]:
        pid = self.server.pid
        cpu0, pg0, client0 = _proc_cpu_seconds(pid), _postgres_cpu_seconds(), time.process_time()
        machine0 = _machine_busy_seconds()
        wall0 = time.perf_counter()
        result = loadgen.run(HOST, self.server.port, producers, duration=self.s.duration,
                             warmup=self.s.warmup, max_requests=MAX_REQUESTS)
        wall = time.perf_counter() - wall0
        cpu1, pg1, client1 = _proc_cpu_seconds(pid), _postgres_cpu_seconds(), time.process_time()
        figures_machine = (_machine_busy_seconds() - machine0) / wall
        latencies, statuses = result.measured()
        figures = _figures(latencies, result.elapsed, statuses)
        # CPU over the whole load (warm-up included): a share of wall time, in cores.
        figures.server_cpu = (cpu1 - cpu0) / wall
        figures.postgres_cpu = _cpu_delta(pg0, pg1) / wall
        figures.client_cpu = (client1 - client0) / wall
        figures.machine_cpu = figures_machine
        figures.errors = result.errors
        self.peak_rss = max(self.peak_rss, rss_mib(pid))
        return result, figures

    def _expect(self, name: str, figures: Figures, ok: int) -> None:
        bad = {s: n for s, n in figures.statuses.items() if s != ok}
        if bad or figures.errors:
            print(f"  ! {name}: unexpected statuses {bad} errors {figures.errors[:3]}",
                  file=sys.stderr)
        self.results[name] = figures

    def _progress(self, name: str) -> None:
        figures = self.results.get(name)
        if figures:
            print(f"  {name:<20} {figures.rps:8.0f} req/s  p50 {figures.p50_ms:6.1f} ms  "
                  f"p99 {figures.p99_ms:6.1f} ms  n={figures.count}  "
                  f"cores: server {figures.server_cpu:.2f} pg {figures.postgres_cpu:.2f} "
                  f"client {figures.client_cpu:.2f} machine {figures.machine_cpu:.2f}",
                  file=sys.stderr)

    # -- create run

    def create_run(self) -> None:
        sink: list[str] = []

        def producer_for(i: int) -> loadgen.Producer:
            request = self.server.build("POST", "/runs", {"inputData": {"bench": i}})

            def produce(status: int, body: bytes) -> bytes | None:
                if status == 201 and len(sink) < 10_000:
                    sink.append(json.loads(body)["id"])
                return request

            return produce

        _, figures = self._load([producer_for(i) for i in range(self.s.connections)])
        self._expect("create-run", figures, 201)
        self.run_ids = sink[: self.s.connections]
        while len(self.run_ids) < self.s.connections:  # the server failed every create
            status, body = self.server.request("POST", f"{API}/runs", {"inputData": {}})
            if status != 201:
                raise RuntimeError(f"cannot create a run: {status} {body}")
            self.run_ids.append(body["id"])
        status, body = self.server.request("GET", f"{API}/runs/{self.run_ids[0]}")
        if status == 200:
            self.org_id = body.get("orgId", self.org_id)

    # -- create task: one run per connection, so that run counters do not serialise them

    def create_task(self, name: str = "create-task", shared: bool = False) -> None:
        sinks: list[list[str]] = [[] for _ in range(self.s.connections)]
        runs = self.run_ids
        if shared:
            status, body = self.server.request("POST", f"{API}/runs", {"inputData": {}})
            if status != 201:
                raise RuntimeError(f"cannot create a run: {status} {body}")
            runs = [body["id"]] * self.s.connections

        def producer_for(i: int) -> loadgen.Producer:
            request = self.server.build(
                "POST", "/tasks",
                {"runId": runs[i], "type": "bench.noop", "inputData": {"n": i}},
            )
            sink = sinks[i]

            def produce(status: int, body: bytes) -> bytes | None:
                if status == 201:
                    sink.append(json.loads(body)["id"])
                return request

            return produce

        _, figures = self._load([producer_for(i) for i in range(self.s.connections)])
        self._expect(name, figures, 201)
        if not any(sinks):
            raise RuntimeError("no task was created; later scenarios need tasks")
        if shared:
            self.shared_task_sinks = sinks
        else:
            self.task_sinks = sinks
            self.task_ids = [task for sink in sinks for task in sink]

    # -- get task

    def get_task(self) -> None:
        sample = self.task_ids[:2000]
        requests = [self.server.build("GET", f"/tasks/{task}") for task in sample]

        def producer_for(i: int) -> loadgen.Producer:
            position = [i * 97]

            def produce(_status: int, _body: bytes) -> bytes | None:
                position[0] += 1
                return requests[position[0] % len(requests)]

            return produce

        _, figures = self._load([producer_for(i) for i in range(self.s.connections)])
        self._expect("get-task", figures, 200)

    # -- claim + complete: PATCH running (queueJobId), then PATCH completed (outputData)

    def claim_complete(self, name: str = "claim-complete", shared: bool = False) -> None:
        """Each connection drains the tasks it created (its own run, or the shared run)."""
        slices = self.shared_task_sinks if shared else self.task_sinks

        def producer_for(tasks: list[str]) -> loadgen.Producer:
            step = [0]

            def produce(_status: int, _body: bytes) -> bytes | None:
                index, phase = divmod(step[0], 2)
                step[0] += 1
                if index >= len(tasks):
                    return None
                task = tasks[index]
                if phase == 0:
                    return self.server.build(
                        "PATCH", f"/tasks/{task}", {"status": "running", "queueJobId": f"j-{task}"}
                    )
                return self.server.build(
                    "PATCH", f"/tasks/{task}", {"status": "completed", "outputData": {"ok": True}}
                )

            return produce

        result, figures = self._load([producer_for(tasks) for tasks in slices])
        self._expect(name, figures, 200)
        # Per task: claim latency + complete latency, for pairs whose claim was measured.
        task_latencies: list[float] = []
        for log in result.connections:
            for j in range(0, len(log.latencies) - 1, 2):
                if log.starts[j] >= result.measure_start:
                    task_latencies.append(log.latencies[j] + log.latencies[j + 1])
        per_task = _figures(task_latencies, result.elapsed, {200: len(task_latencies)})
        per_task.server_cpu = figures.server_cpu
        per_task.postgres_cpu = figures.postgres_cpu
        per_task.client_cpu = figures.client_cpu
        per_task.machine_cpu = figures.machine_cpu
        self.results[f"{name}/task"] = per_task
        if any(len(log.latencies) >= 2 * len(tasks)
               for log, tasks in zip(result.connections, slices, strict=True)):
            print(f"  ({name}: a connection ran out of tasks before the deadline)",
                  file=sys.stderr)

    # -- write run data: one run per connection, 100 keys each

    def write_data(self) -> None:
        def producer_for(i: int) -> loadgen.Producer:
            run = self.run_ids[i]
            counter = [0]

            def produce(_status: int, _body: bytes) -> bytes | None:
                counter[0] += 1
                c = counter[0]
                return self.server.build(
                    "POST", f"/runs/{run}/data",
                    {"key": f"metric.{c % 100}", "value": {"step": c, "loss": 0.5},
                     "tags": ["bench", f"t{c % 10}"]},
                )

            return produce

        _, figures = self._load([producer_for(i) for i in range(self.s.connections)])
        self._expect("write-data", figures, 201)

    # -- latest-by-key on a seeded run

    def seed(self, entries: int, keys: int) -> tuple[str, list[str], float]:
        """A new run with ``entries`` run-data rows over ``keys`` keys, by bulk SQL insert."""
        status, body = self.server.request("POST", f"{API}/runs", {"inputData": {"seed": entries}})
        if status != 201:
            raise RuntimeError(f"cannot create a run: {status} {body}")
        run_id = uuid.UUID(body["id"])
        key_names = [f"seed.key.{k:05d}" for k in range(keys)]
        versions = entries // keys
        engine = create_engine(self.database_url, pool_size=1)
        started = time.perf_counter()
        base = utcnow()
        try:
            rows: list[dict[str, Any]] = []
            with engine.begin() as conn:
                for version in range(versions):
                    moment = base + timedelta(microseconds=version)
                    for name in key_names:
                        rows.append({
                            "id": uuid.uuid4(), "run_id": run_id, "task_id": None,
                            "org_id": self.org_id, "key": name,
                            "value": {"version": version, "key": name}, "tags": [],
                            "metadata": None, "is_latest": version == versions - 1,
                            "created_at": moment, "updated_at": moment,
                        })
                        if len(rows) >= 5000:
                            conn.execute(run_data.insert(), rows)
                            rows = []
                if rows:
                    conn.execute(run_data.insert(), rows)
                if engine.dialect.name == "postgresql":
                    conn.exec_driver_sql("ANALYZE run_data")
        finally:
            engine.dispose()
        elapsed = time.perf_counter() - started
        # The API must return the latest version of a key.
        probe = key_names[len(key_names) // 2]
        status, body = self.server.request("GET", f"{API}/runs/{run_id}/data?key={probe}")
        if status != 200:
            raise RuntimeError(f"latest-by-key answered {status}: {body}")
        data = body.get("data", [])
        if len(data) != 1 or data[0].get("value", {}).get("version") != versions - 1:
            print(f"  ! latest-by-key returned {data[:2]!r}, expected only version "
                  f"{versions - 1}", file=sys.stderr)
        return str(run_id), key_names, elapsed

    def latest(self, name: str, entries: int, keys: int) -> None:
        run_id, key_names, seconds = self.seed(entries, keys)
        print(f"  seeded {entries:,} entries ({keys:,} keys) by bulk SQL in {seconds:.1f} s",
              file=sys.stderr)
        rng = random.Random(7)

        def producer_for(_i: int) -> loadgen.Producer:
            order = [self.server.build("GET", f"/runs/{run_id}/data?key={k}") for k in
                     rng.sample(key_names, len(key_names))]
            position = [0]

            def produce(_status: int, _body: bytes) -> bytes | None:
                position[0] += 1
                return order[position[0] % len(order)]

            return produce

        _, figures = self._load([producer_for(i) for i in range(self.s.connections)])
        self._expect(name, figures, 200)

    def run_all(self, only: str | None = None) -> None:
        steps: list[tuple[str, Callable[[], None]]] = [
            ("create-run", self.create_run),
            ("create-task", self.create_task),
            ("get-task", self.get_task),
            ("claim-complete", self.claim_complete),
            ("create-task-shared", lambda: self.create_task("create-task-shared", shared=True)),
            ("claim-complete-shared",
             lambda: self.claim_complete("claim-complete-shared", shared=True)),
            ("write-data", self.write_data),
            ("latest-1k", lambda: self.latest("latest-1k", self.s.small_entries,
                                              self.s.small_keys)),
            ("latest-100k", lambda: self.latest("latest-100k", self.s.big_entries,
                                                self.s.big_keys)),
        ]
        for name, step in steps:
            if only and name == only:
                return
            step()
            self._progress(name)
            if name.startswith("claim-complete"):
                self._progress(f"{name}/task")


# --------------------------------------------------------------------------- output


def _cell(figures: Figures | None) -> str:
    if figures is None:
        return f"{'-':>8} {'-':>7} {'-':>7}"
    return f"{figures.rps:8,.0f} {figures.p50_ms:7.1f} {figures.p99_ms:7.1f}"


def print_table(results: dict[str, dict[str, Figures]], rss: dict[str, float],
                settings: Settings) -> None:
    backends = list(results)
    width = 32
    print()
    print(f"Foreman API, one process, {settings.connections} keep-alive connections, "
          f"{settings.duration:g} s per scenario after {settings.warmup:g} s warm-up "
          f"({os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f})")
    print()
    head = " | ".join(f"{b:^24}" for b in backends)
    print(f"{'':<{width}} | {head} | {'TypeScript':>10}")
    sub = " | ".join(f"{'req/s':>8} {'p50 ms':>7} {'p99 ms':>7}" for _ in backends)
    print(f"{'scenario':<{width}} | {sub} | {'req/s':>10}")
    print("-" * (width + 3 + len(sub) + 13))
    for key, label in SCENARIOS:
        cells = " | ".join(_cell(results[b].get(key)) for b in backends)
        ref = REFERENCE.get(key.split("/")[0], "") if "/" not in key else ""
        print(f"{label:<{width}} | {cells} | {ref:>10}")
    print()
    print("CPU in cores over each scenario (1.00 = one core busy): srv = the API process, "
          "pg = all postgres processes,\nall = the whole 2-core machine (other work "
          "included); n = requests measured:")
    for key, label in SCENARIOS:
        parts = []
        for b in backends:
            f = results[b].get(key)
            if f is None:
                parts.append(f"{'-':>24}")
                continue
            pg = f" pg {f.postgres_cpu:.2f}" if b == "postgres" else ""
            parts.append(f"srv {f.server_cpu:.2f}{pg} all {f.machine_cpu:.2f} "
                         f"n={f.count:,}".rjust(34))
        print(f"{label:<{width}} | " + " | ".join(parts))
    print()
    print("Server RSS (VmRSS) at the end: " + ", ".join(
        f"{b} {rss[b]:.0f} MiB" for b in backends))
    print("TypeScript reference: patch task ~1,000 req/s is per PATCH request; its "
          "latest-by-key query is broken.")
    print(NOTES, end="")
    print("Latest-by-key runs are seeded by bulk SQL insert into run_data (is_latest kept on "
          "the last version of each key); queries pick keys at random.")


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
    print(f"\n{total} samples of the thread holding the GIL (py-spy --gil): the server's "
          "Python CPU\n")
    print(f"Top {top} by own time (where the CPU is):")
    for frame, count in sorted(own.items(), key=lambda kv: -kv[1])[:top]:
        print(f"  {100 * count / total:5.1f}%  {frame}")
    print(f"\nTop {top} by inclusive time, excluding the event loop and thread plumbing:")
    boring = ("_bootstrap", "run (threading", "_worker (concurrent", "run (asyncio",
              "run_forever", "_run_once", "_run (asyncio", "run (uvicorn", "main (",
              "<module>", "serve (uvicorn", "cmd_serve", "_run_module", "run (concurrent")
    shown = 0
    for frame, count in sorted(inclusive.items(), key=lambda kv: -kv[1]):
        if any(b in frame for b in boring):
            continue
        print(f"  {100 * count / total:5.1f}%  {frame}")
        shown += 1
        if shown >= top:
            break


def profile(settings: Settings, scenario: str) -> int:
    spy = _py_spy()
    if spy is None:
        print("py-spy is not installed. Install it into the venv for benchmarking only:\n"
              "  .venv/bin/pip install py-spy\n"
              "then rerun with --profile, or attach by hand while a benchmark runs:\n"
              "  py-spy top --pid <server pid>\n"
              "  py-spy record --pid <server pid> --duration 10 -o profile.svg")
        return 2
    with postgres_database() as (url, workdir):
        server = Server(url, workdir)
        server.prepare()
        server.start()
        try:
            bench = Bench(server, settings, url)
            bench.run_all(only=scenario)  # everything the scenario depends on
            out = workdir / "profile.folded"
            spy_proc = subprocess.Popen(
                [spy, "record", "--pid", str(server.pid), "--rate", "250", "--format", "raw",
                 "--output", str(out), "--duration",
                 str(int(settings.warmup + settings.duration + 1)), "--nonblocking", "--gil"],
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            )
            time.sleep(0.5)
            steps: dict[str, Callable[[], None]] = {
                "create-run": bench.create_run, "create-task": bench.create_task,
                "get-task": bench.get_task, "claim-complete": bench.claim_complete,
                "write-data": bench.write_data,
                "latest-1k": lambda: bench.latest("latest-1k", settings.small_entries,
                                                  settings.small_keys),
                "latest-100k": lambda: bench.latest("latest-100k", settings.big_entries,
                                                    settings.big_keys),
            }
            steps[scenario]()
            bench._progress(scenario)
            output, _ = spy_proc.communicate(timeout=120)
            if spy_proc.returncode != 0 or not out.exists():
                print(f"py-spy failed ({spy_proc.returncode}): {output.decode()[-1500:]}")
                print("It needs ptrace rights on the server process (root, or "
                      "CAP_SYS_PTRACE in a container).")
                return 2
            print(f"\nProfile of the server during '{scenario}' on PostgreSQL "
                  f"(py-spy --gil, 250 Hz, {settings.duration:g} s):")
            _summarise_folded(out)
            keep = Path(tempfile.gettempdir()) / f"foreman_api_profile_{scenario}.folded"
            shutil.copy(out, keep)
            print(f"\nFolded stacks kept in {keep} (flamegraph.pl or speedscope can read them).")
        finally:
            server.stop()
    return 0


# --------------------------------------------------------------------------- main


def bench_backend(backend: str, settings: Settings) -> tuple[dict[str, Figures], float]:
    database = sqlite_database() if backend == "sqlite" else postgres_database()
    with database as (url, workdir):
        server = Server(url, workdir)
        server.prepare()
        server.start()
        try:
            print(f"{backend}: server pid {server.pid} on port {server.port}, "
                  f"RSS {rss_mib(server.pid):.0f} MiB", file=sys.stderr)
            bench = Bench(server, settings, url)
            bench.run_all()
            rss = rss_mib(server.pid)
            print(f"  RSS now {rss:.0f} MiB (peak seen {bench.peak_rss:.0f} MiB)",
                  file=sys.stderr)
            return bench.results, rss
        finally:
            server.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument("--duration", type=float, default=10.0,
                        help="measured seconds per scenario (default 10)")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--quick", action="store_true",
                        help="2 s per scenario, 0.5 s warm-up (a smoke run)")
    parser.add_argument("--profile", nargs="?", const="get-task", choices=PROFILE_SCENARIOS,
                        help="profile one scenario (default get-task) on PostgreSQL with py-spy")
    args = parser.parse_args(argv)
    if args.connections < 1 or args.duration <= 0:
        parser.error("--connections and --duration must be positive")
    duration = 2.0 if args.quick else args.duration
    settings = Settings(connections=args.connections, duration=duration,
                        warmup=0.5 if args.quick else min(1.0, duration / 5))
    if args.profile:
        return profile(settings, args.profile)
    backends = ["sqlite", "postgres"] if args.backend == "both" else [args.backend]
    results: dict[str, dict[str, Figures]] = {}
    rss: dict[str, float] = {}
    for backend in backends:
        results[backend], rss[backend] = bench_backend(backend, settings)
    print_table(results, rss, settings)
    return 0


if __name__ == "__main__":
    sys.exit(main())
