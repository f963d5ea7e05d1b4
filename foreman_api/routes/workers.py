"""``/workers``: the live worker registry (``foreman-worker`` registers and heartbeats here).

Registering is a ``PUT`` of the worker's own id, repeated every few seconds; a worker not
seen for :data:`~foreman_api.storage.workers.LIVE_SECONDS` drops out of the list. The
handlers a worker declares set the queue and ``maxRetries`` of tasks of those types.
Served by :mod:`foreman_api.http`.
"""

from __future__ import annotations

from foreman_api.db.base import Row
from foreman_api.http.call import Call, Reply, reply
from foreman_api.http.endpoints import Endpoints
from foreman_api.schemas import (
    Deleted,
    Page,
    Pagination,
    Permission,
    QueueDepth,
    QueueList,
    Worker,
    WorkerPath,
    WorkerRegistration,
)
from foreman_api.storage import workers as storage

endpoints = Endpoints(tags=["workers"])


def _worker(row: Row) -> Worker:
    return Worker.model_validate(row)


@endpoints.put(
    "/workers/{workerId}",
    Permission.TASKS_UPDATE,
    path_model=WorkerPath,
    body=WorkerRegistration,
    response=Worker,
    summary="Register a worker (heartbeat)",
)
async def register_worker(call: Call) -> Reply:
    """Insert or refresh the worker: its queues, handlers (with their options) and the task
    it is running. The answer's ``orgId`` is the organisation whose queues it may consume."""
    path: WorkerPath = call.path
    row = await storage.register_worker(
        call.db, org_id=call.org_id, worker_id=path.worker_id, body=call.body
    )
    return reply(_worker(row))


@endpoints.get(
    "/workers", Permission.TASKS_READ, response=Page[Worker], summary="List live workers"
)
async def list_workers(call: Call) -> Reply:
    """The organisation's workers seen in the last 30 seconds, oldest first."""
    rows = await storage.list_workers(call.db, org_id=call.org_id)
    page = Page[Worker](
        data=[_worker(row) for row in rows],
        pagination=Pagination(total=len(rows), limit=len(rows), offset=0),
    )
    return reply(page)


@endpoints.delete(
    "/workers/{workerId}",
    Permission.TASKS_UPDATE,
    path_model=WorkerPath,
    response=Deleted,
    summary="Deregister a worker",
)
async def delete_worker(call: Call) -> Reply:
    """A worker that stops cleanly removes itself; ``deleted`` is 0 if it was unknown."""
    path: WorkerPath = call.path
    deleted = await storage.delete_worker(call.db, org_id=call.org_id, worker_id=path.worker_id)
    return reply(Deleted(deleted=deleted))


@endpoints.get(
    "/queues",
    Permission.TASKS_READ,
    response=QueueList,
    summary="Queue depths: unfinished tasks per queue, and live workers",
)
async def list_queues(call: Call) -> Reply:
    """Each of the caller's queues that has unfinished tasks or a live worker: how many
    tasks are ``queued``, ``retrying`` and ``running`` (from the database, the source of
    truth, whatever Redis holds) and how many live workers consume it."""
    depths = await storage.queue_depths(call.db, org_id=call.org_id)
    return reply(QueueList(data=[QueueDepth.model_validate(d) for d in depths]))
