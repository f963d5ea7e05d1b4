"""How long a ``/metrics`` scrape takes with many tasks in PostgreSQL.

Fills a throwaway database with ``--tasks`` tasks (of 20 types, every status, in runs of
100) and ``--runs-extra`` more runs by SQL, starts ``foreman-api serve`` with one and
with two processes, and times ``--scrapes`` scrapes of each, one connection per scrape
(so with two processes both answer some). Prints p50/p99/max, the body size and the
number of samples.

    .venv/bin/python bench/metrics_bench.py --tasks 100000
"""

from __future__ import annotations

import argparse
import http.client
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parent.parent))

from api_bench import HOST, Server, postgres_database

from foreman_api.storage.engine import create_engine

TYPES = 20
TASKS_PER_RUN = 100
STATUSES = ("pending", "queued", "running", "retrying", "completed", "failed", "cancelled")


def fill(database_url: str, tasks: int) -> None:
    """``tasks`` tasks in runs of 100, by INSERT … SELECT (seconds, not minutes)."""
    runs = max(tasks // TASKS_PER_RUN, 1)
    engine = create_engine(database_url, pool_size=1)
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO runs (id, org_id, status, total_tasks, created_at, updated_at) "
                "SELECT md5('run' || n)::uuid, 'bench', 'running', :per_run, now(), now() "
                "FROM generate_series(1, :runs) AS n"
            ),
            {"runs": runs, "per_run": TASKS_PER_RUN},
        )
        conn.execute(
            text(
                "INSERT INTO tasks (id, run_id, org_id, type, status, queue, created_at, "
                "updated_at) "
                "SELECT md5('task' || n)::uuid, md5('run' || (1 + n % :runs))::uuid, 'bench', "
                "'bench.type-' || (n % :types), "
                "(CAST(:statuses AS text[]))[1 + n % :status_count], "
                "'default', now(), now() FROM generate_series(1, :tasks) AS n"
            ),
            {
                "runs": runs,
                "tasks": tasks,
                "types": TYPES,
                "statuses": list(STATUSES),
                "status_count": len(STATUSES),
            },
        )
        conn.execute(text("ANALYZE"))
    engine.dispose()


def scrape(port: int) -> tuple[float, bytes]:
    started = time.perf_counter()
    conn = http.client.HTTPConnection(HOST, port, timeout=30)
    try:
        conn.request("GET", "/metrics")
        response = conn.getresponse()
        body = response.read()
        if response.status != 200:
            raise RuntimeError(f"/metrics answered {response.status}: {body[:200]!r}")
    finally:
        conn.close()
    return time.perf_counter() - started, body


def measure(database_url: str, workdir: Path, workers: int, scrapes: int) -> None:
    server = Server(database_url, workdir, f"{workers} process(es)", workers=workers)
    server.prepare()
    server.start()
    try:
        for _ in range(3):  # warm-up: connections, statement caches
            scrape(server.port)
        times = []
        body = b""
        for _ in range(scrapes):
            seconds, body = scrape(server.port)
            times.append(seconds * 1000)
        times.sort()
        p99 = times[min(len(times) - 1, round(0.99 * (len(times) - 1)))]
        samples = sum(len(f.samples) for f in text_string_to_metric_families(body.decode()))
        print(
            f"serve --workers {workers}: scrape p50 {statistics.median(times):6.1f} ms, "
            f"p99 {p99:6.1f} ms, max {times[-1]:6.1f} ms; {len(body):,} bytes, "
            f"{samples:,} samples"
        )
    finally:
        server.stop()


_PER_CALL = """
import sys, time, uuid
from datetime import datetime, timedelta, timezone
from foreman_api.metrics import instruments
n = int(sys.argv[1])
now = datetime.now(timezone.utc)
claimed = {"type": "bench.t", "status": "running", "retry_count": 0,
           "queued_at": now - timedelta(seconds=0.01), "started_at": now}
done = {**claimed, "status": "completed", "updated_at": now + timedelta(seconds=0.2)}
started = time.perf_counter()
for _ in range(n):
    instruments.request_served("PATCH", "/api/v1/tasks/{taskId}", 200, 0.003)
http = (time.perf_counter() - started) / n
started = time.perf_counter()
for _ in range(n):
    instruments.task_moved(claimed)
    instruments.task_moved(done)
task = (time.perf_counter() - started) / n / 2
print(f"{http * 1e6:.1f} {task * 1e6:.1f}")
"""


def instrument_cost(calls: int = 100_000) -> None:
    """What counting costs per request and per task move, in one process and in the
    multi-process mode of ``serve --workers N`` (a fresh interpreter each)."""
    for mode in ("one process", "multi-process"):
        env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
        with tempfile.TemporaryDirectory() as shared:
            if mode == "multi-process":
                env["PROMETHEUS_MULTIPROC_DIR"] = shared
            out = subprocess.run(
                [sys.executable, "-c", _PER_CALL, str(calls)],
                env=env,
                capture_output=True,
                text=True,
                check=True,
                timeout=300,
            ).stdout.split()
        print(
            f"counting, {mode}: {out[0]} µs per HTTP request, {out[1]} µs per task move "
            f"(mean of {calls:,} calls)"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--scrapes", type=int, default=50)
    args = parser.parse_args(argv)
    load = os.getloadavg()
    with postgres_database() as (url, workdir):
        Server(url, workdir, "migration").prepare()  # the schema, before the rows
        started = time.perf_counter()
        fill(url, args.tasks)
        print(
            f"/metrics on PostgreSQL with {args.tasks:,} tasks of {TYPES} types in "
            f"{max(args.tasks // TASKS_PER_RUN, 1):,} runs (filled in "
            f"{time.perf_counter() - started:.1f} s); {args.scrapes} scrapes, one connection "
            f"each; load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
        )
        for workers in (1, 2):
            measure(url, workdir, workers, args.scrapes)
    instrument_cost()
    return 0


if __name__ == "__main__":
    sys.exit(main())
