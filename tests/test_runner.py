"""The runner's paths, on fakeredis and an in-memory API (tests/worker_apps/fakes.py)."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import fakeredis
import pytest
from pydantic import BaseModel
from rq import Queue
from rq.registry import ScheduledJobRegistry, StartedJobRegistry

from foreman_api.schemas import TaskStatus
from foreman_worker import Fail, Retry, TaskContext
from foreman_worker.enqueue import enqueue, marker_key
from foreman_worker.registry import Backoff, Registry
from foreman_worker.runner import Outcome, Runner, Runtime, configure, on_job_failure
from foreman_worker.settings import WorkerSettings
from foreman_worker.worker import ForemanWorker
from tests.worker_apps.fakes import FakeClient


class Order(BaseModel):
    order_id: str
    amount: float


@pytest.fixture
def redis() -> fakeredis.FakeRedis:
    return fakeredis.FakeRedis()


@pytest.fixture
def client() -> FakeClient:
    return FakeClient()


@pytest.fixture
def reg() -> Registry:
    return Registry()


@pytest.fixture
def runner(client: FakeClient, redis: fakeredis.FakeRedis, reg: Registry) -> Runner:
    return Runner(
        Runtime(client=client, connection=redis, registry=reg),  # type: ignore[arg-type]
        rand=lambda: 0.5,
    )


def run(runner: Runner, task_id: Any, job_id: str = "job-1") -> Outcome:
    return runner.run(str(task_id), job_id=job_id, queue="default")


def test_success_completes_with_output(runner: Runner, client: FakeClient, reg: Registry) -> None:
    seen: list[TaskContext] = []

    @reg.task("double")
    def double(ctx: TaskContext, data: dict[str, int]) -> dict[str, int]:
        seen.append(ctx)
        return {"value": data["n"] * 2}

    task = client.add_task("double", {"n": 21})
    assert run(runner, task.id) is Outcome.COMPLETED
    done = client.tasks[str(task.id)]
    assert done.status == TaskStatus.COMPLETED and done.output_data == {"value": 42}
    assert done.queue_job_id == "job-1"
    assert seen[0].attempt == 1 and seen[0].task_id == str(task.id)
    assert seen[0].run_id == str(client.run_id)


def test_pydantic_input_and_model_output(runner: Runner, client: FakeClient, reg: Registry) -> None:
    @reg.task("echo-order")
    def echo(ctx: TaskContext, order: Order) -> Order:
        return Order(order_id=order.order_id.upper(), amount=order.amount)

    task = client.add_task("echo-order", {"order_id": "ab", "amount": 2})
    assert run(runner, task.id) is Outcome.COMPLETED
    assert client.tasks[str(task.id)].output_data == {"order_id": "AB", "amount": 2.0}


def test_invalid_input_fails_without_retry_naming_the_field(
    runner: Runner, client: FakeClient, reg: Registry
) -> None:
    calls: list[Order] = []
    reg.task("charge")(lambda ctx, order: calls.append(order))
    # a lambda has no annotation: register a typed handler instead
    reg._handlers.clear()

    @reg.task("charge")
    def charge(ctx: TaskContext, order: Order) -> None:
        calls.append(order)

    task = client.add_task("charge", {"order_id": "x", "amount": "lots"})
    assert run(runner, task.id) is Outcome.FAILED
    failed = client.tasks[str(task.id)]
    assert failed.status == TaskStatus.FAILED and failed.retry_count == 0
    error = failed.error_data
    assert isinstance(error, dict)
    assert error["type"] == "InvalidInput" and "amount" in str(error["message"])
    assert error["errors"] == [
        {
            "field": "amount",
            "message": "Input should be a valid number, unable to parse string as a number",
        }
    ]
    assert calls == []


def test_unknown_type_fails_without_retry(runner: Runner, client: FakeClient) -> None:
    task = client.add_task("nobody-handles-this")
    assert run(runner, task.id) is Outcome.FAILED
    failed = client.tasks[str(task.id)]
    assert failed.status == TaskStatus.FAILED
    assert isinstance(failed.error_data, dict) and failed.error_data["type"] == "UnknownTaskType"


@pytest.mark.parametrize("value", [{1, 2}, datetime.now(UTC), {"x": float("nan")}, object()])
def test_non_json_output_fails_without_retry(
    runner: Runner, client: FakeClient, reg: Registry, value: object
) -> None:
    reg.task("weird")(lambda ctx: value)
    task = client.add_task("weird")
    assert run(runner, task.id) is Outcome.FAILED
    failed = client.tasks[str(task.id)]
    assert isinstance(failed.error_data, dict) and failed.error_data["type"] == "NonJsonOutput"
    assert failed.retry_count == 0


def test_failure_with_retries_left_is_rescheduled_with_backoff(
    runner: Runner, client: FakeClient, reg: Registry, redis: fakeredis.FakeRedis
) -> None:
    @reg.task("flaky", backoff=Backoff(initial=10, factor=2, maximum=100))
    def flaky(ctx: TaskContext) -> None:
        raise ValueError("boom")

    task = client.add_task("flaky", retry_count=1, max_retries=3)
    before = time.time()
    assert run(runner, task.id) is Outcome.RETRYING
    retrying = client.tasks[str(task.id)]
    assert retrying.status == TaskStatus.RETRYING and retrying.retry_count == 2
    error = retrying.error_data
    assert isinstance(error, dict)
    assert error["type"] == "ValueError" and error["message"] == "boom" and error["attempt"] == 2
    assert "Traceback" in str(error["traceback"]) and len(str(error["traceback"])) <= 8192
    scheduled = ScheduledJobRegistry("default", connection=redis)
    [job_id] = scheduled.get_job_ids()
    due = scheduled.get_scheduled_time(job_id).timestamp()
    # second retry: ceiling 20 s, jitter keeps it in [10, 20]; rand=0.5 gives 15
    assert before + 14 <= due <= time.time() + 16
    assert redis.get(marker_key(str(task.id))) == job_id.encode()


def test_backoff_is_random_within_half_to_full_ceiling(
    client: FakeClient, redis: fakeredis.FakeRedis, reg: Registry
) -> None:
    reg.task("flaky", backoff=Backoff(initial=4, maximum=4))(lambda ctx: 1 / 0)
    for rand, low, high in ((0.0, 2, 2.5), (0.999, 3.5, 4.1)):
        r = Runner(
            Runtime(client=client, connection=redis, registry=reg),  # type: ignore[arg-type]
            rand=lambda rand=rand: rand,
        )
        task = client.add_task("flaky")
        start = time.time()
        assert run(r, task.id) is Outcome.RETRYING
        scheduled = ScheduledJobRegistry("default", connection=redis)
        job_id = redis.get(marker_key(str(task.id)))
        assert job_id is not None
        due = scheduled.get_scheduled_time(job_id.decode()).timestamp() - start
        assert low - 1 <= due <= high


def test_out_of_retries_fails(
    runner: Runner, client: FakeClient, reg: Registry, redis: fakeredis.FakeRedis
) -> None:
    reg.task("flaky")(lambda ctx: 1 / 0)
    task = client.add_task("flaky", retry_count=3, max_retries=3)
    assert run(runner, task.id) is Outcome.FAILED
    failed = client.tasks[str(task.id)]
    assert failed.status == TaskStatus.FAILED and failed.retry_count == 3
    assert isinstance(failed.error_data, dict)
    assert failed.error_data["type"] == "ZeroDivisionError" and failed.error_data["attempt"] == 4
    assert ScheduledJobRegistry("default", connection=redis).get_job_ids() == []


def test_fail_signal_skips_retries_and_retry_signal_sets_the_delay(
    runner: Runner, client: FakeClient, reg: Registry, redis: fakeredis.FakeRedis
) -> None:
    def stop(ctx: TaskContext) -> None:
        raise Fail("card declined")

    def later(ctx: TaskContext) -> None:
        raise Retry(delay=0)

    reg.task("stop")(stop)
    reg.task("later")(later)
    stopped = client.add_task("stop")
    assert run(runner, stopped.id) is Outcome.FAILED
    assert client.tasks[str(stopped.id)].retry_count == 0
    again = client.add_task("later")
    assert run(runner, again.id) is Outcome.RETRYING
    assert len(Queue("default", connection=redis)) == 1  # delay 0: straight on the queue


def test_claim_conflict_skips_without_calling_the_handler(
    runner: Runner, client: FakeClient, reg: Registry
) -> None:
    calls: list[str] = []
    reg.task("t")(lambda ctx: calls.append("ran"))
    for status in (TaskStatus.COMPLETED, TaskStatus.CANCELLED, TaskStatus.FAILED):
        task = client.add_task("t", status=status)
        assert run(runner, task.id) is Outcome.SKIPPED
        assert client.tasks[str(task.id)].status == status
    held = client.add_task("t", status=TaskStatus.RUNNING, queue_job_id="other-job")
    assert run(runner, held.id) is Outcome.SKIPPED
    assert calls == []
    assert run(runner, uuid.uuid4()) is Outcome.SKIPPED  # unknown id


def test_async_handler(runner: Runner, client: FakeClient, reg: Registry) -> None:
    @reg.task("async-add")
    async def add(ctx: TaskContext, data: dict[str, int]) -> int:
        await asyncio.sleep(0.01)
        return data["a"] + data["b"]

    task = client.add_task("async-add", {"a": 2, "b": 3})
    assert run(runner, task.id) is Outcome.COMPLETED
    assert client.tasks[str(task.id)].output_data == 5


@pytest.mark.parametrize("is_async", [False, True])
def test_timeout_is_a_retryable_timeout_error(
    runner: Runner, client: FakeClient, reg: Registry, is_async: bool
) -> None:
    if is_async:

        async def slow(ctx: TaskContext) -> None:
            await asyncio.sleep(5)

        reg.task("slow", timeout=0.2)(slow)
    else:

        def slow_sync(ctx: TaskContext) -> None:
            # a handler's own `except Exception` must not swallow the timeout
            with contextlib.suppress(Exception):
                time.sleep(5)

        reg.task("slow", timeout=0.2)(slow_sync)
    task = client.add_task("slow")
    start = time.monotonic()
    assert run(runner, task.id) is Outcome.RETRYING
    assert time.monotonic() - start < 2
    error = client.tasks[str(task.id)].error_data
    assert isinstance(error, dict) and error["type"] == "TimeoutError"
    assert "timeout" in str(error["message"])


def test_system_exit_in_a_handler_is_a_failure_not_a_crash(
    runner: Runner, client: FakeClient, reg: Registry
) -> None:
    reg.task("exit")(lambda ctx: exit(3))
    task = client.add_task("exit")
    assert run(runner, task.id) is Outcome.RETRYING


def test_context_helpers_are_bound_to_the_run_and_task(
    runner: Runner, client: FakeClient, reg: Registry, redis: fakeredis.FakeRedis
) -> None:
    @reg.task("parent")
    def parent(ctx: TaskContext) -> Any:
        ctx.put("k", 1, tags=["a"])
        ctx.put("k", 2)
        child = ctx.spawn("child", {"x": 1})
        return {
            "latest": ctx.get("k"),
            "missing": ctx.get("nope", "dflt"),
            "all": [e.value for e in ctx.get_all("k")],
            "prefixed": len(ctx.query(key_starts_with=["k"])),
            "child": str(child.id),
        }

    task = client.add_task("parent")
    assert run(runner, task.id) is Outcome.COMPLETED
    out = client.tasks[str(task.id)].output_data
    assert isinstance(out, dict)
    assert out["latest"] == 2 and out["missing"] == "dflt" and out["all"] == [1, 2]
    child = client.tasks[str(out["child"])]
    assert child.parent_task_id == task.id and child.status == TaskStatus.QUEUED
    assert all(str(d.task_id) == str(task.id) for d in client.data)
    assert len(Queue("default", connection=redis)) == 1


def test_enqueued_job_runs_on_a_worker_once(
    client: FakeClient, redis: fakeredis.FakeRedis, reg: Registry
) -> None:
    calls: list[str] = []
    reg.task("once")(lambda ctx: calls.append(ctx.task_id) or "ok")
    configure(Runtime(client=client, connection=redis, registry=reg))  # type: ignore[arg-type]
    try:
        task = client.add_task("once")
        enqueue(task.id, connection=redis)
        enqueue(task.id, connection=redis)
        worker = ForemanWorker(["default"], connection=redis, settings=WorkerSettings())
        worker.work(burst=True)
    finally:
        configure(None)
    assert calls == [str(task.id)]
    assert client.tasks[str(task.id)].status == TaskStatus.COMPLETED


def _abandon(redis: fakeredis.FakeRedis, task_id: str) -> str:
    """A job that a worker started and then died with: its lease in the past."""
    job_id = enqueue(task_id, connection=redis)
    assert job_id is not None
    queue = Queue("default", connection=redis)
    job = queue.fetch_job(job_id)
    assert job is not None
    queue.remove(job)
    redis.delete(marker_key(task_id))
    job.set_status("started")
    registry = StartedJobRegistry("default", connection=redis)
    redis.zadd(registry.key, {f"{job_id}:exec1": time.time() - 1})
    return job_id


@pytest.mark.parametrize(
    ("retry_count", "status"), [(0, TaskStatus.RETRYING), (3, TaskStatus.FAILED)]
)
def test_reaper_recovers_the_task_of_an_abandoned_job(
    client: FakeClient,
    redis: fakeredis.FakeRedis,
    reg: Registry,
    retry_count: int,
    status: TaskStatus,
) -> None:
    reg.task("t")(lambda ctx: None)
    configure(Runtime(client=client, connection=redis, registry=reg))  # type: ignore[arg-type]
    try:
        task = client.add_task("t", status=TaskStatus.RUNNING, retry_count=retry_count)
        job_id = _abandon(redis, str(task.id))
        client.tasks[str(task.id)] = task.model_copy(update={"queue_job_id": job_id})
        worker = ForemanWorker(["default"], connection=redis, settings=WorkerSettings())
        assert worker.reap() == 1
        assert worker.reap() == 0  # another reap inside the interval waits for the lock
    finally:
        configure(None)
    recovered = client.tasks[str(task.id)]
    assert recovered.status == status
    assert isinstance(recovered.error_data, dict) and recovered.error_data["type"] == "WorkerLost"
    queued = Queue("default", connection=redis).job_ids
    assert len(queued) == (1 if status == TaskStatus.RETRYING else 0)


def test_abandoned_job_of_a_task_now_held_elsewhere_is_ignored(
    client: FakeClient, redis: fakeredis.FakeRedis, reg: Registry
) -> None:
    configure(Runtime(client=client, connection=redis, registry=reg))  # type: ignore[arg-type]
    try:
        task = client.add_task("t", status=TaskStatus.RUNNING, queue_job_id="someone-else")
        job_id = _abandon(redis, str(task.id))
        job = Queue("default", connection=redis).fetch_job(job_id)
        from rq.exceptions import AbandonedJobError

        on_job_failure(job, redis, AbandonedJobError, AbandonedJobError(), None)  # type: ignore[arg-type]
        on_job_failure(job, redis, ValueError, ValueError(), None)  # type: ignore[arg-type]
    finally:
        configure(None)
    assert client.tasks[str(task.id)].status == TaskStatus.RUNNING
