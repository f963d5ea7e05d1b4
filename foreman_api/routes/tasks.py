"""``/tasks``: create, read, update (the status machine and the claim) and list tasks.

Routes parse and respond; :mod:`foreman_api.domain.states` holds the status machine and
:mod:`foreman_api.storage.tasks` the SQL, including the claim's compare-and-set.
"""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Path, Query
from fastapi.responses import Response

from foreman_api.deps import CanCreateTasks, CanReadTasks, CanUpdateTasks, Engine
from foreman_api.routes.runs import Limit, Offset, Order, json_response, patch_changes
from foreman_api.schemas import (
    Page,
    Pagination,
    Task,
    TaskCreate,
    TaskStatus,
    TaskType,
    TaskUpdate,
    TimeSort,
)
from foreman_api.storage import tasks as storage
from foreman_api.storage.rows import task_from_row

router = APIRouter(tags=["tasks"])

TaskId = Annotated[uuid.UUID, Path(alias="taskId")]
SortBy = Annotated[TimeSort, Query(alias="sortBy")]


@router.post("/tasks", status_code=201, response_model=Task, summary="Create a task")
def create_task(body: TaskCreate, caller: CanCreateTasks, engine: Engine) -> Response:
    """A new ``pending`` task, counted in its run's ``totalTasks``.

    ``404`` when the run is not one of the caller's; ``409`` when the run is finished;
    ``400`` when ``parentTaskId`` is not a task of the same run (it is a field of the body,
    so an invalid value is invalid input, and the message is the same whether the id is
    unknown, of another run or of another organisation).
    """
    row = storage.create_task(
        engine,
        org_id=caller.org_id,
        run_id=body.run_id,
        type=body.type,
        input_data=body.input_data,
        parent_task_id=body.parent_task_id,
        metadata=body.metadata,
        max_retries=body.max_retries,
    )
    return json_response(task_from_row(row), 201)


@router.get("/tasks", response_model=Page[Task], summary="List tasks")
def list_tasks(
    caller: CanReadTasks,
    engine: Engine,
    run_id: Annotated[uuid.UUID | None, Query(alias="runId")] = None,
    parent_task_id: Annotated[uuid.UUID | None, Query(alias="parentTaskId")] = None,
    status: TaskStatus | None = None,
    type: Annotated[TaskType | None, Query()] = None,
    limit: Limit = 100,
    offset: Offset = 0,
    sort_by: SortBy = "createdAt",
    sort_order: Order = "desc",
) -> Response:
    """The caller's tasks, filtered; newest first by default, ties broken by id.

    A ``runId`` or ``parentTaskId`` that names nothing of the caller's is a ``404``.
    """
    rows, total = storage.list_tasks(
        engine,
        org_id=caller.org_id,
        run_id=run_id,
        parent_task_id=parent_task_id,
        status=status,
        type=type,
        limit=limit,
        offset=offset,
        sort_by=sort_by,
        sort_order=sort_order,
    )
    page = Page[Task](
        data=[task_from_row(row) for row in rows],
        pagination=Pagination(total=total, limit=limit, offset=offset),
    )
    return json_response(page)


@router.get("/tasks/{taskId}", response_model=Task, summary="Get a task")
def get_task(task_id: TaskId, caller: CanReadTasks, engine: Engine) -> Response:
    row = storage.get_task(engine, org_id=caller.org_id, task_id=task_id)
    return json_response(task_from_row(row))


@router.patch("/tasks/{taskId}", response_model=Task, summary="Update or claim a task")
def update_task(
    task_id: TaskId, body: TaskUpdate, caller: CanUpdateTasks, engine: Engine
) -> Response:
    """Set output, error, metadata, ``queueJobId`` and/or move the status.

    The status machine: ``pending → queued | running | cancelled``, ``queued → running |
    cancelled``, ``running → completed | failed | retrying | cancelled``, ``retrying →
    queued | running | failed | cancelled``; anything else is ``409 invalid_transition``.

    A move to ``running`` is the claim: a compare-and-set, so of concurrent claims exactly
    one succeeds. It records ``queueJobId`` and returns the task. Repeating a won claim with
    the same ``queueJobId`` returns the task again (``200``); with another or no
    ``queueJobId`` it is a ``409``. The first task to start moves its run to ``running``;
    ``completed``/``failed`` raise the run's counters in the same transaction.
    """
    row = storage.update_task(
        engine,
        org_id=caller.org_id,
        task_id=task_id,
        status=body.status,
        changes=patch_changes(body),
    )
    return json_response(task_from_row(row))
