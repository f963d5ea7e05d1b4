"""Run data routes: ``/runs/{runId}/data`` — write, query, retag and delete entries.

Handlers parse and respond; :mod:`foreman_api.domain.run_data_query` validates the filters
and :mod:`foreman_api.storage.run_data` holds the SQL. Served by :mod:`foreman_api.http`.
"""

from __future__ import annotations

from foreman_api.domain.errors import Invalid, invalid_field
from foreman_api.domain.run_data_query import build_query
from foreman_api.http.call import Call, Reply, reply
from foreman_api.http.endpoints import Endpoints
from foreman_api.http.wire import RowEncoder
from foreman_api.schemas import (
    Deleted,
    Page,
    Permission,
    RunData,
    RunDataCreate,
    RunDataDeleteQuery,
    RunDataEntryPath,
    RunDataListQuery,
    RunDataPath,
    RunDataTagsUpdate,
)
from foreman_api.storage import run_data as storage

endpoints = Endpoints(tags=["run data"])
ENTRY = RowEncoder(RunData)


@endpoints.post(
    "/runs/{runId}/data",
    Permission.RUNDATA_WRITE,
    path_model=RunDataPath,
    body=RunDataCreate,
    response=RunData,
    status=201,
)
async def create_run_data(call: Call) -> Reply:
    """Store an entry; it becomes the latest of its key. Several entries may share a key."""
    run_id = call.path.run_id
    body: RunDataCreate = call.body
    row = await storage.create_entry(
        call.db,
        org_id=call.org_id,
        run_id=run_id,
        key=body.key,
        value=body.value,
        task_id=body.task_id,
        tags=body.tags,
        metadata=body.metadata,
    )
    return Reply(ENTRY.encode(row), 201)


@endpoints.get(
    "/runs/{runId}/data",
    Permission.RUNDATA_READ,
    path_model=RunDataPath,
    query=RunDataListQuery,
    response=Page[RunData],
)
async def list_run_data(call: Call) -> Reply:
    """Query entries. Key filters are OR-ed; tag filters are AND-ed with them.

    Without ``includeAll`` only the latest matching entry of each key is returned.
    """
    run_id = call.path.run_id
    params: RunDataListQuery = call.query
    query = build_query(
        key=params.key,
        keys=params.keys,
        key_starts_with=params.key_starts_with,
        key_pattern=params.key_pattern,
        tags=params.tags,
        tag_starts_with=params.tag_starts_with,
        tag_mode=params.tag_mode,
        include_all=params.include_all,
        limit=params.limit,
        offset=params.offset,
        sort_by=params.sort_by,
        sort_order=params.sort_order,
    )
    page = await storage.list_entries(call.db, org_id=call.org_id, run_id=run_id, query=query)
    paging = {"total": page.total, "limit": params.limit, "offset": params.offset}
    if page.json is not None:
        return Reply(ENTRY.encode_built_page(page.json, **paging))
    return Reply(ENTRY.encode_page(page.rows, **paging))


@endpoints.patch(
    "/runs/{runId}/data/{id}/tags",
    Permission.RUNDATA_WRITE,
    path_model=RunDataEntryPath,
    body=RunDataTagsUpdate,
    response=RunData,
)
async def update_run_data_tags(call: Call) -> Reply:
    """Remove ``remove`` and append ``add`` (a tag may not be in both); bumps ``updatedAt``."""
    path: RunDataEntryPath = call.path
    body: RunDataTagsUpdate = call.body
    both = sorted(set(body.add) & set(body.remove))
    if both:
        raise invalid_field("add", f"tags both added and removed: {', '.join(both)}")
    row = await storage.update_tags(
        call.db,
        org_id=call.org_id,
        run_id=path.run_id,
        entry_id=path.entry_id,
        add=body.add,
        remove=body.remove,
    )
    return Reply(ENTRY.encode(row))


@endpoints.delete(
    "/runs/{runId}/data",
    Permission.RUNDATA_DELETE,
    path_model=RunDataPath,
    query=RunDataDeleteQuery,
    response=Deleted,
)
async def delete_run_data(call: Call) -> Reply:
    """Delete by ``key`` (all its entries) or by ``id``: exactly one of the two."""
    run_id = call.path.run_id
    params: RunDataDeleteQuery = call.query
    key, entry_id = params.key, params.entry_id
    if key is not None and (not key or "\x00" in key):
        raise invalid_field("key", "must be a non-empty key without NUL characters")
    if key is not None and entry_id is None:
        deleted = await storage.delete_by_key(call.db, org_id=call.org_id, run_id=run_id, key=key)
    elif entry_id is not None and key is None:
        deleted = await storage.delete_by_id(
            call.db, org_id=call.org_id, run_id=run_id, entry_id=entry_id
        )
    else:
        raise Invalid(
            "give exactly one of the query parameters 'key' and 'id'",
            details=[{"field": "key", "message": "exactly one of 'key' and 'id' is required"}],
        )
    return reply(Deleted(deleted=deleted))
