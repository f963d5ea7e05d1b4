"""enqueue and submit against the real API in process, on fakeredis (tests/worker_world.py):
only the task id on the queue, at most one waiting job per task, per-organisation queue
names, and submit's one-call, idempotent, Redis-outage-proof creation."""

from __future__ import annotations

import dataclasses
import logging

import httpx
import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from foreman_api.schemas import TaskStatus
from foreman_worker.enqueue import RUN_TASK, default_namespace
from foreman_worker.errors import ApiError
from foreman_worker.presence import Presence
from foreman_worker.queues import Namespace
from foreman_worker.registry import registry
from foreman_worker.runner import Outcome
from tests.conftest import Api
from tests.services import free_port
from tests.worker_world import World, open_world

pytestmark = pytest.mark.parametrize("backend", ["sqlite"], indirect=True)


# ---- enqueue ---------------------------------------------------------------------------------


def test_job_carries_only_the_task_id_and_the_runner_path(world: World) -> None:
    task = world.task()
    job_id = world.enqueue(task, queue="q1")
    assert job_id is not None
    queue = world.queue("q1")
    assert queue.name == "foreman:org-a:q1"
    assert queue.job_ids == [job_id]
    job = queue.fetch_job(job_id)
    assert job is not None
    assert job.func_name == RUN_TASK
    assert job.args == (str(task.id),) and job.kwargs == {}


def test_the_task_goes_on_its_own_queue_by_default(world: World) -> None:
    task = world.task(queue="mail")
    job_id = world.enqueue(task.id)  # a bare id: its queue is looked up through the API
    assert world.queue("mail").job_ids == [job_id]
    assert world.queue().job_ids == []


def test_same_task_twice_is_one_job(world: World) -> None:
    task = world.task()
    first = world.enqueue(task)
    assert world.enqueue(str(task.id)) is None
    assert world.enqueue(task.id, at_front=True) is None
    assert first is not None and world.marker(task) == first
    assert world.queue().job_ids == [first]


def test_a_started_job_no_longer_blocks_the_next_enqueue(world: World) -> None:
    """Once its job has started (a retry, a re-run after a crash), the task can be queued."""
    task = world.task()
    first = world.enqueue(task)
    assert first is not None
    world.redis.hset(f"rq:job:{first}", "status", "started")  # what a worker does to it
    second = world.enqueue(task)
    assert second is not None and world.marker(task) == second
    assert world.queue().job_ids == [first, second]


@pytest.mark.parametrize("loss", ["job hash deleted", "flushall"])
def test_a_lost_waiting_job_does_not_block_a_new_one(world: World, loss: str) -> None:
    task = world.task()
    first = world.enqueue(task)
    if loss == "flushall":
        world.redis.flushall()
    else:
        world.redis.delete(f"rq:job:{first}")
    second = world.enqueue(task)
    assert second is not None and second != first
    assert world.marker(task) == second
    assert second in world.queue().job_ids
    assert world.enqueue(task) is None  # and the new one blocks the next


def test_delayed_enqueue_is_scheduled_and_also_deduplicated(world: World) -> None:
    task = world.task()
    job_id = world.enqueue(task, delay=30)
    assert world.enqueue(task) is None
    assert world.queue().job_ids == []
    assert world.scheduled().get_job_ids() == [job_id]


def test_at_front_jumps_the_queue(world: World) -> None:
    first, urgent = world.task(), world.task()
    behind = world.enqueue(first)
    ahead = world.enqueue(urgent, at_front=True)
    assert world.queue().job_ids == [ahead, behind]


def test_bad_ids_and_queues_are_refused(world: World) -> None:
    with pytest.raises(ValueError):
        world.enqueue("not-a-uuid")
    with pytest.raises(ValueError):
        world.enqueue(world.task(), queue="bad queue")
    assert world.redis.keys("*") == []


# ---- organisations and prefixes --------------------------------------------------------------


def test_tasks_of_each_organisation_land_on_its_own_queues(world: World, api: Api) -> None:
    with open_world(api, org="org-b", redis=world.redis) as other:
        mine, theirs = world.submit(), other.submit()
        assert world.queue().name == "foreman:org-a:default"
        assert other.queue().name == "foreman:org-b:default"
        assert world.queue().job_ids == [world.marker(mine)]
        assert other.queue().job_ids == [other.marker(theirs)]


def test_a_queue_prefix_is_put_in_front_of_every_name(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FOREMAN_QUEUE_PREFIX", "blue:")
    default_namespace.cache_clear()
    task = world.submit(queue="mail")
    blue = dataclasses.replace(world, namespace=Namespace("blue:"))
    assert world.redis.exists(f"blue:foreman:enqueued:{task.id}")
    assert blue.queue("mail").name == "blue:foreman:org-a:mail"
    assert blue.queue("mail").job_ids == [blue.marker(task)]
    assert world.redis.keys("foreman:*") == []  # nothing under the unprefixed names


def test_a_worker_listens_only_on_its_own_organisations_queues(world: World, api: Api) -> None:
    with open_world(api, org="org-b", redis=world.redis) as other:
        presence = Presence(
            other.client, worker_id="b-1", queues=["default", "mail"], registry=other.registry
        )
        registered = presence.register()
        assert registered.org_id == "org-b"
        names = [other.namespace.queue(registered.org_id, q) for q in registered.queues]
        assert names == ["foreman:org-b:default", "foreman:org-b:mail"]

        task = world.submit()  # org A's
        [job_id] = world.queue().job_ids
        job = world.queue().fetch_job(job_id)
        assert job is not None and job.origin not in names
        assert all(other.redis.llen(f"rq:queue:{name}") == 0 for name in names)
        # even handed org A's task id, org B's worker cannot claim it
        assert other.run(task.id) is Outcome.SKIPPED
        assert world.get(task).status is TaskStatus.QUEUED


# ---- submit ----------------------------------------------------------------------------------


def test_submit_creates_the_task_queued_in_one_call_and_enqueues_it(world: World) -> None:
    sent: list[str] = []

    def record(request: httpx.Request) -> None:
        sent.append(f"{request.method} {request.url.path}")

    world.client._http.event_hooks["request"].append(record)

    @registry.task("submit-test-type", queue="special", max_retries=5)
    def handler(ctx: object) -> None: ...

    try:
        task = world.submit("submit-test-type", {"n": 1})
    finally:
        registry._handlers.pop("submit-test-type")
    assert sent == ["POST /api/v1/tasks"]
    stored = world.get(task)
    assert stored.status is TaskStatus.QUEUED and stored.queued_at is not None
    assert (stored.max_retries, stored.queue, stored.input_data) == (5, "special", {"n": 1})
    assert world.queue("special").job_ids == [world.marker(task)]


def test_submit_of_a_type_no_worker_serves_uses_the_defaults_and_warns(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="foreman_worker.enqueue"):
        task = world.submit("unknown-here")
    assert (task.max_retries, task.queue) == (3, "default")
    assert world.queue().job_ids == [world.marker(task)]
    assert "no live worker serves task type 'unknown-here'" in caplog.text


def test_submit_again_with_the_same_idempotency_key_is_the_same_task_and_job(
    world: World,
) -> None:
    first = world.submit("charge", {"order": 1}, idempotency_key="order-1/charge")
    again = world.submit("charge", {"order": 1}, idempotency_key="order-1/charge")
    assert again.id == first.id
    assert world.client.get_run(world.run_id).unwrap().total_tasks == 1
    assert world.queue().job_ids == [world.marker(first)]
    with pytest.raises(ApiError) as clash:
        world.submit("refund", idempotency_key="order-1/charge")
    assert clash.value.status == 409
    assert world.queue().job_ids == [world.marker(first)]


def test_submit_without_redis_still_creates_the_task_and_the_reconciler_queues_it(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    down = redis.Redis(port=free_port(), retry=Retry(NoBackoff(), 0))
    with caplog.at_level(logging.WARNING, logger="foreman_worker.enqueue"):
        task = world.submit(connection=down)
    assert task.status is TaskStatus.QUEUED
    assert world.get(task).status is TaskStatus.QUEUED
    assert f"task {task.id} created but not enqueued" in caplog.text
    assert world.queue().job_ids == []

    assert world.reconciler().run_once().requeued == 1
    assert world.queue().job_ids == [world.marker(task)]
