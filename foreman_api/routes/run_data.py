"""Run data routes: ``/runs/{runId}/data`` — write, query, retag and delete entries."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Path, Query
from fastapi.responses import Response

from foreman_api.deps import CanDeleteRunData, CanReadRunData, CanWriteRunData, Engine
from foreman_api.domain.run_data_query import (
    MAX_LIMIT,
    MAX_OFFSET,
    InvalidFilter,
    SortBy,
    SortOrder,
    TagMode,
    build_query,
)
from foreman_api.errors import BadRequest, NotFound
from foreman_api.routes.runs import json_response
from foreman_api.schemas import (
    Deleted,
    Page,
    Pagination,
    RunData,
    RunDataCreate,
    RunDataTagsUpdate,
)
from foreman_api.storage import run_data as storage

router = APIRouter(tags=["run data"])

RunId = Annotated[uuid.UUID, Path(alias="runId", description="The run's id")]
LIST_HELP = "A list: comma-separated, or repeat the parameter"


def _wire(record: storage.RunDataRecord) -> RunData:
    return RunData(
        id=record.id,
        run_id=record.run_id,
        task_id=record.task_id,
        org_id=record.org_id,
        key=record.key,
        value=record.value,
        tags=record.tags,
        metadata=record.metadata,
        created_at=record.created_at,
        updated_at=record.updated_at,
    )


def _run_not_found(run_id: uuid.UUID) -> NotFound:
    return NotFound(f"run {run_id} not found")


def _bad_field(field: str, message: str) -> BadRequest:
    return BadRequest(f"{field}: {message}", details=[{"field": field, "message": message}])


@router.post("/runs/{runId}/data", status_code=201, response_model=RunData)
def create_run_data(
    run_id: RunId, body: RunDataCreate, caller: CanWriteRunData, engine: Engine
) -> Response:
    """Store an entry; it becomes the latest of its key. Several entries may share a key."""
    try:
        record = storage.create_entry(
            engine,
            org_id=caller.org_id,
            run_id=run_id,
            key=body.key,
            value=body.value,
            task_id=body.task_id,
            tags=body.tags,
            metadata=body.metadata,
        )
    except storage.RunNotFound:
        raise _run_not_found(run_id) from None
    except storage.TaskNotInRun:
        raise _bad_field("taskId", f"task {body.task_id} is not a task of run {run_id}") from None
    return json_response(_wire(record), 201)


@router.get("/runs/{runId}/data", response_model=Page[RunData])
def list_run_data(
    run_id: RunId,
    caller: CanReadRunData,
    engine: Engine,
    key: Annotated[str | None, Query(description="One exact key (commas are literal)")] = None,
    keys: Annotated[list[str] | None, Query(description=LIST_HELP)] = None,
    key_starts_with: Annotated[
        list[str] | None, Query(alias="keyStartsWith", description=LIST_HELP)
    ] = None,
    key_pattern: Annotated[
        list[str] | None,
        Query(alias="keyPattern", description=f"Globs (* any run, ? one character). {LIST_HELP}"),
    ] = None,
    tags: Annotated[list[str] | None, Query(description=LIST_HELP)] = None,
    tag_starts_with: Annotated[
        list[str] | None, Query(alias="tagStartsWith", description=LIST_HELP)
    ] = None,
    tag_mode: Annotated[TagMode, Query(alias="tagMode")] = TagMode.ANY,
    include_all: Annotated[bool, Query(alias="includeAll")] = False,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT, description="Page size, 1 to 1000.")] = 100,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET, description="Rows to skip, ≥ 0.")] = 0,
    sort_by: Annotated[SortBy, Query(alias="sortBy")] = SortBy.CREATED_AT,
    sort_order: Annotated[SortOrder, Query(alias="sortOrder")] = SortOrder.DESC,
) -> Response:
    """Query entries. Key filters are OR-ed; tag filters are AND-ed with them.

    Without ``includeAll`` only the latest matching entry of each key is returned.
    """
    try:
        query = build_query(
            key=key,
            keys=keys,
            key_starts_with=key_starts_with,
            key_pattern=key_pattern,
            tags=tags,
            tag_starts_with=tag_starts_with,
            tag_mode=tag_mode,
            include_all=include_all,
            limit=limit,
            offset=offset,
            sort_by=sort_by,
            sort_order=sort_order,
        )
    except InvalidFilter as exc:
        raise _bad_field(exc.field, exc.message) from None
    try:
        page = storage.list_entries(engine, org_id=caller.org_id, run_id=run_id, query=query)
    except storage.RunNotFound:
        raise _run_not_found(run_id) from None
    return json_response(
        Page[RunData](
            data=[_wire(record) for record in page.records],
            pagination=Pagination(total=page.total, limit=limit, offset=offset),
        )
    )


@router.patch("/runs/{runId}/data/{id}/tags", response_model=RunData)
def update_run_data_tags(
    run_id: RunId,
    entry_id: Annotated[uuid.UUID, Path(alias="id", description="The entry's id")],
    body: RunDataTagsUpdate,
    caller: CanWriteRunData,
    engine: Engine,
) -> Response:
    """Remove ``remove`` and append ``add`` (a tag may not be in both); bumps ``updatedAt``."""
    both = sorted(set(body.add) & set(body.remove))
    if both:
        raise _bad_field("add", f"tags both added and removed: {', '.join(both)}")
    try:
        record = storage.update_tags(
            engine,
            org_id=caller.org_id,
            run_id=run_id,
            entry_id=entry_id,
            add=body.add,
            remove=body.remove,
        )
    except storage.RunNotFound:
        raise _run_not_found(run_id) from None
    except storage.EntryNotFound:
        raise NotFound(f"run data entry {entry_id} not found in run {run_id}") from None
    return json_response(_wire(record))


@router.delete("/runs/{runId}/data", response_model=Deleted)
def delete_run_data(
    run_id: RunId,
    caller: CanDeleteRunData,
    engine: Engine,
    key: Annotated[str | None, Query(description="Delete every entry of this key")] = None,
    entry_id: Annotated[uuid.UUID | None, Query(alias="id", description="Delete one entry")] = None,
) -> Response:
    """Delete by ``key`` (all its entries) or by ``id``: exactly one of the two."""
    if key is not None and (not key or "\x00" in key):
        raise _bad_field("key", "must be a non-empty key without NUL characters")
    try:
        if key is not None and entry_id is None:
            deleted = storage.delete_by_key(engine, org_id=caller.org_id, run_id=run_id, key=key)
        elif entry_id is not None and key is None:
            deleted = storage.delete_by_id(
                engine, org_id=caller.org_id, run_id=run_id, entry_id=entry_id
            )
        else:
            raise BadRequest(
                "give exactly one of the query parameters 'key' and 'id'",
                details=[{"field": "key", "message": "exactly one of 'key' and 'id' is required"}],
            )
    except storage.RunNotFound:
        raise _run_not_found(run_id) from None
    return json_response(Deleted(deleted=deleted))
