"""``/tasks``: create, read, update (the status machine and the claim) and list tasks.

Handlers parse and respond; :mod:`foreman_api.domain.states` holds the status machine and
:mod:`foreman_api.storage.tasks` / :mod:`foreman_api.storage.task_updates` the SQL,
including the claim's compare-and-set. Served by :mod:`foreman_api.http`.
"""

from __future__ import annotations

from foreman_api.http.call import Call, Reply, reply
from foreman_api.http.endpoints import Endpoints
from foreman_api.http.wire import RowEncoder, dumps
from foreman_api.schemas import (
    Attempt,
    AttemptList,
    Page,
    Permission,
    ReconcileRequest,
    Reconciliation,
    Retried,
    Task,
    TaskCreate,
    TaskHeartbeat,
    TaskListQuery,
    TaskPath,
    TaskRetry,
    TaskRetryFilter,
    TaskStatus,
    TaskUpdate,
    WaitingTask,
)
from foreman_api.storage import attempts, recovery, retries
from foreman_api.storage import task_updates as updates
from foreman_api.storage import tasks as storage
from foreman_api.storage.rows import task_from_row
from foreman_api.storage.runs import get_run

endpoints = Endpoints(tags=["tasks"])
TASK = RowEncoder(Task)
ATTEMPT = RowEncoder(Attempt)

WARNING_HEADER = "Foreman-Warning"
_REPLAYED = {
    200: {
        "model": Task,
        "description": "The task an earlier create with the same "
        "idempotencyKey made (header Idempotent-Replayed: true)",
    }
}


@endpoints.post(
    "/tasks",
    Permission.TASKS_CREATE,
    body=TaskCreate,
    response=Task,
    status=201,
    summary="Create a task",
    responses=_REPLAYED,
)
async def create_task(call: Call) -> Reply:
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
    body: TaskCreate = call.body
    created = await storage.create_task(
        call.db,
        org_id=call.org_id,
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
    response = Reply(TASK.encode(created.row), 200 if created.replayed else 201)
    if created.replayed:
        response.headers["Idempotent-Replayed"] = "true"
    if not created.served:
        response.headers[WARNING_HEADER] = f"no live worker serves task type {body.type!r}"
    return response


@endpoints.get(
    "/tasks", Permission.TASKS_READ, query=TaskListQuery, response=Page[Task], summary="List tasks"
)
async def list_tasks(call: Call) -> Reply:
    """The caller's tasks, filtered; newest first by default, ties broken by id.

    A ``runId`` or ``parentTaskId`` that names nothing of the caller's is a ``404``.
    """
    query: TaskListQuery = call.query
    page = await storage.list_tasks(
        call.db,
        org_id=call.org_id,
        run_id=query.run_id,
        parent_task_id=query.parent_task_id,
        status=query.status,
        type=query.type,
        limit=query.limit,
        offset=query.offset,
        sort_by=query.sort_by,
        sort_order=query.sort_order,
        as_json=True,
    )
    paging = {"total": page.total, "limit": query.limit, "offset": query.offset}
    if page.json is not None:
        return Reply(TASK.encode_built_page(page.json, **paging))
    return Reply(TASK.encode_page(page.rows, **paging))


@endpoints.get(
    "/tasks/{taskId}",
    Permission.TASKS_READ,
    path_model=TaskPath,
    response=Task,
    summary="Get a task",
)
async def get_task(call: Call) -> Reply:
    path: TaskPath = call.path
    row = await storage.get_task(call.db, org_id=call.org_id, task_id=path.task_id)
    return Reply(TASK.encode(row))


@endpoints.get(
    "/tasks/{taskId}/attempts",
    Permission.TASKS_READ,
    path_model=TaskPath,
    response=AttemptList,
    summary="List a task's attempts",
)
async def list_attempts(call: Call) -> Reply:
    """Every attempt of the task, first to last: the worker and queue job that ran it,
    when it started and ended, its duration, its outcome (``running`` while it lasts, then
    the status the task moved to) and the ``errorData`` it ended with. A retry through the
    API resets ``retryCount`` but keeps this history. ``404`` when the task is not the
    caller's."""
    path: TaskPath = call.path
    rows = await attempts.list_attempts(call.db, org_id=call.org_id, task_id=path.task_id)
    if not rows:
        await storage.get_task(call.db, org_id=call.org_id, task_id=path.task_id)  # or 404
    return Reply(dumps({"data": [ATTEMPT.wire(row) for row in rows]}))


@endpoints.patch(
    "/tasks/{taskId}",
    Permission.TASKS_UPDATE,
    path_model=TaskPath,
    body=TaskUpdate,
    response=Task,
    summary="Update or claim a task",
)
async def update_task(call: Call) -> Reply:
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
    path: TaskPath = call.path
    body: TaskUpdate = call.body
    changes = {
        name: getattr(body, name)
        for name in body.model_fields_set
        if name not in ("status", "lease_seconds", "retry_delay", "worker_id")
    }
    row = await updates.update_task(
        call.db,
        org_id=call.org_id,
        task_id=path.task_id,
        status=body.status,
        changes=changes,
        lease_seconds=body.lease_seconds,
        retry_delay=body.retry_delay,
        worker_id=body.worker_id,
    )
    return Reply(TASK.encode(row))


@endpoints.post(
    "/tasks/{taskId}/retry",
    Permission.TASKS_UPDATE,
    path_model=TaskPath,
    body=TaskRetry,
    body_optional=True,
    response=Task,
    summary="Retry or replay a failed or cancelled task",
)
async def retry_task(call: Call) -> Reply:
    """Run a ``failed`` or ``cancelled`` task again: back to ``queued`` with a fresh retry
    budget (``retryCount`` 0) and no output, error or end time; its attempts are kept
    (``/attempts``). With ``inputData`` it is a replay with that input. A failed task
    leaves its run's ``failedTasks``; a finished run is reopened (``running``).

    ``foreman-worker``'s reconciler puts the task on its queue (the SDK's
    ``foreman_worker.resubmit`` also enqueues at once). Repeating the call while the task is
    still unfinished returns it unchanged (``200``); a ``completed`` task, or a replay
    with other input of an unfinished one, is ``409 invalid_transition``.
    """
    path: TaskPath = call.path
    body: TaskRetry = call.body
    replay = "input_data" in body.model_fields_set
    row = await retries.retry_task(
        call.db,
        org_id=call.org_id,
        task_id=path.task_id,
        input_data=body.input_data if replay else retries.UNSET,
    )
    return Reply(TASK.encode(row))


@endpoints.post(
    "/tasks/retry",
    Permission.TASKS_UPDATE,
    body=TaskRetryFilter,
    body_optional=True,
    response=Retried,
    summary="Retry every failed or cancelled task that matches a filter",
)
async def retry_tasks(call: Call) -> Reply:
    """Bulk retry: every ``failed``/``cancelled`` task of the caller's that matches all the
    given conditions (run, type, status, creation time), oldest first, up to ``limit``,
    moves back to ``queued`` as a single retry would (see ``POST /tasks/{taskId}/retry``).
    Reports how many moved and which; repeating the call moves nothing more. A ``runId``
    that is not the caller's is a ``404``."""
    body: TaskRetryFilter = call.body
    if body.run_id is not None:
        await get_run(call.db, org_id=call.org_id, run_id=body.run_id)  # or 404
    matching = retries.TaskFilter(
        run_id=body.run_id,
        type=body.type,
        status=body.status,
        created_after=body.created_after,
        created_before=body.created_before,
    )
    moved = await retries.retry_tasks(
        call.db, org_id=call.org_id, matching=matching, limit=body.limit
    )
    return reply(Retried(moved=len(moved), task_ids=[row["id"] for row in moved]))


@endpoints.post(
    "/tasks/{taskId}/heartbeat",
    Permission.TASKS_UPDATE,
    path_model=TaskPath,
    body=TaskHeartbeat,
    response=Task,
    summary="Renew the lease of a claimed task",
)
async def heartbeat(call: Call) -> Reply:
    """Extend the lease of a ``running`` task held by ``queueJobId`` to ``leaseSeconds`` from
    now. ``409 stale_claim`` when that job no longer holds the task: the worker must abandon
    the attempt (its result would be refused)."""
    path: TaskPath = call.path
    body: TaskHeartbeat = call.body
    row = await updates.renew_lease(
        call.db,
        org_id=call.org_id,
        task_id=path.task_id,
        job_id=body.queue_job_id,
        lease_seconds=body.lease_seconds,
    )
    return Reply(TASK.encode(row))


@endpoints.post(
    "/reconcile",
    Permission.TASKS_UPDATE,
    body=ReconcileRequest,
    response=Reconciliation,
    summary="Recover tasks of lost workers; list tasks that should be queued",
)
async def reconcile(call: Call) -> Reply:
    """Called by ``foreman-worker``'s reconciler, a few seconds apart.

    First every ``running`` task of the caller's organisation whose lease expired moves on:
    ``retrying`` (due now) while retries are left, else ``failed``; either way with
    ``errorData.type = "WorkerLost"``. Then one page, by id after ``after``, of the tasks
    that should be waiting on a queue: ``queued``, or ``retrying`` and due, unchanged for
    ``graceSeconds``. The caller puts back on its queue each one Redis has lost.
    """
    body: ReconcileRequest = call.body
    recovered = await recovery.expire_leases(call.db, org_id=call.org_id)
    waiting, cursor = await recovery.waiting_tasks(
        call.db,
        org_id=call.org_id,
        after=body.after,
        limit=body.limit,
        grace_seconds=body.grace_seconds,
    )
    result = Reconciliation(
        recovered=[task_from_row(row) for row in recovered],
        waiting=[WaitingTask.model_validate(row) for row in waiting],
        next=cursor,
    )
    return reply(result)
