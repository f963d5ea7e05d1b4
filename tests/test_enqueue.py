"""enqueue: only the task ID on the queue, never a second waiting copy; submit."""

from __future__ import annotations

import uuid

import fakeredis
import pytest
from rq import Queue
from rq.registry import ScheduledJobRegistry

from foreman_api.schemas import TaskStatus
from foreman_worker.enqueue import RUN_TASK, enqueue, marker_key, submit
from foreman_worker.registry import registry
from tests.worker_apps.fakes import FakeClient


@pytest.fixture
def redis() -> fakeredis.FakeRedis:
    return fakeredis.FakeRedis()


def test_job_carries_only_the_task_id_and_the_runner_path(redis: fakeredis.FakeRedis) -> None:
    task_id = str(uuid.uuid4())
    job_id = enqueue(task_id, queue="q1", connection=redis)
    queue = Queue("q1", connection=redis)
    assert queue.job_ids == [job_id]
    job = queue.fetch_job(job_id)
    assert job is not None
    assert job.func_name == RUN_TASK
    assert job.args == (task_id,) and job.kwargs == {}


def test_same_id_twice_is_one_job(redis: fakeredis.FakeRedis) -> None:
    task_id = uuid.uuid4()
    first = enqueue(task_id, connection=redis)
    second = enqueue(str(task_id), connection=redis)
    assert first is not None and second is None
    assert len(Queue("default", connection=redis)) == 1


def test_started_job_clears_the_marker_so_the_task_can_be_queued_again(
    redis: fakeredis.FakeRedis,
) -> None:
    task_id = str(uuid.uuid4())
    enqueue(task_id, connection=redis)
    redis.delete(marker_key(task_id))  # what the runner does first
    assert enqueue(task_id, connection=redis) is not None
    assert len(Queue("default", connection=redis)) == 2


def test_delayed_enqueue_is_scheduled_and_also_deduplicated(redis: fakeredis.FakeRedis) -> None:
    task_id = str(uuid.uuid4())
    job_id = enqueue(task_id, connection=redis, delay=30)
    assert enqueue(task_id, connection=redis) is None
    assert len(Queue("default", connection=redis)) == 0
    assert ScheduledJobRegistry("default", connection=redis).get_job_ids() == [job_id]


def test_bad_ids_and_queues_are_refused(redis: fakeredis.FakeRedis) -> None:
    with pytest.raises(ValueError):
        enqueue("not-a-uuid", connection=redis)
    with pytest.raises(ValueError):
        enqueue(str(uuid.uuid4()), queue="bad queue", connection=redis)


def test_submit_creates_marks_queued_and_enqueues(redis: fakeredis.FakeRedis) -> None:
    client = FakeClient()

    @registry.task("submit-test-type", queue="special", max_retries=5)
    def handler(ctx: object) -> None: ...

    try:
        task = submit(
            client.run_id,
            "submit-test-type",
            {"n": 1},
            client=client,  # type: ignore[arg-type]
            connection=redis,
        )
    finally:
        registry._handlers.pop("submit-test-type")
    assert task.status == TaskStatus.QUEUED and task.max_retries == 5
    assert Queue("special", connection=redis).job_ids != []
    other = submit(
        client.run_id,
        "unknown-here",
        None,
        client=client,  # type: ignore[arg-type]
        connection=redis,
    )
    assert other.max_retries == 3
    assert len(Queue("default", connection=redis)) == 1
