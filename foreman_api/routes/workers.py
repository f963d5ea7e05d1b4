"""``/workers``: the live worker registry (``foreman-worker`` registers and heartbeats here).

Registering is a ``PUT`` of the worker's own id, repeated every few seconds; a worker not
seen for :data:`~foreman_api.storage.workers.LIVE_SECONDS` drops out of the list. The
handlers a worker declares set the queue and ``maxRetries`` of tasks of those types.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path
from fastapi.responses import Response
from sqlalchemy import RowMapping

from foreman_api.deps import CanReadTasks, CanUpdateTasks, Engine
from foreman_api.routes.runs import json_response
from foreman_api.schemas import Deleted, Page, Pagination, Worker, WorkerRegistration
from foreman_api.storage import workers as storage

router = APIRouter(tags=["workers"])

WorkerIdPath = Annotated[str, Path(alias="workerId", min_length=1, max_length=255)]


def _worker(row: RowMapping) -> Worker:
    return Worker.model_validate(dict(row))


@router.put("/workers/{workerId}", response_model=Worker, summary="Register a worker (heartbeat)")
def register_worker(
    worker_id: WorkerIdPath, body: WorkerRegistration, caller: CanUpdateTasks, engine: Engine
) -> Response:
    """Insert or refresh the worker: its queues, handlers (with their options) and the task
    it is running. The answer's ``orgId`` is the organisation whose queues it may consume."""
    row = storage.register_worker(engine, org_id=caller.org_id, worker_id=worker_id, body=body)
    return json_response(_worker(row))


@router.get("/workers", response_model=Page[Worker], summary="List live workers")
def list_workers(caller: CanReadTasks, engine: Engine) -> Response:
    """The organisation's workers seen in the last 30 seconds, oldest first."""
    rows = storage.list_workers(engine, org_id=caller.org_id)
    page = Page[Worker](
        data=[_worker(row) for row in rows],
        pagination=Pagination(total=len(rows), limit=len(rows), offset=0),
    )
    return json_response(page)


@router.delete("/workers/{workerId}", response_model=Deleted, summary="Deregister a worker")
def delete_worker(worker_id: WorkerIdPath, caller: CanUpdateTasks, engine: Engine) -> Response:
    """A worker that stops cleanly removes itself; ``deleted`` is 0 if it was unknown."""
    deleted = storage.delete_worker(engine, org_id=caller.org_id, worker_id=worker_id)
    return json_response(Deleted(deleted=deleted))
