"""Put task IDs on RQ queues: :func:`enqueue` (Redis only) and :func:`submit` (API + Redis).

The queue message is the task ID and nothing else. The RQ job calls the runner by its
import path (:data:`RUN_TASK`), so a process that only enqueues never imports handlers.

**The database decides, Redis carries.** :func:`submit` creates the task already ``queued``
in one API call (with an idempotency key, so a retried or repeated submit makes one task),
then enqueues its id. If the process dies in between, or Redis loses the job later, the
reconciler in ``foreman-worker`` puts the task back on its queue from the database.

**At most one waiting job per task, atomically.** The marker ``foreman:enqueued:<task id>``
names the job waiting for the task. :func:`enqueue` watches the marker and, in one Redis
transaction, sets it and saves and pushes the job; it does nothing while the marker names
a job that is still waiting. A marker whose job is gone (Redis lost it, a worker died
holding it) does not block: the next enqueue replaces it. The runner removes the marker
(only if it names its own job) when the job starts.
"""

from __future__ import annotations

import functools
import logging
import math
import time
import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from pydantic import JsonValue
from redis import Redis, RedisError
from rq import Callback, Queue
from rq.job import Job, JobStatus

from foreman_api.schemas import Task, TaskStatus
from foreman_worker import rq_writes
from foreman_worker._calls import UNSET
from foreman_worker.queues import Namespace
from foreman_worker.registry import QUEUE_NAME, registry
from foreman_worker.settings import load_settings

if TYPE_CHECKING:
    from redis.client import Pipeline

    from foreman_worker.client import ForemanClient

log = logging.getLogger("foreman_worker.enqueue")

RUN_TASK = "foreman_worker.runner.run_task"
"""Import path of the RQ job function."""
ON_JOB_FAILURE = "foreman_worker.runner.on_job_failure"
"""Import path of the RQ failure callback."""
MARKER_TTL = 24 * 3600
JOB_FAILURE_TTL = 24 * 3600
"""Seconds RQ keeps a job the runner could not handle at all (for inspection)."""
WAITING = frozenset({JobStatus.QUEUED.value, JobStatus.SCHEDULED.value, JobStatus.DEFERRED.value})
"""Job statuses that mean "still going to run"; any other, or no job, means lost."""


@functools.cache
def default_connection() -> Redis:
    """The process's Redis connection, from ``FOREMAN_REDIS_URL``."""
    return Redis.from_url(load_settings().redis_url)


@functools.cache
def default_namespace() -> Namespace:
    """The process's Redis namespace, from ``FOREMAN_QUEUE_PREFIX``."""
    return Namespace(load_settings().queue_prefix)


@functools.cache
def default_client() -> ForemanClient:
    """The process's API client, from ``FOREMAN_API_URL`` and ``FOREMAN_API_KEY``."""
    from foreman_worker.client import ForemanClient

    settings = load_settings()
    key = settings.api_key.get_secret_value() if settings.api_key else None
    return ForemanClient(settings.api_url, key)


def enqueue(
    task: Task | str | uuid.UUID,
    *,
    queue: str | None = None,
    connection: Redis | None = None,
    delay: float | None = None,
    at_front: bool = False,
    client: ForemanClient | None = None,
    namespace: Namespace | None = None,
    running_job: str | None = None,
) -> str | None:
    """Queue a task. Returns the RQ job id, or ``None`` if a job for it is already waiting.

    ``task`` is a :class:`Task` (as ``create_task`` returns it) or a task id, which is then
    looked up through ``client`` to learn its organisation and queue. ``queue`` overrides
    the task's queue. ``delay`` (seconds) schedules the job; a running ``foreman-worker``
    moves it to the queue when it is due. ``at_front`` puts it ahead of waiting jobs.
    ``running_job``: see :func:`put_on_queue`.
    """
    if not isinstance(task, Task):
        api = client if client is not None else default_client()
        task = api.get_task(str(uuid.UUID(str(task)))).unwrap()
    target = queue if queue is not None else task.queue
    if not QUEUE_NAME.fullmatch(target):
        raise ValueError(f"bad queue name {target!r}")
    names = namespace if namespace is not None else default_namespace()
    return put_on_queue(
        connection if connection is not None else default_connection(),
        task_id=str(task.id),
        rq_queue=names.queue(task.org_id, target),
        marker=names.marker(str(task.id)),
        delay=delay,
        at_front=at_front,
        running_job=running_job,
    )


def put_on_queue(
    conn: Redis,
    *,
    task_id: str,
    rq_queue: str,
    marker: str,
    delay: float | None = None,
    at_front: bool = False,
    running_job: str | None = None,
) -> str | None:
    """Atomically push a job for ``task_id`` unless one is waiting; its id, or None.

    ``running_job`` is the job asking (a runner deferring or retrying its task): the
    marker may still name it, and it is not waiting, it is running.

    One round trip: a Lua script checks the marker and, unless it names a waiting job,
    sets it and writes RQ's own job records (:mod:`foreman_worker.rq_writes`), atomically.
    """
    wait = max(delay or 0.0, 0.0)
    rq = Queue(rq_queue, connection=conn)
    job_id = new_job_id(task_id)
    job = rq.create_job(
        RUN_TASK,
        args=(task_id,),
        job_id=job_id,
        timeout=-1,
        result_ttl=0,
        failure_ttl=JOB_FAILURE_TTL,
        on_failure=Callback(ON_JOB_FAILURE),
        description=f"foreman task {task_id}",
    )

    def write(pipe: Pipeline) -> object:
        if wait <= 0:
            return rq.enqueue_job(job, pipe, at_front=at_front)
        job.enqueue_at_front = at_front
        # RQ keeps due times in whole seconds, rounded down: round up instead, or the job
        # would come before the retry is due.
        due = datetime.fromtimestamp(math.ceil(time.time() + wait), UTC)
        return rq.schedule_job(job, due, pipe)

    commands, _ = rq_writes.recorded(conn, write)
    args: list[Any] = [job_id, MARKER_TTL + int(wait), running_job or "", rq_queue]
    args += [Job.redis_job_namespace_prefix, *rq_writes.packed(commands)]
    pushed = _PUT_SCRIPT(conn, keys=[marker], args=args)
    return None if pushed is None else text(pushed)


_JOB_ID_SEPARATOR = "_"


def new_job_id(task_id: str) -> str:
    """A fresh RQ job id for ``task_id`` that names the task: a worker can claim the task
    as soon as it takes the id off the queue, before RQ has read the job
    (:func:`task_of_job`)."""
    return f"{uuid.UUID(task_id).hex}{_JOB_ID_SEPARATOR}{uuid.uuid4().hex[:16]}"


def task_of_job(job_id: str) -> str | None:
    """The task id a job id made by :func:`new_job_id` names; None for any other id."""
    task_hex, separator, suffix = job_id.partition(_JOB_ID_SEPARATOR)
    if not separator or len(task_hex) != 32 or len(suffix) != 16:
        return None
    try:
        return str(uuid.UUID(hex=task_hex))
    except ValueError:
        return None


_PUT_SCRIPT = rq_writes.Lua(
    rq_writes.script(
        """
local marker = KEYS[1]
local job_id, ttl, asking, origin, job_prefix = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local waiting = {WAITING}
local named = redis.call('GET', marker)
if named and named ~= asking then
    local job = redis.call('HMGET', job_prefix .. named, 'status', 'origin')
    if job[1] and waiting[job[1]] and job[2] == origin then
        return false
    end
end
redis.call('SET', marker, job_id, 'EX', ttl)
""".replace("WAITING", ", ".join(f"[{status!r}] = true" for status in sorted(WAITING))),
        first=6,
        after="return job_id\n",
    )
)
"""KEYS: the marker. ARGV: the job id, the marker's TTL, the job asking (or ""), the RQ
queue, RQ's job key prefix, then RQ's commands (:func:`rq_writes.packed`). A marker naming
a job that is still waiting on that queue wins (nothing is written); otherwise the marker
names the new job and RQ's commands run."""


def is_waiting_job(status: bytes | str | None, origin: bytes | str | None, rq_queue: str) -> bool:
    """Whether a job hash's ``status`` and ``origin`` say it waits to run on ``rq_queue``."""
    if status is None or origin is None:
        return False  # no such job: Redis lost it
    return text(status) in WAITING and text(origin) == rq_queue


def text(value: bytes | str) -> str:
    """A Redis reply as text."""
    return value.decode() if isinstance(value, bytes) else value


def submit(
    run_id: str | uuid.UUID,
    type: str,
    input_data: JsonValue = None,
    *,
    client: ForemanClient | None = None,
    queue: str | None = None,
    parent_task_id: str | uuid.UUID | None = None,
    max_retries: int | None = None,
    metadata: dict[str, JsonValue] | None = None,
    connection: Redis | None = None,
    idempotency_key: str | None = None,
    namespace: Namespace | None = None,
) -> Task:
    """Create a task through the API, ``queued``, and enqueue it; return the Task.

    ``queue`` and ``max_retries`` default to the handler's ``@task`` options: this process's
    if it imported the handler, else those a live worker registered with the API. Pass an
    ``idempotency_key`` to make calling ``submit`` again (after an error, a crash, a
    timeout) safe: the same key returns the task made the first time. If Redis cannot be
    reached the task is still created; the workers' reconciler queues it.
    Raises :class:`~foreman_worker.errors.ApiError` when the API refuses.
    """
    api = client if client is not None else default_client()
    handler = registry.get(type)
    if queue is None and handler is not None:
        queue = handler.queue
    if max_retries is None and handler is not None:
        max_retries = handler.max_retries
    created = api.create_task(
        str(run_id),
        type,
        input_data=input_data,
        parent_task_id=str(parent_task_id) if parent_task_id is not None else None,
        metadata=metadata,
        max_retries=max_retries,
        queue=queue,
        status=TaskStatus.QUEUED,
        idempotency_key=idempotency_key or f"submit:{uuid.uuid4().hex}",
    )
    task = created.unwrap()
    for warning in created.warnings:
        log.warning("task %s (%s): %s", task.id, type, warning)
    _enqueue_queued(task, connection, namespace, "created")
    return task


def resubmit(
    task_id: str | uuid.UUID,
    input_data: JsonValue | Any = UNSET,
    *,
    client: ForemanClient | None = None,
    connection: Redis | None = None,
    namespace: Namespace | None = None,
) -> Task:
    """Run a ``failed`` or ``cancelled`` task again and enqueue it; return the Task.

    Through the API it goes back to ``queued`` with a fresh retry budget, its attempt
    history kept; with ``input_data`` it is a replay with that input. Calling it again is
    harmless (the task is not moved twice, nor queued twice). If Redis cannot be reached
    the retry still stands; the workers' reconciler queues it. Raises
    :class:`~foreman_worker.errors.ApiError` when the API refuses (``409`` for a
    ``completed`` task, ``404`` for an unknown one).
    """
    api = client if client is not None else default_client()
    task = api.retry_task(str(task_id), input_data=input_data).unwrap()
    _enqueue_queued(task, connection, namespace, "retried")
    return task


def _enqueue_queued(
    task: Task, connection: Redis | None, namespace: Namespace | None, done: str
) -> None:
    """Enqueue a task the API left ``queued``; Redis being away is logged, not raised."""
    if task.status is not TaskStatus.QUEUED:
        return
    try:
        enqueue(task, connection=connection, namespace=namespace)
    except RedisError as exc:  # the task is safe in the database; a reconciler queues it
        log.warning("task %s %s but not enqueued (%s); the reconciler will", task.id, done, exc)
