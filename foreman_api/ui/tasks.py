"""A task's page (``/ui/tasks/{id}``): input, output, error with traceback, every
attempt, parent and children; actions retry and replay (with edited input)."""

from __future__ import annotations

import json

from fastapi import APIRouter
from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import Response

from foreman_api.domain.errors import Invalid
from foreman_api.errors import invalid_request
from foreman_api.schemas import Attempt, Permission, Task, TaskRetry
from foreman_api.storage import attempts, retries
from foreman_api.storage import tasks as task_storage
from foreman_api.ui import flash
from foreman_api.ui.render import PageRoute, base_context, here, render
from foreman_api.ui.session import SignedIn, action_form, first
from foreman_api.ui.views import parse_id, task_live, wire

router = APIRouter(prefix="/ui", route_class=PageRoute, include_in_schema=False)

CHILDREN_SHOWN = 200


@router.get("/tasks/{task_id}")
async def task_page(request: Request, viewer: SignedIn, task_id: str) -> Response:
    """Everything about one task."""
    viewer.principal.require(Permission.TASKS_READ)
    ident = parse_id(task_id)
    task = wire(Task, await task_storage.get_task(viewer.db, org_id=viewer.org_id, task_id=ident))
    parent = None
    if task.parent_task_id is not None:
        parent_row = await task_storage.get_task(
            viewer.db, org_id=viewer.org_id, task_id=task.parent_task_id
        )
        parent = wire(Task, parent_row)
    children = await task_storage.list_tasks(
        viewer.db, org_id=viewer.org_id, parent_task_id=task.id, limit=CHILDREN_SHOWN
    )
    tried = await attempts.list_attempts(viewer.db, org_id=viewer.org_id, task_id=task.id)
    context = base_context(
        request,
        viewer,
        task=task,
        parent=parent,
        children=[wire(Task, row) for row in children.rows],
        child_total=children.total,
        attempts=[wire(Attempt, row) for row in tried],
        input_json=json.dumps(task.input_data, indent=2, ensure_ascii=False),
        live=task_live(task),
        self_url=here(request),
        can_retry=viewer.can(Permission.TASKS_UPDATE),
    )
    return render(request, "task.html", {"task-live": "_task_live.html"}, context)


@router.post("/tasks/{task_id}/retry")
async def retry_task(request: Request, viewer: SignedIn, task_id: str) -> Response:
    """Retry the task, or replay it with the input the form carries (``replay=1``)."""
    form = await action_form(request, viewer, Permission.TASKS_UPDATE)
    ident = parse_id(task_id)
    input_data = retries.UNSET
    if first(form, "replay"):
        try:
            parsed = json.loads(first(form, "input_json"))
            input_data = TaskRetry.model_validate({"inputData": parsed}).input_data
        except ValidationError as exc:  # a ValueError too: first
            raise invalid_request(exc.errors(include_url=False)) from None
        except ValueError as exc:  # JSONDecodeError
            raise Invalid(f"the input is not valid JSON: {exc}") from None
    await retries.retry_task(viewer.db, org_id=viewer.org_id, task_id=ident, input_data=input_data)
    verb = "replayed with the new input" if input_data is not retries.UNSET else "queued again"
    return flash.done(request, f"/ui/tasks/{ident}", f"Task {verb}.")
