"""``foreman`` through real processes: an API server, worker processes, Redis, and the
command itself, as a user runs it (``--json`` parsed, exit codes checked), and
``foreman runs watch`` in a pseudo-terminal, read as the screen it draws."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
from collections.abc import Callable
from typing import Any

import pexpect
import redis

from foreman_api.schemas import Task, TaskStatus
from foreman_worker import ForemanClient, submit
from tests.test_worker_integration import (  # noqa: F401  (fixtures)
    BIN,
    QUEUE,
    ROOT,
    ApiServer,
    Workers,
    api,
    client,
    conn,
    new_task,
    wait_terminal,
    workers,
)


def foreman_env(api: ApiServer, redis_url: str) -> dict[str, str]:
    return {
        **os.environ,
        "FOREMAN_API_URL": api.url,
        "FOREMAN_API_KEY": api.key,
        "FOREMAN_REDIS_URL": redis_url,
        "PYTHONPATH": str(ROOT),
        "COLUMNS": "160",
    }


def foreman(
    env: dict[str, str], *args: str, code: int = 0, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [str(BIN / "foreman"), *args], env=env, capture_output=True, text=True, timeout=timeout
    )
    assert done.returncode == code, (args, done.returncode, done.stdout, done.stderr)
    return done


def as_json(done: subprocess.CompletedProcess[str]) -> Any:
    return json.loads(done.stdout)


def test_foreman_shows_runs_tasks_attempts_workers_and_queues(
    api: ApiServer,
    workers: Workers,
    client: ForemanClient,
    new_task: Callable[..., Task],
    redis_url: str,
) -> None:
    env = foreman_env(api, redis_url)
    failing = new_task("itest.always-fails", max_retries=1)
    fine = new_task("itest.noop", {"n": 1})
    assert wait_terminal(client, failing).status is TaskStatus.FAILED
    assert wait_terminal(client, fine).status is TaskStatus.COMPLETED
    run_id = str(failing.run_id)

    listed = as_json(foreman(env, "runs", "ls", "--json", "--limit", "50"))
    [mine] = [run for run in listed if run["id"] == run_id]
    assert (mine["status"], mine["totalTasks"], mine["failedTasks"]) == ("failed", 2, 1)

    shown = as_json(foreman(env, "runs", "show", run_id, "--json"))
    assert sorted(t["type"] for t in shown["tasks"]) == ["itest.always-fails", "itest.noop"]
    assert shown["run"]["status"] == "failed"

    task = as_json(foreman(env, "tasks", "show", str(failing.id), "--json"))
    assert [a["outcome"] for a in task["attempts"]] == ["retrying", "failed"]
    assert all(a["workerId"] for a in task["attempts"])
    assert task["task"]["errorData"]["type"] == "ValueError"

    failed = as_json(foreman(env, "tasks", "ls", "--run", run_id, "--status", "failed", "--json"))
    assert [t["id"] for t in failed] == [str(failing.id)]

    screen = foreman(env, "runs", "show", run_id).stdout
    assert "✗ failed" in screen and "itest.always-fails" in screen and "never works" in screen
    detail = foreman(env, "tasks", "show", str(failing.id)).stdout
    assert "Traceback" in detail and "ValueError: never works" in detail

    watched = as_json(foreman(env, "runs", "watch", run_id, "--json", code=1))
    assert watched["run"]["status"] == "failed"

    live = as_json(foreman(env, "workers", "ls", "--json"))
    assert len(live) == 2 and all(QUEUE in w["queues"] for w in live)
    queues = {q["queue"]: q for q in as_json(foreman(env, "queues", "--json"))}
    assert queues[QUEUE]["workers"] == 2

    unknown = foreman(env, "tasks", "show", "0" * 8 + "-0000-4000-8000-" + "0" * 12, code=3)
    assert "not found" in unknown.stderr
    foreman(env, "runs", "show", "not-an-id", code=2)


def test_tasks_show_lists_each_field_of_invalid_input(
    api: ApiServer,
    workers: Workers,
    client: ForemanClient,
    new_task: Callable[..., Task],
    redis_url: str,
) -> None:
    env = foreman_env(api, redis_url)
    task = new_task("itest.lines", [{"qty": 1}, {"sku": "b", "qty": "three"}])
    assert wait_terminal(client, task).status is TaskStatus.FAILED
    detail = foreman(env, "tasks", "show", str(task.id)).stdout
    assert "error: InvalidInput: inputData is not a valid list[Line]" in detail
    assert "  0.sku: Field required\n" in detail
    assert "  1.qty: Input should be a valid integer" in detail
    shown = as_json(foreman(env, "tasks", "show", str(task.id), "--json"))
    assert [e["field"] for e in shown["task"]["errorData"]["errors"]] == ["0.sku", "1.qty"]


def test_foreman_retries_a_failed_task_and_watches_its_run_complete(
    api: ApiServer,
    workers: Workers,
    client: ForemanClient,
    new_task: Callable[..., Task],
    redis_url: str,
) -> None:
    env = foreman_env(api, redis_url)
    task = new_task("itest.typed", {"x": 1, "y": "north"})  # bad input: fails at once
    assert wait_terminal(client, task).status is TaskStatus.FAILED
    retried = foreman(env, "tasks", "retry", str(task.id), "--input", '{"x": 1, "y": 2}')
    assert "1 task(s) queued again and enqueued" in retried.stdout
    watched = as_json(foreman(env, "runs", "watch", str(task.run_id), "--json", "--timeout", "30"))
    assert watched["run"]["status"] == "completed"
    assert [t["outputData"] for t in watched["tasks"]] == [{"x": 2, "y": 1}]
    again = as_json(foreman(env, "runs", "retry", str(task.run_id), "--json"))
    assert again == {"moved": 0, "taskIds": []}
    foreman(env, "tasks", "retry", str(task.id), code=4)  # completed: not retried


def test_runs_watch_redraws_the_run_in_place_until_it_completes(
    api: ApiServer,
    workers: Workers,
    client: ForemanClient,
    conn: redis.Redis,
    redis_url: str,
) -> None:
    env = foreman_env(api, redis_url)
    run = client.create_run({"watch": True}).unwrap()
    count = 6
    transcript = io.StringIO()
    watch = pexpect.spawn(
        str(BIN / "foreman"),
        ["runs", "watch", str(run.id), "--interval", "0.2"],
        env={**env, "TERM": "xterm-256color"},
        dimensions=(40, 120),
        encoding="utf-8",
        timeout=60,
    )
    watch.logfile_read = transcript
    watch.expect("0/0 tasks settled")  # watching before the tasks exist: however slow it starts
    for i in range(count):
        submit(
            run.id,
            "itest.counted",
            {"sleep": 0.8, "i": i},
            client=client,
            queue=QUEUE,
            connection=conn,
        )
    seen: list[int] = []
    while watch.expect([rf"(\d+)/{count} tasks settled", pexpect.EOF]) == 0:
        seen.append(int(watch.match.group(1)))
    watch.close()
    assert watch.exitstatus == 0, transcript.getvalue()[-2000:]
    # the screen was redrawn while the tasks finished: progress rose step by step
    assert seen[-1] == count and len(set(seen)) >= 3, seen
    assert seen == sorted(seen)
    assert "✓ completed" in transcript.getvalue()
    assert re.search(r"\x1b\[\d*A", transcript.getvalue())  # cursor up: redrawn in place
    final = client.get_run(run.id).unwrap()
    assert (final.status, final.completed_tasks) == ("completed", count)
