"""The reconciler against the real API in process, on fakeredis (tests/worker_world.py): what
the database says should wait on a queue ends up there exactly once, lost workers' tasks
come back, jobs taken by dead workers are failed, one pass per organisation at a time."""

from __future__ import annotations

import logging
import time
from typing import Any

import pytest
from rq.utils import now as rq_now
from rq.utils import utcformat

from foreman_api.schemas import Task, TaskStatus
from foreman_worker import reconciler
from foreman_worker.reconciler import Reconciler
from foreman_worker.runner import Outcome
from tests.conftest import Api
from tests.worker_world import World, open_world

pytestmark = pytest.mark.parametrize("backend", ["sqlite"], indirect=True)

INTERVAL = 0.1
"""The reconcilers' lock interval here: one pass per 0.1 s per organisation."""


@pytest.fixture
def worker(world: World) -> Reconciler:
    """The reconciler of one worker of ``world``'s organisation (one per worker process)."""
    return world.reconciler(interval=INTERVAL)


@pytest.fixture(autouse=True)
def scan_every_pass(monkeypatch: pytest.MonkeyPatch) -> None:
    """These tests check what a scan finds; test_the_scan_of_waiting_tasks_is_rationed below
    checks how often one runs."""
    monkeypatch.setattr(reconciler, "SCAN_SECONDS", 0.001)


def next_pass(worker: Reconciler) -> reconciler.Pass:
    """A pass once the previous one's interval is over."""
    time.sleep(INTERVAL + 0.02)
    return worker.run_once()


def retrying(world: World, delay: float) -> Task:
    """A task whose attempt failed and that is due again in ``delay`` seconds."""
    task = world.claim(world.task("t"), "job-0")
    moved = world.client.update_task(
        task.id, status=TaskStatus.RETRYING, queue_job_id="job-0", retry_delay=delay
    )
    return moved.unwrap()


def one_job_each(world: World, tasks: list[Task]) -> None:
    """Each task has exactly one job on the queue, the one its marker names."""
    assert sorted(world.queue().job_ids) == sorted(str(world.marker(t)) for t in tasks)


def test_after_a_flushall_every_waiting_task_is_put_back_once(
    world: World, worker: Reconciler
) -> None:
    tasks = [world.task("t") for _ in range(3)]
    for task in tasks:
        world.enqueue(task)
    world.task("t", status=TaskStatus.PENDING)  # never submitted: nobody should queue it
    running = world.claim(world.task("t"), "job-0")  # held, lease alive: not waiting
    world.redis.flushall()

    first = next_pass(worker)
    assert (first.requeued, first.checked, first.recovered) == (3, 3, 0)
    one_job_each(world, tasks)
    again = next_pass(worker)
    assert (again.requeued, again.checked) == (0, 3)
    one_job_each(world, tasks)
    assert world.get(running).status is TaskStatus.RUNNING


def test_a_retry_waits_until_due_then_goes_to_the_front(world: World, worker: Reconciler) -> None:
    waiting = world.task("t")
    waiting_job = world.enqueue(waiting)
    later = retrying(world, delay=3600)
    due = retrying(world, delay=0)

    assert next_pass(worker).requeued == 1
    assert world.queue().job_ids == [world.marker(due), waiting_job]
    assert world.marker(later) is None and world.scheduled().get_job_ids() == []


@pytest.mark.parametrize(("max_retries", "status"), [(3, TaskStatus.RETRYING), (0, "failed")])
def test_a_running_task_whose_lease_expired_is_recovered(
    world: World,
    worker: Reconciler,
    caplog: pytest.LogCaptureFixture,
    max_retries: int,
    status: TaskStatus | str,
) -> None:
    world.registry.task("t")(lambda ctx: "done")
    already = world.task("t")
    world.enqueue(already)
    task = world.claim(world.task("t", max_retries=max_retries), "job-dead")
    world.expire_lease(task)

    with caplog.at_level(logging.WARNING, logger="foreman_worker.reconciler"):
        assert next_pass(worker).recovered == 1
    recovered = world.get(task)
    assert recovered.status == status and recovered.lease_expires_at is None
    error = recovered.error_data
    assert isinstance(error, dict) and error["type"] == "WorkerLost" and error["attempt"] == 1
    assert f"task {task.id}: its worker stopped renewing the lease" in caplog.text
    assert next_pass(worker).recovered == 0  # once
    if status is TaskStatus.RETRYING:
        assert recovered.retry_count == 1
        new_job = world.marker(task)
        assert world.queue().job_ids == [new_job, world.marker(already)]  # at the front
        assert world.run(task, str(new_job)) is Outcome.COMPLETED
    else:
        assert world.marker(task) is None
        assert world.client.get_run(world.run_id).unwrap().failed_tasks == 1


def take_job(world: World, task: Task) -> str:
    """What a worker does when it takes a task's job: move it to the intermediate list."""
    queue = world.queue()
    job_id = world.marker(task)
    assert job_id is not None and queue.job_ids == [job_id]
    world.redis.lmove(queue.key, queue.intermediate_queue_key)
    assert queue.intermediate_queue.get_job_ids() == [job_id]
    return job_id


def test_a_job_taken_by_a_worker_that_died_is_failed_and_its_task_put_back(
    world: World, worker: Reconciler, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(reconciler, "STUCK_SECONDS", 0.3)
    world.registry.task("t")(lambda ctx: "done")
    task = world.task("t")
    world.enqueue(task)
    taken = take_job(world, task)

    assert next_pass(worker).requeued == 0  # just taken: its worker may be starting it
    assert world.queue().intermediate_queue.get_job_ids() == [taken]
    time.sleep(0.3)
    assert next_pass(worker).requeued == 1
    assert world.queue().intermediate_queue.get_job_ids() == []
    stuck = world.queue().fetch_job(taken)
    assert stuck is not None and stuck.get_status() == "failed"
    new_job = world.marker(task)
    assert new_job not in (None, taken) and world.queue().job_ids == [new_job]
    assert world.run(task, str(new_job)) is Outcome.COMPLETED


def test_a_job_a_live_worker_started_is_left_alone(
    world: World, worker: Reconciler, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(reconciler, "STUCK_SECONDS", 0)
    task = world.task("t")
    world.enqueue(task)
    taken = take_job(world, task)
    # a worker on several queues leaves the job in the intermediate list while it runs
    started = world.queue().started_job_registry
    world.redis.zadd(started.key, {f"{taken}:execution-1": time.time() + 60})

    for _ in range(2):
        assert next_pass(worker).requeued == 0
    assert world.queue().intermediate_queue.get_job_ids() == [taken]
    job = world.queue().fetch_job(taken)
    assert job is not None and job.get_status() == "queued"


def test_a_job_that_just_started_is_not_lost_until_it_fails_to_claim(
    world: World, worker: Reconciler, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Between a job's start and its claim landing the task is still ``queued``: a scan in
    that window must not queue a second job, but a worker that died there loses nothing."""
    monkeypatch.setattr(reconciler, "STARTING_SECONDS", 0.5)
    world.registry.task("t")(lambda ctx: "done")
    task = world.task("t")
    world.enqueue(task)
    started = take_job(world, task)
    queue = world.queue()
    world.redis.lrem(queue.intermediate_queue_key, 0, started)
    world.redis.zadd(queue.started_job_registry.key, {f"{started}:execution-1": time.time() + 60})
    world.redis.hset(
        f"rq:job:{started}", mapping={"status": "started", "started_at": utcformat(rq_now())}
    )

    assert next_pass(worker).requeued == 0  # its worker is claiming it right now
    assert world.get(task).status is TaskStatus.QUEUED and world.queue().job_ids == []
    time.sleep(0.5)  # no claim came: that worker died between start and claim
    assert next_pass(worker).requeued == 1
    new_job = world.marker(task)
    assert new_job not in (None, started) and world.queue().job_ids == [new_job]
    assert next_pass(worker).requeued == 0
    assert world.run(task, str(new_job)) is Outcome.COMPLETED


def test_a_task_that_finishes_while_redis_is_checked_gets_no_second_job(
    world: World, worker: Reconciler, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The scan reads the database, then Redis. A task whose job ran and finished in
    between (the job's hash gone with it) looks lost; it must not be queued again."""
    world.registry.task("t")(lambda ctx: "done")
    task = world.task("t")
    world.enqueue(task)
    job = str(world.marker(task))
    check_redis = worker._waiting

    def the_job_finishes_meanwhile(targets: Any, *, starting: bool) -> list[bool]:
        if world.get(task).status is TaskStatus.QUEUED:
            world.queue().remove(job)
            assert world.run(task, job) is Outcome.COMPLETED
            world.redis.delete(f"rq:job:{job}")  # result_ttl=0: a finished job leaves nothing
        return check_redis(targets, starting=starting)

    monkeypatch.setattr(worker, "_waiting", the_job_finishes_meanwhile)
    done = next_pass(worker)
    assert (done.requeued, done.checked) == (0, 1)
    assert world.queue().job_ids == [] and world.get(task).status is TaskStatus.COMPLETED


def test_one_pass_per_interval_across_the_workers_of_an_organisation(
    world: World, api: Api
) -> None:
    one, two = (world.reconciler(holder, interval=0.3) for holder in ("w1", "w2"))
    assert not one.run_once().skipped
    assert two.run_once().skipped and one.run_once().skipped
    with open_world(api, org="org-b", redis=world.redis) as other:
        assert not other.reconciler("w3", interval=0.3).run_once().skipped
    time.sleep(0.32)
    assert not two.run_once().skipped


def test_organisations_do_not_see_each_others_tasks(
    world: World, worker: Reconciler, api: Api
) -> None:
    with open_world(api, org="org-b", redis=world.redis) as other:
        mine = [world.task("t") for _ in range(2)]
        theirs = [other.task("t") for _ in range(2)]
        lost = other.claim(other.task("t"), "job-dead")
        other.expire_lease(lost)

        done = next_pass(worker)
        assert (done.recovered, done.requeued) == (0, 2)
        one_job_each(world, mine)
        assert other.queue().job_ids == []
        assert other.get(lost).status is TaskStatus.RUNNING

        done = next_pass(other.reconciler(interval=INTERVAL))
        assert (done.recovered, done.requeued) == (1, 3)
        one_job_each(other, [*theirs, lost])
        one_job_each(world, mine)


def test_the_scan_of_waiting_tasks_is_rationed(world: World, worker: Reconciler) -> None:
    """Lost workers are looked for on every pass; waiting tasks once per scan interval."""
    worker.scan_interval = 60.0
    task = world.task("t")
    world.enqueue(task)
    assert next_pass(worker).checked == 1
    world.redis.flushall()  # (also drops the scan's lock: the next pass scans again)
    assert next_pass(worker).requeued == 1
    lost = world.claim(world.task("t"), "job-1")
    world.expire_lease(lost)
    rationed = next_pass(worker)
    assert (rationed.recovered, rationed.checked) == (1, 1)  # the recovered task only
