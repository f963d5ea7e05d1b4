"""Dashboard benchmark: server time of its pages on PostgreSQL with 100,000 runs and a run
of 1,000 tasks.

    .venv/bin/python bench/ui_bench.py [--runs 100000] [--tasks 1000] [--requests 20]

A throwaway ``foreman_bench_*`` PostgreSQL database (dropped at the end), ``foreman-api
migrate``, one ``foreman-api serve --workers 1`` process. The runs are written by one
``INSERT … SELECT generate_series`` (one a second, newest last, every tenth failed, each
with ``metadata.customer``); the big run gets its 1,000 tasks as a tree (a root, 10
children, the rest grandchildren; every 50th failed with a traceback, the rest completed
with timings), 50 run data entries, then ``ANALYZE`` (as autovacuum would). The script
signs in through the form like a browser and asks each page ``--requests`` times after 3
unmeasured ones, over one kept-alive connection.

"Server time" is the ``Server-Timing: app;dur=…`` every dashboard response carries: from
the route's start (session lookup included) to the rendered page. The goal is 300 ms for
the runs list and for the 1,000-task run's page.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import statistics
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parent.parent))

import sqlalchemy as sa
from api_bench import HOST, ORG, Server, postgres_database
from planner import analyze

from foreman_api.storage.engine import create_engine
from foreman_api.storage.tables import run_data, tasks

GOAL_MS = 300.0
TRACEBACK = 'Traceback (most recent call last):\n  File "x.py", line 1\nValueError: bad'
RUNS_SQL = """
INSERT INTO runs (id, org_id, status, input_data, metadata, total_tasks, completed_tasks,
                  failed_tasks, cancelled_tasks, created_at, updated_at, started_at,
                  completed_at, duration_ms, auto_complete, auto_completed)
SELECT gen_random_uuid(), :org,
       CASE WHEN i % 10 = 0 THEN 'failed' ELSE 'completed' END,
       jsonb_build_object('n', i), jsonb_build_object('customer', 'c-' || i),
       3, CASE WHEN i % 10 = 0 THEN 2 ELSE 3 END, CASE WHEN i % 10 = 0 THEN 1 ELSE 0 END, 0,
       :start + i * interval '1 second', :start + i * interval '1 second',
       :start + i * interval '1 second', :start + i * interval '1 second' + interval '2 s',
       2000, true, true
FROM generate_series(1, :count) AS i
"""


def seed(database_url: str, *, run_count: int, task_count: int) -> str:
    """The runs, and the big run with its tasks and data; returns the big run's id."""
    engine = create_engine(database_url, pool_size=1)
    start = datetime.now(UTC) - timedelta(seconds=run_count + 60)
    big = uuid.uuid4()
    now = datetime.now(UTC)
    with engine.begin() as conn:
        conn.execute(sa.text(RUNS_SQL), {"org": ORG, "start": start, "count": run_count})
        conn.execute(
            sa.text(
                "INSERT INTO runs (id, org_id, status, input_data, total_tasks, "
                "completed_tasks, failed_tasks, cancelled_tasks, created_at, updated_at, "
                "started_at, auto_complete, auto_completed) VALUES (:id, :org, 'running', "
                "'{}', :total, :done, :failed, 0, :now, :now, :now, true, false)"
            ),
            {
                "id": big,
                "org": ORG,
                "total": task_count,
                "done": task_count - task_count // 50,
                "failed": task_count // 50,
                "now": now,
            },
        )
        rows: list[dict[str, Any]] = []
        root = uuid.uuid4()
        children = [uuid.uuid4() for _ in range(10)]
        for i in range(task_count):
            ident = root if i == 0 else children[i - 1] if i <= 10 else uuid.uuid4()
            parent = None if i == 0 else root if i <= 10 else children[i % 10]
            failed = i % 50 == 49
            began = now + timedelta(milliseconds=20 * i)
            rows.append(
                {
                    "id": ident,
                    "run_id": big,
                    "parent_task_id": parent,
                    "org_id": ORG,
                    "type": f"step-{i % 7}",
                    "status": "failed" if failed else "completed",
                    "input_data": {"i": i, "payload": "x" * 40},
                    "output_data": None if failed else {"ok": True, "i": i},
                    "error_data": (
                        {"type": "ValueError", "message": "bad", "traceback": TRACEBACK}
                        if failed
                        else None
                    ),
                    "retry_count": 0,
                    "max_retries": 3,
                    "queue": "default",
                    "attempt_count": 1,
                    "created_at": began - timedelta(milliseconds=5),
                    "updated_at": began + timedelta(milliseconds=15),
                    "queued_at": began - timedelta(milliseconds=5),
                    "started_at": began,
                    "completed_at": began + timedelta(milliseconds=15),
                    "duration_ms": 15,
                }
            )
        conn.execute(sa.insert(tasks), rows)
        conn.execute(
            sa.insert(run_data),
            [
                {
                    "id": uuid.uuid4(),
                    "run_id": big,
                    "task_id": root,
                    "org_id": ORG,
                    "key": f"key-{i:03d}",
                    "value": {"i": i},
                    "tags": ["bench"],
                    "created_at": now,
                    "updated_at": now,
                }
                for i in range(50)
            ],
        )
        conn.execute(  # what a write through the API keeps beside each entry
            sa.text(
                "INSERT INTO run_data_latest (run_id, key, seq) SELECT run_id, key, max(seq) "
                "FROM run_data WHERE run_id = :run GROUP BY run_id, key"
            ),
            {"run": big},
        )
        conn.execute(
            sa.text(
                "INSERT INTO run_data_tags (run_data_seq, tag, run_id) "
                "SELECT seq, 'bench', run_id FROM run_data WHERE run_id = :run"
            ),
            {"run": big},
        )
    engine.dispose()
    analyze(database_url)
    return str(big)


class Browser:
    """A signed-in dashboard session over one kept-alive connection."""

    def __init__(self, port: int) -> None:
        self.conn = http.client.HTTPConnection(HOST, port, timeout=60)
        self.cookies: dict[str, str] = {}

    def request(
        self, method: str, path: str, body: dict[str, str] | None = None, **headers: str
    ) -> tuple[int, dict[str, str], bytes]:
        sent = {"Cookie": "; ".join(f"{k}={v}" for k, v in self.cookies.items()), **headers}
        payload = None
        if body is not None:
            payload = urlencode(body)
            sent["Content-Type"] = "application/x-www-form-urlencoded"
        self.conn.request(method, path, body=payload, headers=sent)
        response = self.conn.getresponse()
        data = response.read()
        for value in response.headers.get_all("set-cookie") or []:
            name, _, rest = value.partition("=")
            self.cookies[name] = rest.split(";", 1)[0]
        return response.status, dict(response.headers.items()), data

    def sign_in(self, key: str) -> None:
        _, _, form = self.request("GET", "/ui/signin")
        token = re.search(rb'name="csrf_token" value="([^"]+)"', form)
        assert token is not None
        status, _, _ = self.request(
            "POST", "/ui/signin", {"csrf_token": token[1].decode(), "api_key": key}
        )
        assert status == 303, status


def measure(browser: Browser, path: str, count: int, **headers: str) -> dict[str, float]:
    server: list[float] = []
    wall: list[float] = []
    size = 0
    for i in range(count + 3):
        started = time.perf_counter()
        status, answer, body = browser.request("GET", path, **headers)
        elapsed = (time.perf_counter() - started) * 1000
        assert status == 200, (path, status, body[:300])
        timing = re.search(r"dur=([\d.]+)", answer.get("server-timing", ""))
        assert timing is not None, answer
        if i >= 3:
            server.append(float(timing[1]))
            wall.append(elapsed)
        size = len(body)
    server.sort()
    return {
        "p50": statistics.median(server),
        "p95": server[max(0, int(len(server) * 0.95) - 1)],
        "max": server[-1],
        "wall": statistics.median(wall),
        "kib": size / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=100_000)
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--requests", type=int, default=20)
    args = parser.parse_args()
    with postgres_database() as (url, workdir):
        server = Server(url, workdir, "ours, PostgreSQL")
        server.prepare()
        began = time.perf_counter()
        big = seed(url, run_count=args.runs, task_count=args.tasks)
        print(
            f"seeded {args.runs:,} runs and a run of {args.tasks:,} tasks "
            f"in {time.perf_counter() - began:.1f} s; load average {os.getloadavg()[0]:.2f}"
        )
        server.start()
        try:
            browser = Browser(server.port)
            browser.sign_in(server.key)
            pages = [
                ("runs list, first page", "/ui", {}),
                ("runs list, page 1,000", "/ui?page=1000", {}),
                ("runs list, status=failed", "/ui?status=failed", {}),
                ("runs list, last 1h", "/ui?window=1h", {}),
                ("runs list, search customer=c-5000", "/ui?q=customer%3Dc-5000", {}),
                ("runs list, search text 'c-9999'", "/ui?q=c-9999", {}),
                (f"run page, {args.tasks:,} tasks", f"/ui/runs/{big}", {}),
                (
                    f"run page live part, {args.tasks:,} tasks",
                    f"/ui/runs/{big}",
                    {"HX-Request": "true", "HX-Target": "run-live"},
                ),
            ]
            print(f"\n{'page':44} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8} {'wall':>8} {'KiB':>7}")
            results = {}
            for label, path, headers in pages:
                figures = measure(browser, path, args.requests, **headers)
                results[label] = figures
                print(
                    f"{label:44} {figures['p50']:8.1f} {figures['p95']:8.1f} "
                    f"{figures['max']:8.1f} {figures['wall']:8.1f} {figures['kib']:7.0f}"
                )
            print(
                "\nserver time = Server-Timing (route start to rendered page, session lookup "
                "included); wall = the request seen from the client on loopback (median)"
            )
            over = [label for label, f in results.items() if f["p50"] > GOAL_MS]
            verdict = "all within" if not over else "over: " + ", ".join(over)
            print(f"goal: p50 <= {GOAL_MS:.0f} ms server time: {verdict}")
            print(json.dumps({k: round(v["p50"], 1) for k, v in results.items()}))
        finally:
            server.stop()


if __name__ == "__main__":
    main()
