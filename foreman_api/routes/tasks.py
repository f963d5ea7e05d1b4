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
    ReconcileRequest,
    Reconciliation,
    Task,
    TaskCreate,
    TaskHeartbeat,
    TaskStatus,
    TaskType,
    TaskUpdate,
    TimeSort,
    WaitingTask,
)
from foreman_api.storage import recovery
from foreman_api.storage import task_updates as updates
from foreman_api.storage import tasks as storage
from foreman_api.storage.rows import task_from_row

router = APIRouter(tags=["tasks"])

TaskId = Annotated[uuid.UUID, Path(alias="taskId")]
SortBy = Annotated[TimeSort, Query(alias="sortBy")]
WARNING_HEADER = "Foreman-Warning"


@router.post("/tasks", status_code=201, response_model=Task, summary="Create a task")
def create_task(body: TaskCreate, caller: CanCreateTasks, engine: Engine) -> Response:
    """A new ``pending`` (or ``queued``) task, counted in its run's ``totalTasks``.

    ``queue`` and ``maxRetries`` default to the options a live worker registered for the
    type (its ``@task`` declaration), else ``default`` and 3; a response whose type no live
    worker serves carries a ``Foreman-Warning`` header. A repeated ``idempotencyKey``
    returns the task made the first time, with ``200`` and ``Idempotent-Replayed: true``.

    ``404`` when the run is not one of the caller's; ``409`` when the run is finished;
    ``400`` when ``parentTaskId`` is not a task of the same run (it is a field of the body,
    so an invalid value is invalid input, and the message is the same whether the id is
    unknown, of another run or of another organisation).
    """
    created = storage.create_task(
        engine,
        org_id=caller.org_id,
        run_id=body.run_id,
        type=body.type,
        input_data=body.input_data,
        parent_task_id=body.parent_task_id,
        metadata=body.metadata,
        max_retries=body.max_retries,
        queue=body.queue,
        status=TaskStatus(body.status),
        idempotency_key=body.idempotency_key,
    )
    response = json_response(task_from_row(created.row), 200 if created.replayed else 201)
    if created.replayed:
        response.headers["Idempotent-Replayed"] = "true"
    if not created.served:
        response.headers[WARNING_HEADER] = f"no live worker serves task type {body.type!r}"
    return response


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
    one succeeds. It records ``queueJobId`` (nothing else sets it), takes a lease of
    ``leaseSeconds`` if given, and returns the task. Repeating a won claim with the same
    ``queueJobId`` returns the task again (``200``); with another or no ``queueJobId`` it is
    a ``409``. A ``retrying`` task cannot be claimed before its ``retryAt``
    (``409 retry_not_due``).

    Any other write that carries ``queueJobId`` is fenced: it applies only while that job
    holds the claim, else ``409 stale_claim`` and nothing changes. A finished task cannot
    be changed (``409 task_finished``). The first task to start moves its run to ``running``;
    ``completed``/``failed`` raise the run's counters in the same transaction.
    """
    changes = patch_changes(body)
    for option in ("lease_seconds", "retry_delay"):
        changes.pop(option, None)
    row = updates.update_task(
        engine,
        org_id=caller.org_id,
        task_id=task_id,
        status=body.status,
        changes=changes,
        lease_seconds=body.lease_seconds,
        retry_delay=body.retry_delay,
    )
    return json_response(task_from_row(row))


@router.post(
    "/tasks/{taskId}/heartbeat", response_model=Task, summary="Renew the lease of a claimed task"
)
def heartbeat(
    task_id: TaskId, body: TaskHeartbeat, caller: CanUpdateTasks, engine: Engine
) -> Response:
    """Extend the lease of a ``running`` task held by ``queueJobId`` to ``leaseSeconds`` from
    now. ``409 stale_claim`` when that job no longer holds the task: the worker must abandon
    the attempt (its result would be refused)."""
    row = updates.renew_lease(
        engine,
        org_id=caller.org_id,
        task_id=task_id,
        job_id=body.queue_job_id,
        lease_seconds=body.lease_seconds,
    )
    return json_response(task_from_row(row))


@router.post(
    "/reconcile",
    response_model=Reconciliation,
    summary="Recover tasks of lost workers; list tasks that should be queued",
)
def reconcile(body: ReconcileRequest, caller: CanUpdateTasks, engine: Engine) -> Response:
    """Called by ``foreman-worker``'s reconciler, a few seconds apart.

    First every ``running`` task of the caller's organisation whose lease expired moves on:
    ``retrying`` (due now) while retries are left, else ``failed``; either way with
    ``errorData.type = "WorkerLost"``. Then one page, by id after ``after``, of the tasks
    that should be waiting on a queue: ``queued``, or ``retrying`` and due, unchanged for
    ``graceSeconds``. The caller puts back on its queue each one Redis has lost.
    """
    recovered = recovery.expire_leases(engine, org_id=caller.org_id)
    waiting, cursor = recovery.waiting_tasks(
        engine,
        org_id=caller.org_id,
        after=body.after,
        limit=body.limit,
        grace_seconds=body.grace_seconds,
    )
    result = Reconciliation(
        recovered=[task_from_row(row) for row in recovered],
        waiting=[WaitingTask.model_validate(dict(row)) for row in waiting],
        next=cursor,
    )
    return json_response(result)
