"""Put task IDs on RQ queues: :func:`enqueue` (Redis only) and :func:`submit` (API + Redis).

The queue message is the task ID and nothing else. The RQ job calls the runner by its
import path (:data:`RUN_TASK`), so a process that only enqueues never imports handlers.

**No second copy of a waiting ID.** :func:`enqueue` first sets the marker key
``foreman:enqueued:<task id>`` with ``SET NX`` (one atomic Redis command) and only the caller
that created the marker pushes a job; everyone else gets ``None`` back. The runner deletes
the marker as the first thing it does when the job starts, so once a job is running the
task can be enqueued again (for a retry, or a re-run after a worker was lost). The marker
expires after a day plus any delay, so a queue emptied by hand cannot block a task for ever.
"""

from __future__ import annotations

import functools
import uuid
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from pydantic import JsonValue
from redis import Redis
from rq import Callback, Queue

from foreman_api.schemas import Task, TaskStatus
from foreman_worker.registry import DEFAULT_QUEUE, QUEUE_NAME, registry
from foreman_worker.settings import load_settings

if TYPE_CHECKING:
    from foreman_worker.client import ForemanClient

RUN_TASK = "foreman_worker.runner.run_task"
"""Import path of the RQ job function."""
ON_JOB_FAILURE = "foreman_worker.runner.on_job_failure"
"""Import path of the RQ failure callback (also called for abandoned jobs)."""
MARKER_PREFIX = "foreman:enqueued:"
MARKER_TTL = 24 * 3600
JOB_FAILURE_TTL = 7 * 24 * 3600
"""Seconds RQ keeps a job the runner could not handle at all (API unreachable for minutes)."""


def marker_key(task_id: str) -> str:
    return f"{MARKER_PREFIX}{task_id}"


@functools.cache
def default_connection() -> Redis:
    """The process's Redis connection, from ``FOREMAN_REDIS_URL``."""
    return Redis.from_url(load_settings().redis_url)


@functools.cache
def default_client() -> ForemanClient:
    """The process's API client, from ``FOREMAN_API_URL`` and ``FOREMAN_API_KEY``."""
    from foreman_worker.client import ForemanClient

    settings = load_settings()
    key = settings.api_key.get_secret_value() if settings.api_key else None
    return ForemanClient(settings.api_url, key)


def enqueue(
    task_id: str | uuid.UUID,
    *,
    queue: str = DEFAULT_QUEUE,
    connection: Redis | None = None,
    delay: float | None = None,
) -> str | None:
    """Queue a task by ID. Returns the RQ job id, or ``None`` if the task was already waiting.

    ``delay`` (seconds) schedules the job instead (RQ's ScheduledJobRegistry); a running
    ``foreman-worker`` on that queue moves it to the queue when it is due.
    """
    task_id = str(uuid.UUID(str(task_id)))
    if not QUEUE_NAME.fullmatch(queue):
        raise ValueError(f"bad queue name {queue!r}")
    conn = connection if connection is not None else default_connection()
    job_id = uuid.uuid4().hex
    wait = max(delay or 0.0, 0.0)
    if not conn.set(marker_key(task_id), job_id, nx=True, ex=MARKER_TTL + int(wait)):
        return None
    options: dict[str, Any] = {
        "job_id": job_id,
        "result_ttl": 0,
        "failure_ttl": JOB_FAILURE_TTL,
        "on_failure": Callback(ON_JOB_FAILURE),
        "description": f"foreman task {task_id}",
    }
    rq_queue = Queue(queue, connection=conn)
    try:
        if wait > 0:
            rq_queue.enqueue_in(
                timedelta(seconds=wait), RUN_TASK, task_id, job_timeout=-1, **options
            )
        else:
            rq_queue.enqueue_call(RUN_TASK, args=(task_id,), timeout=-1, **options)
    except BaseException:
        conn.delete(marker_key(task_id))
        raise
    return job_id


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
) -> Task:
    """Create a task through the API, mark it ``queued`` and enqueue it; return the Task.

    ``queue`` and ``max_retries`` default to the registered handler's options when this
    process knows the handler, else to ``"default"`` and the API's default.
    Raises :class:`~foreman_worker.errors.ApiError` when the API refuses.
    """
    api = client if client is not None else default_client()
    handler = registry.get(type)
    if queue is None:
        queue = handler.queue if handler is not None else DEFAULT_QUEUE
    if max_retries is None and handler is not None:
        max_retries = handler.max_retries
    created = api.create_task(
        str(run_id),
        type,
        input_data=input_data,
        parent_task_id=str(parent_task_id) if parent_task_id is not None else None,
        metadata=metadata,
        max_retries=max_retries,
    ).unwrap()
    # queued before it is on the queue: a worker may claim it the moment it is pushed
    queued = api.update_task(str(created.id), status=TaskStatus.QUEUED).unwrap()
    enqueue(str(created.id), queue=queue, connection=connection)
    return queued
