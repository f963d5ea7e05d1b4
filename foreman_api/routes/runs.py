"""``/runs``: create, read, update and list runs.

Routes parse and respond; :mod:`foreman_api.domain.states` holds the status machine and
:mod:`foreman_api.storage.runs` the SQL. Responses are serialised once, straight from the
wire model (``response_model`` documents them in OpenAPI without a second validation pass).
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from fastapi.responses import Response
from pydantic import BaseModel

from foreman_api.deps import CanCreateRuns, CanReadRuns, CanUpdateRuns, Engine
from foreman_api.schemas import (
    MAX_OFFSET,
    Page,
    Pagination,
    Run,
    RunCreate,
    RunStatus,
    RunUpdate,
    SortOrder,
    TimeSort,
)
from foreman_api.storage import runs as storage
from foreman_api.storage.rows import run_from_row

router = APIRouter(tags=["runs"])

Limit = Annotated[int, Query(ge=1, le=1000, description="Page size, 1 to 1000.")]
Offset = Annotated[int, Query(ge=0, le=MAX_OFFSET, description="Rows to skip, ≥ 0.")]
RunId = Annotated[uuid.UUID, Path(alias="runId")]
SortBy = Annotated[TimeSort, Query(alias="sortBy")]
Order = Annotated[SortOrder, Query(alias="sortOrder")]


def json_response(model: BaseModel, status_code: int = 200) -> Response:
    """Serialise a wire model (camelCase, ISO timestamps) once, without re-validation."""
    return Response(model.model_dump_json(), status_code=status_code, media_type="application/json")


def patch_changes(body: BaseModel) -> dict[str, Any]:
    """The fields a PATCH body actually carried (explicit ``null`` clears), minus status."""
    return {name: getattr(body, name) for name in body.model_fields_set if name != "status"}


@router.post("/runs", status_code=201, response_model=Run, summary="Create a run")
def create_run(body: RunCreate, caller: CanCreateRuns, engine: Engine) -> Response:
    """A new run in status ``pending`` with its counters at zero."""
    row = storage.create_run(
        engine, org_id=caller.org_id, input_data=body.input_data, metadata=body.metadata
    )
    return json_response(run_from_row(row), 201)


@router.get("/runs", response_model=Page[Run], summary="List runs")
def list_runs(
    caller: CanReadRuns,
    engine: Engine,
    status: RunStatus | None = None,
    limit: Limit = 100,
    offset: Offset = 0,
    sort_by: SortBy = "createdAt",
    sort_order: Order = "desc",
) -> Response:
    """The caller's runs, newest first by default; ties are broken by id for stable pages."""
    rows, total = storage.list_runs(
        engine,
        org_id=caller.org_id,
        status=status,
        limit=limit,
        offset=offset,
        sort_by=sort_by,
        sort_order=sort_order,
    )
    page = Page[Run](
        data=[run_from_row(row) for row in rows],
        pagination=Pagination(total=total, limit=limit, offset=offset),
    )
    return json_response(page)


@router.get("/runs/{runId}", response_model=Run, summary="Get a run")
def get_run(run_id: RunId, caller: CanReadRuns, engine: Engine) -> Response:
    return json_response(run_from_row(storage.get_run(engine, org_id=caller.org_id, run_id=run_id)))


@router.patch("/runs/{runId}", response_model=Run, summary="Update a run")
def update_run(run_id: RunId, body: RunUpdate, caller: CanUpdateRuns, engine: Engine) -> Response:
    """Set output, error, metadata and/or move the status.

    ``pending → running | cancelled``, ``running → completed | failed | cancelled``; a run
    also starts by itself when its first task starts. Leaving a terminal status is a
    ``409 invalid_transition``. Setting the status the run already has is a no-op for the
    status (``200``, timestamps unchanged), so a retried request is harmless. Cancelling
    cancels the run's unfinished tasks in the same transaction.
    """
    row = storage.update_run(
        engine,
        org_id=caller.org_id,
        run_id=run_id,
        status=body.status,
        changes=patch_changes(body),
    )
    return json_response(run_from_row(row))
