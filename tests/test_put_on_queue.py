"""``put_on_queue`` against a real Redis server: its Lua script writes what RQ itself writes,
keeps one waiting job per task, and job ids name their task.

(``tests/test_enqueue.py`` covers enqueue and submit end to end on fakeredis.)
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
import redis
from rq import Callback, Queue
from rq.job import Job, JobStatus

from foreman_worker.enqueue import (
    JOB_FAILURE_TTL,
    ON_JOB_FAILURE,
    RUN_TASK,
    new_job_id,
    put_on_queue,
    task_of_job,
)

pytestmark = pytest.mark.integration

QUEUE = "foreman:org-a:default"


@pytest.fixture
def conn(redis_url: str) -> Iterator[redis.Redis]:
    connection = redis.Redis.from_url(redis_url)
    yield connection
    connection.close()


def job_record(conn: redis.Redis, job_id: str) -> dict[str, str]:
    """A job's hash, its times replaced by a placeholder."""
    record = {
        k.decode(): v.decode(errors="replace") for k, v in conn.hgetall(f"rq:job:{job_id}").items()
    }
    for name in ("created_at", "enqueued_at"):
        record[name] = "<time>" if record.get(name) else record.get(name, "")
    return record


def rq_made(conn: redis.Redis, task_id: str, *, scheduled_at: datetime | None = None) -> str:
    """The job RQ's own enqueue (or schedule) makes with put_on_queue's options."""
    queue = Queue(QUEUE, connection=conn)
    job = queue.create_job(
        RUN_TASK,
        args=(task_id,),
        job_id=new_job_id(task_id),
        timeout=-1,
        result_ttl=0,
        failure_ttl=JOB_FAILURE_TTL,
        on_failure=Callback(ON_JOB_FAILURE),
        description=f"foreman task {task_id}",
    )
    if scheduled_at is None:
        queue.enqueue_job(job)
    else:
        job.enqueue_at_front = False
        queue.schedule_job(job, scheduled_at)
    return job.id


def test_a_job_is_the_one_rq_itself_would_write(conn: redis.Redis) -> None:
    task_id = str(uuid.uuid4())
    ours = put_on_queue(conn, task_id=task_id, rq_queue=QUEUE, marker="m:ours")
    theirs = rq_made(conn, task_id)
    assert ours is not None
    assert job_record(conn, ours) == job_record(conn, theirs)
    assert conn.lrange(f"rq:queue:{QUEUE}", 0, -1) == [ours.encode(), theirs.encode()]
    assert conn.smembers("rq:queues") == {f"rq:queue:{QUEUE}".encode()}
    job = Job.fetch(ours, connection=conn)
    assert job.get_status() is JobStatus.QUEUED and job.args == (task_id,)
    assert conn.get("m:ours") == ours.encode() and 0 < conn.ttl("m:ours") <= 24 * 3600


def test_a_delayed_job_is_scheduled_as_rq_schedules_it(conn: redis.Redis) -> None:
    task_id = str(uuid.uuid4())
    before = time.time()
    ours = put_on_queue(conn, task_id=task_id, rq_queue=QUEUE, marker="m:ours", delay=30)
    assert ours is not None
    due = conn.zscore(f"rq:scheduled:{QUEUE}", ours)
    assert due is not None and before + 30 <= due <= before + 32  # whole seconds, rounded up
    theirs = rq_made(conn, task_id, scheduled_at=datetime.fromtimestamp(due, UTC))
    assert job_record(conn, ours) == job_record(conn, theirs)
    assert conn.lrange(f"rq:queue:{QUEUE}", 0, -1) == []


def test_one_waiting_job_per_task_until_it_starts_or_is_lost(conn: redis.Redis) -> None:
    task_id = str(uuid.uuid4())
    first = put_on_queue(conn, task_id=task_id, rq_queue=QUEUE, marker="m")
    assert first is not None
    assert put_on_queue(conn, task_id=task_id, rq_queue=QUEUE, marker="m") is None
    assert put_on_queue(conn, task_id=task_id, rq_queue=QUEUE, marker="m", delay=5) is None
    # The job asking for its own task again (a runner's retry) is not a waiting job.
    second = put_on_queue(conn, task_id=task_id, rq_queue=QUEUE, marker="m", running_job=first)
    assert second not in (None, first) and conn.get("m") == second.encode()
    # Started (no longer waiting): the next enqueue makes a new job.
    conn.hset(f"rq:job:{second}", "status", "started")
    third = put_on_queue(conn, task_id=task_id, rq_queue=QUEUE, marker="m")
    assert third not in (None, first, second)
    # Lost (Redis no longer has the job): the next enqueue makes a new job.
    conn.delete(f"rq:job:{third}")
    assert put_on_queue(conn, task_id=task_id, rq_queue=QUEUE, marker="m") not in (None, third)
    # Waiting on another queue (the task moved queues): a job is made on this one.
    other = put_on_queue(conn, task_id=task_id, rq_queue="foreman:org-a:other", marker="m")
    assert other is not None


def test_a_job_id_names_its_task() -> None:
    task_id = str(uuid.uuid4())
    job_id = new_job_id(task_id)
    assert task_of_job(job_id) == task_id
    assert new_job_id(task_id) != job_id
    for other in (uuid.uuid4().hex, f"direct-{uuid.uuid4().hex}", "x_y", f"{'z' * 32}_{'0' * 16}"):
        assert task_of_job(other) is None


def test_a_redis_that_lost_its_scripts_gets_them_again(conn: redis.Redis) -> None:
    """Scripts run by their SHA1; a restarted Redis has none loaded until asked again."""
    first = put_on_queue(conn, task_id=str(uuid.uuid4()), rq_queue=QUEUE, marker="m1")
    conn.script_flush()
    second = put_on_queue(conn, task_id=str(uuid.uuid4()), rq_queue=QUEUE, marker="m2")
    assert first is not None and second is not None
    assert conn.lrange(f"rq:queue:{QUEUE}", 0, -1) == [first.encode(), second.encode()]
