"""``foreman tasks``: ls, show, retry."""

from __future__ import annotations

import json as jsonlib
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from redis import RedisError
from rich.syntax import Syntax
from rich.text import Text

from foreman_api.schemas import Retried, Task, TaskStatus
from foreman_worker.client import ForemanClient
from foreman_worker.console import render
from foreman_worker.console.common import (
    JsonOption,
    client,
    err,
    out,
    show_page,
    unwrap,
    uuid_arg,
)
from foreman_worker.errors import ForemanError

app = typer.Typer(help="Tasks: list, show (with every attempt), retry.", no_args_is_help=True)

ENQUEUE_AT_ONCE = 200
"""Retried tasks put on their queues by ``foreman`` itself; more are left to the reconciler."""


@app.command("ls")
def list_tasks(
    run: Annotated[str | None, typer.Option("--run", help="Only this run's tasks.")] = None,
    status: Annotated[TaskStatus | None, typer.Option(help="Only tasks in this status.")] = None,
    type: Annotated[str | None, typer.Option("--type", help="Only tasks of this type.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="How many, newest first.")] = 20,
    json: JsonOption = False,
) -> None:
    """The newest tasks: type, status, attempts, run, age, duration."""
    run_id = uuid_arg(run) if run is not None else None
    with client() as api:
        page = unwrap(api.list_tasks(run_id=run_id, status=status, type=type, limit=limit))
    show_page(page, render.tasks_table, json)


@app.command("show")
def show_task(
    task_id: Annotated[str, typer.Argument(help="The task's id.", parser=uuid_arg)],
    json: JsonOption = False,
) -> None:
    """A task: input, output, error with its traceback, and every attempt."""
    with client() as api:
        task = unwrap(api.get_task(task_id))
        attempts = unwrap(api.list_attempts(task_id)).data
    if json:
        out.print_json(render.to_json({"task": task, "attempts": attempts}))
        return
    header = Text(f"task {task.id}  ", style="bold")
    header.append_text(render.status_text(task.status))
    header.append(
        f"  {task.type}  run {task.run_id}  queue {task.queue}"
        f"  retries {task.retry_count}/{task.max_retries}"
    )
    out.print(header)
    if task.parent_task_id is not None:
        out.print(f"parent {task.parent_task_id}")
    for label, value in (("input", task.input_data), ("output", task.output_data)):
        out.print(Text(f"{label}:", style="bold"))
        out.print(Syntax(jsonlib.dumps(value, indent=2), "json", background_color="default"))
    if isinstance(task.error_data, dict):
        error = task.error_data
        out.print(Text(f"error: {error.get('type')}: {error.get('message')}", style="bold red"))
        errors = error.get("errors")  # InvalidInput/InvalidOutput: field by field
        for item in errors if isinstance(errors, list) else []:
            if isinstance(item, dict):
                where = f"{item['field']}: " if item.get("field") else ""
                out.print(f"  {where}{item.get('message')}", style="red", highlight=False)
        if error.get("traceback"):
            out.print(str(error["traceback"]).rstrip(), style="red", highlight=False)
    out.print(Text("attempts:", style="bold"))
    out.print(render.attempts_table(attempts) if attempts else "-")


@app.command("retry")
def retry_tasks(
    task_ids: Annotated[
        list[str] | None, typer.Argument(help="Tasks to retry (failed or cancelled).")
    ] = None,
    input: Annotated[
        str | None, typer.Option("--input", help="Replay with this input (JSON).")
    ] = None,
    run: Annotated[str | None, typer.Option("--run", help="Filter: this run.")] = None,
    type: Annotated[str | None, typer.Option("--type", help="Filter: this type.")] = None,
    status: Annotated[
        TaskStatus | None, typer.Option(help="Filter: failed or cancelled (default both).")
    ] = None,
    since: Annotated[
        datetime | None, typer.Option(help="Filter: created at or after (ISO time, UTC).")
    ] = None,
    until: Annotated[
        datetime | None, typer.Option(help="Filter: created before (ISO time, UTC).")
    ] = None,
    filter: Annotated[
        bool, typer.Option("--filter", help="Retry every task matching the filters.")
    ] = False,
    json: JsonOption = False,
) -> None:
    """Retry failed or cancelled tasks: the ids given, or with --filter every match.

    Each goes back to queued with a fresh retry budget, its attempts kept; a finished
    run reopens. With FOREMAN_REDIS_URL reachable they are enqueued at once.
    """
    ids = [uuid_arg(task_id) for task_id in task_ids or []]
    if bool(ids) == filter:
        raise typer.BadParameter("give task ids, or --filter with filter options, not both")
    if input is not None and not ids:
        raise typer.BadParameter("--input replays given task ids, not a filter")
    replay: dict[str, Any] = {} if input is None else {"input_data": _parse_input(input)}
    with client() as api:
        if ids:
            tasks = [unwrap(api.retry_task(i, **replay)) for i in ids]
            retried = Retried(moved=len(tasks), task_ids=[task.id for task in tasks])
            note = enqueue_retried(api, tasks)
        else:
            retried = unwrap(
                api.retry_tasks(
                    run_id=uuid_arg(run) if run else None,
                    type=type,
                    status=status,
                    created_after=_utc(since),
                    created_before=_utc(until),
                )
            )
            note = enqueue_retried(api, retried.task_ids)
    if json:
        out.print_json(render.to_json(retried))
        return
    out.print(f"{retried.moved} task(s) queued again{note}")


def _parse_input(text: str) -> Any:
    try:
        return jsonlib.loads(text)
    except ValueError as exc:
        raise typer.BadParameter(f"--input is not JSON: {exc}") from None


def _utc(moment: datetime | None) -> datetime | None:
    return moment if moment is None or moment.tzinfo else moment.replace(tzinfo=UTC)


def enqueue_retried(api: ForemanClient, retried: Sequence[Task | uuid.UUID]) -> str:
    """Put retried tasks on their queues now if Redis answers; a note for the user.

    A Task as the retry answered it is enqueued as it is (no second read), and only if it
    is queued (a repeated retry of a task already running is not queued again); an id is
    looked up first.
    """
    from foreman_worker.enqueue import enqueue

    if not retried:
        return ""
    if len(retried) > ENQUEUE_AT_ONCE:
        return "; foreman-worker's reconciler puts them on their queues"
    try:
        for item in retried:
            if not isinstance(item, Task) or item.status is TaskStatus.QUEUED:
                enqueue(item, client=api)
    except (RedisError, ForemanError) as exc:
        err.print(
            f"foreman: not enqueued ({exc}); foreman-worker's reconciler will", style="yellow"
        )
        return ""
    return " and enqueued"
