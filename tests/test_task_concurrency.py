"""Concurrency on both backends: the claim is the lock, and run counters never drift.

Threads share one in-process app (each TestClient request runs on its own event loop and the
sync routes on worker threads), so requests really do overlap in the database.
"""

from __future__ import annotations

import threading
import uuid
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import sqlalchemy as sa

from foreman_api.storage.engine import read_transaction
from foreman_api.storage.tables import tasks as tasks_table
from tests.conftest import Api
from tests.test_runs import RUNS, TASKS, create_run, create_task

THREADS = 8


def run_in_threads(count: int, work: Callable[[int], Any]) -> list[Any]:
    """Start ``count`` calls at once (behind a barrier) and return their results."""
    barrier = threading.Barrier(count)

    def start(index: int) -> Any:
        barrier.wait(timeout=30)
        return work(index)

    with ThreadPoolExecutor(max_workers=count) as pool:
        return list(pool.map(start, range(count)))


def task_statuses(api: Api, run_id: str) -> Counter[str]:
    with read_transaction(api.engine) as conn:
        rows = conn.execute(
            sa.select(tasks_table.c.status, sa.func.count())
            .where(tasks_table.c.run_id == uuid.UUID(run_id))
            .group_by(tasks_table.c.status)
        ).all()
    return Counter({status: count for status, count in rows})


def assert_counters_match_tasks(api: Api, auth: dict[str, str], run_id: str) -> dict[str, Any]:
    run = dict(api.client.get(f"{RUNS}/{run_id}", headers=auth).json())
    counts = task_statuses(api, run_id)
    assert run["totalTasks"] == sum(counts.values())
    assert run["completedTasks"] == counts["completed"]
    assert run["failedTasks"] == counts["failed"]
    assert run["cancelledTasks"] == counts["cancelled"]
    return run


def test_two_concurrent_claims_exactly_one_wins(api: Api, auth: dict[str, str]) -> None:
    run = create_run(api, auth)
    for _ in range(10):
        task = create_task(api, auth, run["id"])
        responses = run_in_threads(
            2,
            lambda i, task_id=task["id"]: api.client.patch(
                f"{TASKS}/{task_id}",
                headers=auth,
                json={"status": "running", "queueJobId": f"job-{i}"},
            ),
        )
        codes = sorted(r.status_code for r in responses)
        assert codes == [200, 409], [r.text for r in responses]
        winner = next(r for r in responses if r.status_code == 200).json()
        loser = next(r for r in responses if r.status_code == 409).json()
        assert loser["code"] == "invalid_transition"
        stored = api.client.get(f"{TASKS}/{task['id']}", headers=auth).json()
        assert stored["queueJobId"] == winner["queueJobId"]
        # The winner's retry of its lost response is answered again.
        again = api.client.patch(
            f"{TASKS}/{task['id']}",
            headers=auth,
            json={"status": "running", "queueJobId": winner["queueJobId"]},
        )
        assert again.status_code == 200 and again.json() == stored


def test_many_claimers_one_winner(api: Api, auth: dict[str, str]) -> None:
    run = create_run(api, auth)
    task = create_task(api, auth, run["id"])
    responses = run_in_threads(
        THREADS,
        lambda i: api.client.patch(
            f"{TASKS}/{task['id']}", headers=auth, json={"status": "running", "queueJobId": f"{i}"}
        ),
    )
    assert Counter(r.status_code for r in responses) == {200: 1, 409: THREADS - 1}


@pytest.mark.parametrize("with_failures", [False, True], ids=["all-complete", "mixed"])
def test_concurrent_completions_keep_counters_exact(
    api: Api, auth: dict[str, str], with_failures: bool
) -> None:
    run = create_run(api, auth)
    task_ids = [create_task(api, auth, run["id"])["id"] for _ in range(200)]

    def outcome(index: int) -> list[str]:
        if not with_failures:
            return ["completed"]
        return [
            ["completed"],
            ["failed"],
            ["retrying", "failed"],
            ["retrying", "running", "completed"],
            ["cancelled"],
        ][index % 5]

    def worker(thread: int) -> list[int]:
        codes = []
        for index in range(thread, len(task_ids), THREADS):
            path = f"{TASKS}/{task_ids[index]}"
            claim = {"status": "running", "queueJobId": f"w{thread}-{index}"}
            codes.append(api.client.patch(path, headers=auth, json=claim).status_code)
            for status in outcome(index):
                codes.append(
                    api.client.patch(path, headers=auth, json={"status": status}).status_code
                )
        return codes

    results = run_in_threads(THREADS, worker)
    assert {code for codes in results for code in codes} == {200}

    run_after = assert_counters_match_tasks(api, auth, run["id"])
    # exactly one of the concurrent finishing moves was the last: the run finished by itself
    assert run_after["status"] == ("failed" if with_failures else "completed")
    assert run_after["completedAt"] is not None
    assert run_after["totalTasks"] == 200
    if with_failures:
        assert (run_after["completedTasks"], run_after["failedTasks"]) == (80, 80)
        assert task_statuses(api, run["id"])["cancelled"] == 40
    else:
        assert run_after["completedTasks"] == 200


def test_cancel_racing_with_workers_leaves_no_unfinished_task(
    api: Api, auth: dict[str, str]
) -> None:
    """Workers claim/complete and a creator adds tasks while the run is cancelled."""
    run = create_run(api, auth)
    task_ids = [create_task(api, auth, run["id"])["id"] for _ in range(60)]

    def work(thread: int) -> list[int]:
        codes: list[int] = []
        if thread == 0:
            for _ in range(10):
                response = api.client.post(
                    TASKS, headers=auth, json={"runId": run["id"], "type": "late"}
                )
                codes.append(response.status_code)
            return codes
        if thread == 1:
            response = api.client.patch(
                f"{RUNS}/{run['id']}", headers=auth, json={"status": "cancelled"}
            )
            return [response.status_code]
        for index in range(thread, len(task_ids), THREADS - 2):
            path = f"{TASKS}/{task_ids[index]}"
            for status in ("running", "completed" if index % 2 else "failed"):
                codes.append(
                    api.client.patch(path, headers=auth, json={"status": status}).status_code
                )
        return codes

    results = run_in_threads(THREADS, work)
    assert results[1] == [200]
    # Everything is a success or a clean refusal (the run or task was cancelled first).
    assert {code for codes in results for code in codes} <= {200, 201, 409}

    counts = task_statuses(api, run["id"])
    assert set(counts) <= {"completed", "failed", "cancelled"}, counts
    run_after = assert_counters_match_tasks(api, auth, run["id"])
    assert run_after["status"] == "cancelled"
    assert run_after["totalTasks"] == 60 + results[0].count(201)


def test_a_runs_first_claim_racing_its_cancel_settles_cleanly(
    api: Api, auth: dict[str, str]
) -> None:
    """The first claim of a pending run starts the run (on PostgreSQL in one statement that
    locks the task, then the run; a cancel locks the run's unfinished tasks, then the run).
    Raced against the cancel, either may go first and neither is refused (no deadlock)."""

    for _ in range(15):
        run = create_run(api, auth)
        task = create_task(api, auth, run["id"], status="queued")

        def work(thread: int, run_id: str = run["id"], task_id: str = task["id"]) -> Any:
            if thread == 0:
                claim = {"status": "running", "queueJobId": "job-1"}
                return api.client.patch(f"{TASKS}/{task_id}", headers=auth, json=claim)
            cancel = {"status": "cancelled"}
            return api.client.patch(f"{RUNS}/{run_id}", headers=auth, json=cancel)

        claimed, cancelled = run_in_threads(2, work)
        claim_status, cancel_status = claimed.status_code, cancelled.status_code
        assert cancel_status == 200
        assert claim_status in (200, 409)
        after = assert_counters_match_tasks(api, auth, run["id"])
        assert after["status"] == "cancelled"
        assert task_statuses(api, run["id"]) == Counter({"cancelled": 1})
        if claim_status == 200:  # claimed first: the run had started
            assert after["startedAt"] is not None


def test_completions_racing_a_cancel_never_deadlock(api: Api, auth: dict[str, str]) -> None:
    """Tasks of one run complete (each move locks its task, then the run) while the run is
    cancelled (its unfinished tasks, then the run): every request succeeds or is refused
    cleanly, none with a 503, and the counters describe the tasks."""
    for _ in range(3):
        run = create_run(api, auth)
        task_ids = [create_task(api, auth, run["id"], status="queued")["id"] for _ in range(24)]
        for n, task_id in enumerate(task_ids):
            claim = {"status": "running", "queueJobId": f"job-{n}"}
            assert (
                api.client.patch(f"{TASKS}/{task_id}", headers=auth, json=claim).status_code == 200
            )

        def work(thread: int, run_id: str = run["id"], ids: list[str] = task_ids) -> list[int]:
            if thread == 0:
                cancel = {"status": "cancelled"}
                return [api.client.patch(f"{RUNS}/{run_id}", headers=auth, json=cancel).status_code]
            codes = []
            for n in range(thread - 1, len(ids), THREADS - 1):
                done = {"status": "completed", "queueJobId": f"job-{n}"}
                codes.append(
                    api.client.patch(f"{TASKS}/{ids[n]}", headers=auth, json=done).status_code
                )
            return codes

        results = run_in_threads(THREADS, work)
        assert results[0] == [200]
        assert {code for codes in results for code in codes} <= {200, 409}, results
        after = assert_counters_match_tasks(api, auth, run["id"])
        assert after["status"] == "cancelled"
        assert set(task_statuses(api, run["id"])) <= {"completed", "cancelled"}
