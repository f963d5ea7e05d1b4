"""Failures across runs (``/ui/failures``) with bulk retry, and the live workers and queue
depths (``/ui/workers``, ``/ui/queues``) from the worker registry."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from foreman_api.domain.errors import Invalid
from foreman_api.schemas import Permission, QueueDepth, Task, TaskStatus, Worker
from foreman_api.storage import failures, retries, workers
from foreman_api.ui import flash
from foreman_api.ui.render import PageRoute, base_context, here, render
from foreman_api.ui.session import SignedIn, Viewer, action_form, first
from foreman_api.ui.views import parse_id, wire

router = APIRouter(prefix="/ui", route_class=PageRoute, include_in_schema=False)

FAILED_SHOWN = 100


@router.get("/failures")
async def failures_page(
    request: Request, viewer: SignedIn, type: str = "", error: str = ""
) -> Response:
    """Failed tasks grouped by type and error type; the latest of one group (or of all)."""
    viewer.principal.require(Permission.TASKS_READ)
    groups = await failures.failure_groups(viewer.db, org_id=viewer.org_id)
    rows = await failures.failed_tasks(
        viewer.db,
        org_id=viewer.org_id,
        type=type or None,
        error=error or None,
        limit=FAILED_SHOWN,
    )
    context = base_context(
        request,
        viewer,
        groups=groups,
        tasks=[wire(Task, row) for row in rows],
        filters={"type": type, "error": error},
        can_retry=viewer.can(Permission.TASKS_UPDATE),
        live=False,
        self_url=here(request),
    )
    return render(request, "failures.html", {}, context)


@router.post("/failures/retry")
async def retry_failures(request: Request, viewer: SignedIn) -> Response:
    """Retry the selected failed tasks, or every failed task of the filter (``all=1``)."""
    form = await action_form(request, viewer, Permission.TASKS_UPDATE)
    type, error = first(form, "type") or None, first(form, "error") or None
    if first(form, "all"):
        matching = retries.TaskFilter(status=TaskStatus.FAILED, type=type, error_type=error)
    else:
        selected = tuple(parse_id(ident) for ident in form.get("task_id", []))
        if not selected:
            raise Invalid("select at least one task to retry")
        matching = retries.TaskFilter(status=TaskStatus.FAILED, task_ids=selected)
    moved = await retries.retry_all(viewer.db, org_id=viewer.org_id, matching=matching)
    kept = urlencode({name: value for name, value in (("type", type), ("error", error)) if value})
    back = "/ui/failures" + (f"?{kept}" if kept else "")
    return flash.done(request, back, f"{len(moved)} task(s) queued again.")


@router.get("/workers")
async def workers_page(request: Request, viewer: SignedIn) -> Response:
    """Live workers: queues, task types, current task, last heartbeat."""
    viewer.principal.require(Permission.TASKS_READ)
    rows = await workers.list_workers(viewer.db, org_id=viewer.org_id)
    found = [wire(Worker, row) for row in rows]
    return _live_list(request, viewer, "workers", found)


@router.get("/queues")
async def queues_page(request: Request, viewer: SignedIn) -> Response:
    """Unfinished tasks per queue (from the database) and the live workers of each."""
    viewer.principal.require(Permission.TASKS_READ)
    depths = await workers.queue_depths(viewer.db, org_id=viewer.org_id)
    found = [wire(QueueDepth, depth) for depth in depths]
    return _live_list(request, viewer, "queues", found)


def _live_list(request: Request, viewer: Viewer, name: str, items: list[Any]) -> Response:
    """The page ``name`` (``workers``, ``queues``): its list, refreshed every 2 s."""
    context = base_context(request, viewer, live=True, self_url=here(request), **{name: items})
    return render(request, f"{name}.html", {name: f"_{name}_live.html"}, context)
