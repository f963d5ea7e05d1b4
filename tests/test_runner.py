"""The runner's paths against the real API in process, on fakeredis (tests/worker_world.py):
outcomes, retries scheduled for their ``retryAt``, fenced writes of jobs that lost their
claim, and the lease kept while a handler runs."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import re
import signal
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import BaseModel
from rq import SimpleWorker
from rq.exceptions import AbandonedJobError
from rq.suspension import resume, suspend

from foreman_api.schemas import Task, TaskStatus
from foreman_worker import Fail, Retry, TaskContext, shutdown
from foreman_worker.enqueue import is_waiting_job
from foreman_worker.lease import LeaseKeeper
from foreman_worker.registry import Backoff
from foreman_worker.runner import (
    Outcome,
    Runner,
    claim_popped_job,
    on_job_failure,
    send_claim_ahead,
    settle,
)
from foreman_worker.runtime import Runtime, configure
from foreman_worker.settings import WorkerSettings
from foreman_worker.worker import ForemanWorker
from tests.worker_world import World, seconds_from_now

pytestmark = pytest.mark.parametrize("backend", ["sqlite"], indirect=True)


class Order(BaseModel):
    order_id: str
    amount: float


def error_of(task: Task) -> dict[str, Any]:
    assert isinstance(task.error_data, dict)
    return task.error_data


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


# ---- outcomes ------------------------------------------------------------------------------


def test_success_completes_with_output(world: World) -> None:
    seen: list[TaskContext] = []

    @world.registry.task("double")
    def double(ctx: TaskContext, data: dict[str, int]) -> dict[str, int]:
        seen.append(ctx)
        return {"value": data["n"] * 2}

    task = world.task("double", {"n": 21})
    assert world.run(task) is Outcome.COMPLETED
    done = world.get(task)
    assert done.status is TaskStatus.COMPLETED and done.output_data == {"value": 42}
    assert done.queue_job_id == "job-1" and done.lease_expires_at is None
    assert seen[0].attempt == 1 and seen[0].task_id == str(task.id)
    assert seen[0].run_id == str(world.run_id)


def test_pydantic_input_and_model_output(world: World) -> None:
    @world.registry.task("echo-order")
    def echo(ctx: TaskContext, order: Order) -> Order:
        return Order(order_id=order.order_id.upper(), amount=order.amount)

    task = world.task("echo-order", {"order_id": "ab", "amount": 2})
    assert world.run(task) is Outcome.COMPLETED
    assert world.get(task).output_data == {"order_id": "AB", "amount": 2.0}


def test_invalid_input_fails_without_retry_naming_the_field(world: World) -> None:
    calls: list[Order] = []

    @world.registry.task("charge")
    def charge(ctx: TaskContext, order: Order) -> None:
        calls.append(order)

    task = world.task("charge", {"order_id": "x", "amount": "lots"})
    assert world.run(task) is Outcome.FAILED
    failed = world.get(task)
    assert failed.status is TaskStatus.FAILED and failed.retry_count == 0
    error = error_of(failed)
    assert error["type"] == "InvalidInput" and "amount" in str(error["message"])
    assert error["errors"] == [
        {
            "field": "amount",
            "message": "Input should be a valid number, unable to parse string as a number",
        }
    ]
    assert calls == []


def test_unknown_type_fails_without_retry(world: World) -> None:
    task = world.task("nobody-handles-this")
    assert world.run(task) is Outcome.FAILED
    failed = world.get(task)
    assert failed.status is TaskStatus.FAILED and failed.retry_count == 0
    assert error_of(failed)["type"] == "UnknownTaskType"


@pytest.mark.parametrize("value", [{1, 2}, datetime.now(UTC), {"x": float("nan")}, object()])
def test_non_json_output_fails_without_retry(world: World, value: object) -> None:
    world.registry.task("weird")(lambda ctx: value)
    task = world.task("weird")
    assert world.run(task) is Outcome.FAILED
    failed = world.get(task)
    assert error_of(failed)["type"] == "NonJsonOutput" and failed.retry_count == 0


def test_async_handler(world: World) -> None:
    @world.registry.task("async-add")
    async def add(ctx: TaskContext, data: dict[str, int]) -> int:
        await asyncio.sleep(0.01)
        return data["a"] + data["b"]

    task = world.task("async-add", {"a": 2, "b": 3})
    assert world.run(task) is Outcome.COMPLETED
    assert world.get(task).output_data == 5


@pytest.mark.parametrize("is_async", [False, True])
def test_timeout_is_a_retryable_timeout_error(world: World, is_async: bool) -> None:
    if is_async:

        async def slow(ctx: TaskContext) -> None:
            await asyncio.sleep(5)

        world.registry.task("slow", timeout=0.2)(slow)
    else:

        def slow_sync(ctx: TaskContext) -> None:
            # a handler's own `except Exception` must not swallow the timeout
            with contextlib.suppress(Exception):
                time.sleep(5)

        world.registry.task("slow", timeout=0.2)(slow_sync)
    task = world.task("slow")
    start = time.monotonic()
    assert world.run(task) is Outcome.RETRYING
    assert time.monotonic() - start < 2
    error = error_of(world.get(task))
    assert error["type"] == "TimeoutError" and "timeout" in str(error["message"])


def test_system_exit_in_a_handler_is_a_failure_not_a_crash(world: World) -> None:
    world.registry.task("exit")(lambda ctx: exit(3))
    task = world.task("exit")
    assert world.run(task) is Outcome.RETRYING
    assert error_of(world.get(task))["type"] == "SystemExit"


def test_context_helpers_are_bound_to_the_run_and_task(world: World) -> None:
    @world.registry.task("parent")
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

    task = world.task("parent")
    assert world.run(task) is Outcome.COMPLETED
    out = world.get(task).output_data
    assert isinstance(out, dict)
    assert out["latest"] == 2 and out["missing"] == "dflt" and out["all"] == [2, 1]
    assert out["prefixed"] == 1
    child = world.get(str(out["child"]))
    assert child.parent_task_id == task.id and child.status is TaskStatus.QUEUED
    entries = world.client.get_all_run_data(world.run_id, "k").unwrap()
    assert [str(e.task_id) for e in entries] == [str(task.id)] * 2
    assert world.queue().job_ids == [world.marker(child)]


# ---- claims --------------------------------------------------------------------------------


def finished(world: World, status: TaskStatus) -> Task:
    """A task that some other job took to ``status``."""
    task = world.task("t")
    if status is TaskStatus.CANCELLED:
        return world.client.update_task(task.id, status=status).unwrap()
    world.claim(task, "job-0")
    return world.client.update_task(task.id, status=status, queue_job_id="job-0").unwrap()


def test_claim_conflict_skips_without_calling_the_handler(world: World) -> None:
    calls: list[str] = []
    world.registry.task("t")(lambda ctx: calls.append("ran"))
    for status in (TaskStatus.COMPLETED, TaskStatus.CANCELLED, TaskStatus.FAILED):
        task = finished(world, status)
        assert world.run(task) is Outcome.SKIPPED
        assert world.get(task) == task
    held = world.claim(world.task("t"), "other-job")
    assert world.run(held) is Outcome.SKIPPED
    assert world.get(held) == held
    assert world.run(uuid.uuid4()) is Outcome.SKIPPED  # unknown id
    assert calls == []


def lose_claim(world: World, task: Task, how: str) -> Task:
    """Take the claim away from the running job; the task as it then is."""
    if how == "recovered":  # paused past its lease: recovered, then claimed by another job
        world.expire_lease(task)
        [recovered] = world.client.reconcile_tasks(grace_seconds=0).unwrap().recovered
        assert recovered.id == task.id
        return world.claim(task, "job-2")
    world.client.update_run(world.run_id, status="cancelled").unwrap()
    return world.get(task)


@pytest.mark.parametrize("how", ["recovered", "cancelled"])
@pytest.mark.parametrize("ending", ["returns", "raises"])
def test_a_job_that_lost_its_claim_runs_but_its_result_is_discarded(
    world: World, caplog: pytest.LogCaptureFixture, how: str, ending: str
) -> None:
    after_loss: list[Task] = []

    @world.registry.task("t")
    def handler(ctx: TaskContext) -> str:
        after_loss.append(lose_claim(world, ctx.task, how))
        if ending == "raises":
            raise ValueError("too late")
        return "late result"

    task = world.task("t")
    with caplog.at_level(logging.INFO):
        assert world.run(task, "job-1") is Outcome.DISCARDED
    [lost] = after_loss
    assert world.get(task) == lost  # nothing the late job sent was recorded
    assert lost.output_data is None
    assert lost.status is (TaskStatus.RUNNING if how == "recovered" else TaskStatus.CANCELLED)
    [warning] = warnings(caplog)
    assert f"task {task.id} ({task.type}) attempt 1 ran after" in warning
    assert "job job-1 no longer holds the task, its result is discarded (stale_claim" in warning
    assert world.waiting_jobs() == []  # and no retry was scheduled for it


def test_rq_giving_up_on_a_job_leaves_the_task_to_its_lease(world: World) -> None:
    task = world.claim(world.task("t"), "job-x")
    job_id = world.enqueue(task)
    job = world.queue().fetch_job(job_id or "")
    assert job is not None
    on_job_failure(job, world.redis, AbandonedJobError, AbandonedJobError(), None)
    assert world.get(task) == task


# ---- retries -------------------------------------------------------------------------------


def test_failure_with_retries_left_is_scheduled_at_the_front_for_its_retry_at(
    world: World,
) -> None:
    @world.registry.task("flaky", backoff=Backoff(initial=10, factor=2, maximum=100))
    def flaky(ctx: TaskContext) -> None:
        raise ValueError("boom")

    task = world.task("flaky", max_retries=3)
    world.set_columns(task, retry_count=1)
    before = datetime.now(UTC)
    assert world.run(task) is Outcome.RETRYING
    after = datetime.now(UTC)
    retrying = world.get(task)
    assert retrying.status is TaskStatus.RETRYING and retrying.retry_count == 2
    error = error_of(retrying)
    assert error["type"] == "ValueError" and error["message"] == "boom" and error["attempt"] == 2
    assert "Traceback" in str(error["traceback"]) and len(str(error["traceback"])) <= 8192
    # second retry: ceiling 20 s, jitter keeps it in [10, 20]; rand=0.5 gives 15
    assert retrying.retry_at is not None
    slack = timedelta(milliseconds=10)  # stored to the millisecond
    assert before + timedelta(seconds=15) - slack <= retrying.retry_at
    assert retrying.retry_at <= after + timedelta(seconds=15) + slack
    [job_id] = world.scheduled().get_job_ids()
    assert world.marker(task) == job_id
    due = world.scheduled().get_scheduled_time(job_id)
    assert abs(seconds_from_now(due) - seconds_from_now(retrying.retry_at)) <= 1
    job = world.queue().fetch_job(job_id)
    assert job is not None and job.enqueue_at_front is True
    assert world.queue().job_ids == []


def test_backoff_is_random_within_half_to_full_ceiling(world: World) -> None:
    world.registry.task("flaky", backoff=Backoff(initial=4, maximum=4))(lambda ctx: 1 / 0)
    for rand, low, high in ((0.0, 2, 2), (0.999, 3.99, 4)):
        task = world.task("flaky")
        runner = world.runner(rand=functools.partial(float, rand))
        assert world.run(task, runner=runner) is Outcome.RETRYING
        assert low - 0.5 <= seconds_from_now(world.get(task).retry_at) <= high


def test_out_of_retries_fails(world: World) -> None:
    world.registry.task("flaky")(lambda ctx: 1 / 0)
    task = world.task("flaky", max_retries=3)
    world.set_columns(task, retry_count=3)
    assert world.run(task) is Outcome.FAILED
    failed = world.get(task)
    assert failed.status is TaskStatus.FAILED and failed.retry_count == 3
    assert error_of(failed)["type"] == "ZeroDivisionError" and error_of(failed)["attempt"] == 4
    assert world.waiting_jobs() == []


def test_fail_signal_skips_retries_and_retry_signal_sets_the_delay(world: World) -> None:
    def stop(ctx: TaskContext) -> None:
        raise Fail("card declined")

    def later(ctx: TaskContext) -> None:
        raise Retry(delay=0)

    world.registry.task("stop")(stop)
    world.registry.task("later")(later)
    stopped = world.task("stop")
    assert world.run(stopped) is Outcome.FAILED
    assert world.get(stopped).retry_count == 0
    waiting = world.task("other")
    world.enqueue(waiting)
    again = world.task("later")
    assert world.run(again) is Outcome.RETRYING
    # delay 0: straight on the queue, ahead of the tasks already waiting
    assert world.queue().job_ids == [world.marker(again), world.marker(waiting)]


def test_a_retry_claimed_before_it_is_due_is_deferred_not_run(world: World) -> None:
    attempts: list[int] = []

    @world.registry.task("flaky")
    def flaky(ctx: TaskContext) -> str:
        attempts.append(ctx.attempt)
        if ctx.attempt == 1:
            raise Retry(delay=0.8)
        return "ok"

    task = world.task("flaky")
    runner = world.runner()
    assert world.run(task, "job-1", runner=runner) is Outcome.RETRYING
    retrying = world.get(task)
    early = world.marker(task)
    assert early is not None
    world.scheduled().remove(early)  # as RQ's scheduler does when it moves the job on

    assert world.run(task, early, runner=runner) is Outcome.DEFERRED
    assert attempts == [1]
    assert world.get(task) == retrying
    [later] = world.scheduled().get_job_ids()
    assert later != early and world.marker(task) == later
    job = world.queue().fetch_job(later)
    assert job is not None and job.enqueue_at_front is True

    time.sleep(max(seconds_from_now(retrying.retry_at), 0) + 0.05)
    assert world.run(task, later, runner=runner) is Outcome.COMPLETED
    assert attempts == [1, 2]


def test_a_scheduled_retry_is_not_due_before_its_retry_at(world: World) -> None:
    world.registry.task("flaky")(lambda ctx: 1 / 0)
    for _ in range(3):  # any sub-second part of retryAt is enough
        task = world.task("flaky")
        assert world.run(task, runner=world.runner(rand=lambda: 0.3)) is Outcome.RETRYING
        retry_at = world.get(task).retry_at
        assert retry_at is not None
        marker = world.marker(task)
        assert marker is not None
        assert world.scheduled().get_scheduled_time(marker) >= retry_at


# ---- the lease -----------------------------------------------------------------------------


def test_the_lease_is_renewed_while_the_handler_runs(world: World) -> None:
    leases: list[datetime | None] = []

    @world.registry.task("slow")
    def slow(ctx: TaskContext) -> None:
        leases.append(ctx.client.get_task(ctx.task_id).unwrap().lease_expires_at)
        time.sleep(0.6)
        leases.append(ctx.client.get_task(ctx.task_id).unwrap().lease_expires_at)

    task = world.task("slow")
    runner = world.runner(lease_seconds=5, heartbeat_interval=0.1)
    assert world.run(task, runner=runner) is Outcome.COMPLETED
    claimed, renewed = leases
    assert claimed is not None and renewed is not None
    assert (renewed - claimed).total_seconds() >= 0.4
    assert 4.5 <= seconds_from_now(renewed) <= 5  # renewed to about now + 5 s


def test_a_lease_keeper_says_once_that_the_claim_is_gone(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    task = world.claim(world.task("t"), "job-1", lease=5)
    keeper = LeaseKeeper(world.client, lease_seconds=5, interval=0.1)
    try:
        with (
            caplog.at_level(logging.WARNING, logger="foreman_worker.lease"),
            keeper.hold(str(task.id), "job-1") as held,
        ):
            time.sleep(0.3)
            assert not held.lost
            world.client.update_run(world.run_id, status="cancelled").unwrap()
            time.sleep(0.5)
            assert held.lost
    finally:
        keeper.stop()
    [warning] = warnings(caplog)
    assert f"task {task.id}: job job-1 lost its claim" in warning
    assert world.get(task).status is TaskStatus.CANCELLED


# ---- on a worker ---------------------------------------------------------------------------


def test_enqueued_job_runs_on_a_worker_once(world: World) -> None:
    calls: list[str] = []

    @world.registry.task("once")
    def once(ctx: TaskContext) -> str:
        calls.append(ctx.task_id)
        return "ok"

    configure(world.runtime())
    try:
        task = world.task("once")
        assert world.enqueue(task) is not None
        assert world.enqueue(task) is None
        worker = ForemanWorker(
            [world.rq_queue()], connection=world.redis, settings=WorkerSettings()
        )
        worker.work(burst=True)
    finally:
        configure(None)
    assert calls == [str(task.id)]
    done = world.get(task)
    assert done.status is TaskStatus.COMPLETED and done.output_data == "ok"
    marker = world.marker(task)  # left to expire: its job ran, so it blocks nothing
    status, origin = world.redis.hmget(f"rq:job:{marker}", ["status", "origin"])
    assert marker is not None and not is_waiting_job(status, origin, world.rq_queue())


# ---- a completion recorded after RQ's records -------------------------------------------


@pytest.fixture
def settling(world: World) -> Iterator[Runtime]:
    """The installed runtime of ``foreman-worker``: completions are settled after the job."""
    runtime = world.runtime(settle_after_job=True)
    configure(runtime)
    yield runtime
    configure(None)


def test_a_completion_settled_after_the_job_keeps_the_lease_until_recorded(
    world: World, settling: Runtime
) -> None:
    @world.registry.task("t")
    def handler(ctx: TaskContext) -> str:
        return "done"

    task = world.task("t")
    assert world.run(task, runner=Runner(settling)) is Outcome.RECORDING
    # RQ's end-of-job records would be written here: the task is still this job's.
    waiting = world.get(task)
    assert waiting.status is TaskStatus.RUNNING and waiting.queue_job_id == "job-1"
    assert settling.lease.current_task_id == str(task.id)
    settle()
    done = world.get(task)
    assert done.status is TaskStatus.COMPLETED and done.output_data == "done"
    assert settling.lease.current_task_id is None and settling.unsettled is None
    settle()  # nothing left: a no-op


def test_a_completion_settled_after_a_lost_claim_is_discarded(
    world: World, settling: Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    @world.registry.task("t")
    def handler(ctx: TaskContext) -> str:
        lose_claim(world, ctx.task, "cancelled")
        return "late"

    task = world.task("t")
    assert world.run(task, runner=Runner(settling)) is Outcome.RECORDING
    with caplog.at_level(logging.INFO):
        settle()
    assert world.get(task).status is TaskStatus.CANCELLED
    assert any(
        "job job-1 no longer holds the task, its result is discarded (stale_claim" in w
        for w in warnings(caplog)
    )
    assert settling.lease.current_task_id is None


def test_a_worker_claims_ahead_and_settles_each_completion(world: World, settling: Runtime) -> None:
    ran: list[str] = []

    @world.registry.task("t")
    def handler(ctx: TaskContext) -> int:
        ran.append(ctx.task_id)
        return len(ran)

    tasks = [world.task("t") for _ in range(3)]
    for task in tasks:
        world.enqueue(task)
    worker = ForemanWorker(
        [world.rq_queue()],
        connection=world.redis,
        settings=WorkerSettings(),
        before_job=send_claim_ahead,
        after_job=settle,
        on_pop=claim_popped_job,
    )
    worker.work(burst=True)
    assert ran == [str(task.id) for task in tasks]
    assert [world.get(task).output_data for task in tasks] == [1, 2, 3]
    assert settling.unsettled is None and settling.lease.current_task_id is None


def rq_records(world: World, worker_name: str) -> dict[str, list[object]]:
    """RQ's keys in Redis and what they hold, ids and times left out: job and execution
    ids become ``<id>``, this worker's name ``<worker>`` (other workers' keys are left
    out), hashes show their field names (and state, status and job count), sorted sets and
    sets their members."""

    def plain(raw: bytes | str) -> str:
        text = raw.decode() if isinstance(raw, bytes) else raw
        ids = r"[0-9a-f]{32}(?:_[0-9a-f]{16})?"  # uuid hex; a job id names its task
        return re.sub(ids, "<id>", text.replace(worker_name, "<worker>"))

    records: dict[str, list[object]] = {}
    for key in world.redis.scan_iter("rq:*"):
        name = plain(key)
        if name.startswith("rq:worker:") and "<worker>" not in name:
            continue
        kind = world.redis.type(key).decode()
        held: object
        if kind == "hash":
            fields = {plain(k): v for k, v in world.redis.hgetall(key).items()}
            shown = ("state", "successful_job_count", "status")
            held = sorted(f"{k}={v.decode()}" if k in shown else k for k, v in fields.items())
        elif kind == "zset":
            held = sorted(plain(m) for m in world.redis.zrange(key, 0, -1))
        elif kind == "set":
            held = sorted(plain(m) for m in world.redis.smembers(key))
        elif kind == "list":
            held = [plain(m) for m in world.redis.lrange(key, 0, -1)]
        else:
            held = kind
        records.setdefault(name, []).append(held)
    return {name: sorted(held, key=str) for name, held in records.items()}


def test_a_worker_writes_the_records_rq_itself_writes(world: World) -> None:
    """ForemanWorker writes RQ's start-of-job and end-of-job records of a Foreman job in
    one round trip each, without RQ's reads: what Redis holds while a job runs, and after
    it, is what RQ's own SimpleWorker leaves."""
    seen: list[dict[str, list[object]]] = []
    name: list[str] = []

    @world.registry.task("t")
    def handler(ctx: TaskContext) -> None:
        seen.append(rq_records(world, name[0]))

    def run_two(worker: SimpleWorker) -> list[dict[str, list[object]]]:
        seen.clear()
        name[:] = [worker.name]
        first, second = world.task("t"), world.task("t")
        world.enqueue(first)
        world.enqueue(second)
        worker.work(burst=True)
        done = [world.get(first), world.get(second)]
        assert [t.status for t in done] == [TaskStatus.COMPLETED] * 2, done[0].error_data
        return list(seen)

    configure(world.runtime())
    try:
        queues = [world.rq_queue()]
        ours = run_two(ForemanWorker(queues, connection=world.redis, settings=WorkerSettings()))
        theirs = run_two(SimpleWorker(queues, connection=world.redis))
    finally:
        configure(None)
    # while the first job runs; while the second runs (the first one's records are gone)
    assert ours == theirs
    assert ours[1]["rq:worker:<worker>"] == [
        [
            "birth",
            "hostname",
            "ip_address",
            "last_heartbeat",
            "pid",
            "python_version",
            "queues",
            "state=busy",
            "successful_job_count=1",
            "total_working_time",
            "version",
        ]
    ]
    assert world.redis.llen(f"rq:queue:{world.rq_queue()}:intermediate") == 0


def test_a_stop_request_just_after_a_job_is_taken_lets_that_job_run(world: World) -> None:
    """A worker claims a task as soon as it has taken the job off the queue, before the
    job starts. A SIGTERM arriving then lets that job run (its task may already be
    claimed) instead of abandoning it; no other job is taken."""

    @world.registry.task("t")
    def handler(ctx: TaskContext) -> str:
        return "done"

    first, second = world.task("t"), world.task("t")
    world.enqueue(first)
    world.enqueue(second)
    worker = ForemanWorker(
        [world.rq_queue()],
        connection=world.redis,
        settings=WorkerSettings(),
        on_pop=lambda job_id: os.kill(os.getpid(), signal.SIGTERM),
    )
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    configure(world.runtime())
    try:
        worker.work(burst=True)
    finally:
        configure(None)
        if worker._watchdog is not None:
            worker._watchdog.cancel()
        shutdown.reset()
        for sig, previous in handlers.items():
            signal.signal(sig, previous)
    assert world.get(first).status is TaskStatus.COMPLETED
    assert world.get(second).status is TaskStatus.QUEUED


def test_a_completion_given_up_at_the_grace_leaves_as_the_watchdog_would(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The completion is read after the job (``after_job``), its retries bounded by the
    shutdown grace. When that wait ends because the grace ran out, the worker leaves with
    the forced exit, whether or not the grace's watchdog thread has run yet; it does not
    go on to RQ's normal stop (exit 0)."""

    @world.registry.task("t")
    def handler(ctx: TaskContext) -> None:
        return None

    world.enqueue(world.task("t"))
    left: list[str] = []

    def exit_now(message: str) -> None:
        left.append(message)
        raise SystemExit(shutdown.FORCED_EXIT_STATUS)

    monkeypatch.setattr(shutdown, "exit_now", exit_now)
    worker = ForemanWorker(
        [world.rq_queue()],
        connection=world.redis,
        settings=WorkerSettings(),
        after_job=lambda: shutdown.request(0),  # the grace runs out while it settles
    )
    configure(world.runtime())
    try:
        with pytest.raises(SystemExit):
            worker.work(burst=True)
    finally:
        configure(None)
        shutdown.reset()
    assert len(left) == 1 and "grace" in left[0]


def test_a_worker_stays_registered_and_honours_rq_suspend(world: World) -> None:
    """RQ's per-job heartbeats and suspension checks go out at most once a second: the
    worker's key is still kept alive, and ``rq suspend`` still keeps it from taking jobs."""
    seen: list[tuple[int, bytes | None]] = []

    def new_worker() -> ForemanWorker:
        return ForemanWorker([world.rq_queue()], connection=world.redis, settings=WorkerSettings())

    @world.registry.task("t")
    def handler(ctx: TaskContext) -> None:
        seen.append((world.redis.ttl(worker.key), world.redis.hget(worker.key, "last_heartbeat")))

    configure(world.runtime())
    try:
        worker = new_worker()
        first = world.task("t")
        world.enqueue(first)
        worker.work(burst=True)
        assert world.get(first).status is TaskStatus.COMPLETED
        [(ttl, beat)] = seen
        assert ttl > 0 and beat is not None  # while it ran the job

        suspend(world.redis)
        held = world.task("t")
        world.enqueue(held)
        worker = new_worker()
        worker.work(burst=True)  # a suspended burst worker leaves at once
        assert world.get(held).status is TaskStatus.QUEUED
        resume(world.redis)
        worker = new_worker()
        worker.work(burst=True)
        assert world.get(held).status is TaskStatus.COMPLETED
    finally:
        configure(None)


def test_each_attempt_ends_with_one_line_naming_task_type_attempt_and_outcome(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[int] = []

    @world.registry.task("flaky", backoff=Backoff(initial=0, maximum=0))
    def flaky(ctx: TaskContext) -> str:
        calls.append(1)
        if len(calls) < 3:
            raise ValueError("boom")
        return "ok"

    first, second = world.task("flaky", max_retries=1), world.task("flaky")
    with caplog.at_level(logging.INFO, logger="foreman_worker.runner"):
        assert world.run(first, "job-1") is Outcome.RETRYING
        assert world.run(world.get(first), "job-2") is Outcome.FAILED
        assert world.run(second, "job-3") is Outcome.COMPLETED
    lines = [r.getMessage() for r in caplog.records if r.name == "foreman_worker.runner"]
    assert len(lines) == 3, lines
    assert re.fullmatch(
        rf"task {first.id} \(flaky\) attempt 1 failed after [\d.]+s: ValueError: boom; "
        r"retry 1 of 1 in [\d.]+s",
        lines[0],
    ), lines[0]
    assert re.fullmatch(
        rf"task {first.id} \(flaky\) attempt 2 failed after [\d.]+s: ValueError: boom; "
        "no retries left",
        lines[1],
    ), lines[1]
    assert re.fullmatch(rf"task {second.id} \(flaky\) attempt 1 completed after [\d.]+s", lines[2])
