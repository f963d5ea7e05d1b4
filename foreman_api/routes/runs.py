"""``/runs``: create, read, update and list runs.

Handlers parse and respond; :mod:`foreman_api.domain.states` holds the status machine and
:mod:`foreman_api.storage.runs` the SQL. Served by :mod:`foreman_api.http`.
"""

from __future__ import annotations

from foreman_api.http.call import Call, Reply, reply
from foreman_api.http.endpoints import Endpoints
from foreman_api.http.wire import RowEncoder
from foreman_api.schemas import (
    Page,
    Permission,
    Retried,
    Run,
    RunCreate,
    RunListQuery,
    RunPath,
    RunUpdate,
)
from foreman_api.storage import retries
from foreman_api.storage import runs as storage

endpoints = Endpoints(tags=["runs"])
RUN = RowEncoder(Run)


@endpoints.post(
    "/runs",
    Permission.RUNS_CREATE,
    body=RunCreate,
    response=Run,
    status=201,
    summary="Create a run",
)
async def create_run(call: Call) -> Reply:
    """A new run in status ``pending`` with its counters at zero.

    It becomes ``running`` when its first task starts and, unless created with
    ``autoComplete: false``, finishes by itself when its last unfinished task settles:
    ``completed``, or ``failed`` if any task failed for good (``cancelled`` if every task
    was cancelled). Tasks a handler spawns are created before it finishes, so they keep
    the run open. A task created in a run that finished by itself, or a retry of one of its
    tasks, reopens it; a run closed with ``PATCH`` stays closed (``409`` for new tasks).
    """
    body: RunCreate = call.body
    row = await storage.create_run(
        call.db,
        org_id=call.org_id,
        input_data=body.input_data,
        metadata=body.metadata,
        auto_complete=body.auto_complete,
    )
    return Reply(RUN.encode(row), 201)


@endpoints.get(
    "/runs", Permission.RUNS_READ, query=RunListQuery, response=Page[Run], summary="List runs"
)
async def list_runs(call: Call) -> Reply:
    """The caller's runs, newest first by default; ties are broken by id for stable pages."""
    query: RunListQuery = call.query
    rows, total = await storage.list_runs(
        call.db,
        org_id=call.org_id,
        status=query.status,
        limit=query.limit,
        offset=query.offset,
        sort_by=query.sort_by,
        sort_order=query.sort_order,
    )
    return Reply(RUN.encode_page(rows, total=total, limit=query.limit, offset=query.offset))


@endpoints.get(
    "/runs/{runId}", Permission.RUNS_READ, path_model=RunPath, response=Run, summary="Get a run"
)
async def get_run(call: Call) -> Reply:
    path: RunPath = call.path
    row = await storage.get_run(call.db, org_id=call.org_id, run_id=path.run_id)
    return Reply(RUN.encode(row))


@endpoints.patch(
    "/runs/{runId}",
    Permission.RUNS_UPDATE,
    path_model=RunPath,
    body=RunUpdate,
    response=Run,
    summary="Update a run",
)
async def update_run(call: Call) -> Reply:
    """Set output, error, metadata and/or move the status.

    ``pending → running | cancelled``, ``running → completed | failed | cancelled``; a run
    also starts by itself when its first task starts. Leaving a terminal status is a
    ``409 invalid_transition``. Setting the status the run already has is a no-op for the
    status (``200``, timestamps unchanged), so a retried request is harmless. Cancelling
    cancels the run's unfinished tasks in the same transaction.
    """
    path: RunPath = call.path
    body: RunUpdate = call.body
    row = await storage.update_run(
        call.db,
        org_id=call.org_id,
        run_id=path.run_id,
        status=body.status,
        # The fields the body carried (an explicit null clears), minus the status.
        changes={name: getattr(body, name) for name in body.model_fields_set if name != "status"},
    )
    return Reply(RUN.encode(row))


@endpoints.post(
    "/runs/{runId}/retry",
    Permission.TASKS_UPDATE,
    path_model=RunPath,
    response=Retried,
    summary="Retry every failed or cancelled task of a run",
)
async def retry_run(call: Call) -> Reply:
    """Every ``failed``/``cancelled`` task of the run moves back to ``queued``, as
    ``POST /tasks/{taskId}/retry`` moves one; a finished run is reopened (``running``).
    Reports how many moved and which; repeating the call moves nothing more."""
    path: RunPath = call.path
    await storage.get_run(call.db, org_id=call.org_id, run_id=path.run_id)  # or 404
    moved = await retries.retry_all(
        call.db, org_id=call.org_id, matching=retries.TaskFilter(run_id=path.run_id)
    )
    return reply(Retried(moved=len(moved), task_ids=[row["id"] for row in moved]))
