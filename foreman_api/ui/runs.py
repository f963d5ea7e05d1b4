"""The runs list (``/ui``), a run's page (``/ui/runs/{id}``) and its actions: cancel the
run, retry its failed tasks. Everything is read and changed through the API's storage
functions, so the pages show and do exactly what the API would."""

from __future__ import annotations

from datetime import timedelta

import orjson
from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from foreman_api.clock import utcnow
from foreman_api.domain.errors import Invalid
from foreman_api.domain.paging import MAX_OFFSET
from foreman_api.domain.run_data_query import build_query
from foreman_api.domain.run_search import parse_search
from foreman_api.schemas import Permission, Run, RunData, RunStatus, Task
from foreman_api.storage import retries, run_data
from foreman_api.storage import runs as run_storage
from foreman_api.storage import tasks as task_storage
from foreman_api.ui import flash
from foreman_api.ui.render import PageRoute, base_context, here, render
from foreman_api.ui.session import SignedIn, Viewer, action_form
from foreman_api.ui.views import Pager, parse_id, run_live, task_tree, timeline, wire

router = APIRouter(prefix="/ui", route_class=PageRoute, include_in_schema=False)

PAGE_SIZE = 50
MAX_TASKS_SHOWN = 1000
"""A run page shows this many tasks (the API's largest page), oldest first."""
DATA_SHOWN = 100
WINDOWS = {
    "15m": timedelta(minutes=15),
    "1h": timedelta(hours=1),
    "6h": timedelta(hours=6),
    "24h": timedelta(hours=24),
    "7d": timedelta(days=7),
    "30d": timedelta(days=30),
}
"""The runs list's time filter: created within the last …"""


@router.get("")
async def runs_page(
    request: Request,
    viewer: SignedIn,
    status: str = "",
    window: str = "",
    q: str = "",
    page: int = 1,
) -> Response:
    """Newest runs first, 50 a page, filtered by status, age and a search."""
    viewer.principal.require(Permission.RUNS_READ)
    if status and status not in RunStatus.__members__.values():
        raise Invalid(f"unknown status {status!r}")
    if window and window not in WINDOWS:
        raise Invalid(f"unknown time window {window!r}")
    try:
        search = parse_search(q)
    except ValueError as exc:
        raise Invalid(str(exc)) from None
    page = min(max(page, 1), MAX_OFFSET // PAGE_SIZE)  # the database's largest offset
    rows, total = await run_storage.list_runs(
        viewer.db,
        org_id=viewer.org_id,
        status=RunStatus(status) if status else None,
        limit=PAGE_SIZE,
        offset=(page - 1) * PAGE_SIZE,
        sort_by="createdAt",
        sort_order="desc",
        created_after=utcnow() - WINDOWS[window] if window else None,
        search=search,
    )
    runs = [wire(Run, row) for row in rows]
    filters = {"status": status, "window": window, "q": q}
    context = base_context(
        request,
        viewer,
        runs=runs,
        filters=filters,
        pager=Pager(page=page, size=PAGE_SIZE, total=total, filters=filters),
        statuses=list(RunStatus),
        windows=list(WINDOWS),
        live=any(run_live(run) for run in runs),
        self_url=here(request),
    )
    return render(request, "runs.html", {"runs": "_runs_table.html"}, context)


async def _run_data(viewer: Viewer, run: Run, prefix: str, tag: str) -> list[RunData] | None:
    """The run's latest entry per key (by key), filtered; None without the permission."""
    if not viewer.can(Permission.RUNDATA_READ):
        return None
    query = build_query(  # an InvalidFilter is shown as the 400 page
        key_starts_with=[prefix] if prefix else None,
        tags=[tag] if tag else None,
        limit=DATA_SHOWN,
        sort_by="key",
        sort_order="asc",
    )
    found = await run_data.list_entries(viewer.db, org_id=viewer.org_id, run_id=run.id, query=query)
    if found.json is not None:
        return [wire(RunData, entry) for entry in orjson.loads(found.json)]
    return [wire(RunData, row) for row in found.rows]


@router.get("/runs/{run_id}")
async def run_page(
    request: Request, viewer: SignedIn, run_id: str, key: str = "", tag: str = ""
) -> Response:
    """A run: status and timings, task tree, timeline, run data, actions."""
    viewer.principal.require(Permission.RUNS_READ)
    viewer.principal.require(Permission.TASKS_READ)
    row = await run_storage.get_run(viewer.db, org_id=viewer.org_id, run_id=parse_id(run_id))
    run = wire(Run, row)
    tasks = await task_storage.list_tasks(
        viewer.db, org_id=viewer.org_id, run_id=run.id, limit=MAX_TASKS_SHOWN
    )
    tree = task_tree([wire(Task, task) for task in tasks.rows])
    context = base_context(
        request,
        viewer,
        run=run,
        tree=tree,
        bars=timeline(tree),
        task_total=tasks.total,
        data=await _run_data(viewer, run, key, tag),
        data_filter={"key": key, "tag": tag},
        live=run_live(run),
        self_url=here(request),
        can_cancel=viewer.can(Permission.RUNS_UPDATE),
        can_retry=viewer.can(Permission.TASKS_UPDATE),
    )
    return render(
        request, "run.html", {"run-live": "_run_live.html", "run-data": "_run_data.html"}, context
    )


@router.post("/runs/{run_id}/cancel")
async def cancel_run(request: Request, viewer: SignedIn, run_id: str) -> Response:
    """Cancel the run and its unfinished tasks (the API's ``PATCH status=cancelled``)."""
    await action_form(request, viewer, Permission.RUNS_UPDATE)
    run = await run_storage.update_run(
        viewer.db,
        org_id=viewer.org_id,
        run_id=parse_id(run_id),
        status=RunStatus.CANCELLED,
        changes={},
    )
    return flash.done(request, f"/ui/runs/{run['id']}", "Run cancelled.")


@router.post("/runs/{run_id}/retry")
async def retry_run(request: Request, viewer: SignedIn, run_id: str) -> Response:
    """Every failed or cancelled task of the run back to ``queued``."""
    await action_form(request, viewer, Permission.TASKS_UPDATE)
    ident = parse_id(run_id)
    await run_storage.get_run(viewer.db, org_id=viewer.org_id, run_id=ident)  # or 404
    moved = await retries.retry_all(
        viewer.db, org_id=viewer.org_id, matching=retries.TaskFilter(run_id=ident)
    )
    return flash.done(request, f"/ui/runs/{ident}", f"{len(moved)} task(s) queued again.")
