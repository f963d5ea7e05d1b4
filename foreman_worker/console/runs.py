"""``foreman runs``: ls, show, watch, cancel, retry."""

from __future__ import annotations

import time
from typing import Annotated

import typer
from rich.console import Group
from rich.live import Live
from rich.text import Text

from foreman_api.schemas import TERMINAL_RUN_STATUSES, Run, RunStatus, Task
from foreman_worker.client import ForemanClient
from foreman_worker.console import render
from foreman_worker.console.common import (
    EXIT_RUN_FAILED,
    JsonOption,
    client,
    out,
    show_page,
    unwrap,
    uuid_arg,
)
from foreman_worker.console.tasks import enqueue_retried

app = typer.Typer(help="Runs: list, show, watch live, cancel, retry.", no_args_is_help=True)

RunId = Annotated[str, typer.Argument(help="The run's id.", parser=uuid_arg)]
PAGE = 1000


def all_tasks(api: ForemanClient, run_id: str) -> list[Task]:
    """Every task of the run, oldest first."""
    found: list[Task] = []
    while True:
        page = unwrap(
            api.list_tasks(
                run_id=run_id, limit=PAGE, offset=len(found), sort_by="createdAt", sort_order="asc"
            )
        )
        found.extend(page.data)
        if len(page.data) < PAGE:
            return found


def data_keys(api: ForemanClient, run_id: str) -> list[str]:
    page = unwrap(api.query_run_data(run_id, limit=1000, sort_by="key", sort_order="asc"))
    return [entry.key for entry in page.data]


@app.command("ls")
def list_runs(
    status: Annotated[RunStatus | None, typer.Option(help="Only runs in this status.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="How many, newest first.")] = 20,
    json: JsonOption = False,
) -> None:
    """The newest runs: status, progress (settled/total), failures, age, duration."""
    with client() as api:
        page = unwrap(api.list_runs(status=status, limit=limit))
    show_page(page, render.runs_table, json)


def _view(run: Run, tasks: list[Task], keys: list[str] | None = None) -> Group:
    parts: list[object] = [render.task_tree(render.run_header(run), tasks)]
    if keys is not None:
        parts.append(Text(f"run data keys: {', '.join(keys) if keys else '-'}", style="dim"))
    return Group(*parts)  # type: ignore[arg-type]


@app.command("show")
def show_run(run_id: RunId, json: JsonOption = False) -> None:
    """A run, its task tree (status, duration, attempts) and its run data keys."""
    with client() as api:
        run = unwrap(api.get_run(run_id))
        tasks = all_tasks(api, run_id)
        keys = data_keys(api, run_id)
    if json:
        out.print_json(render.to_json({"run": run, "tasks": tasks, "dataKeys": keys}))
        return
    out.print(_view(run, tasks, keys))


@app.command("watch")
def watch_run(
    run_id: RunId,
    interval: Annotated[float, typer.Option(min=0.2, help="Seconds between refreshes.")] = 1.0,
    timeout: Annotated[
        float | None, typer.Option(help="Give up after this many seconds (exit 4).")
    ] = None,
    json: JsonOption = False,
) -> None:
    """Follow a run live until it finishes: a progress bar and its task tree, updated in
    place. Exits 0 when it completes, 1 when it fails or is cancelled."""
    deadline = None if timeout is None else time.monotonic() + timeout
    with client() as api:
        run = unwrap(api.get_run(run_id))
        tasks = all_tasks(api, run_id)
        if json:
            while run.status not in TERMINAL_RUN_STATUSES and not _past(deadline):
                time.sleep(interval)
                run = unwrap(api.get_run(run_id))
            tasks = all_tasks(api, run_id)
            out.print_json(render.to_json({"run": run, "tasks": tasks}))
        else:
            with Live(_live(run, tasks), console=out, auto_refresh=False) as live:
                while run.status not in TERMINAL_RUN_STATUSES and not _past(deadline):
                    time.sleep(interval)
                    run = unwrap(api.get_run(run_id))
                    tasks = all_tasks(api, run_id)
                    live.update(_live(run, tasks), refresh=True)
            out.print()
    if run.status not in TERMINAL_RUN_STATUSES:
        out.print(f"run {run_id} is still {run.status} after {timeout:g}s", style="yellow")
        raise typer.Exit(4)
    if run.status != RunStatus.COMPLETED:
        raise typer.Exit(EXIT_RUN_FAILED)


def _past(deadline: float | None) -> bool:
    return deadline is not None and time.monotonic() > deadline


def _live(run: Run, tasks: list[Task]) -> Group:
    return Group(render.progress(run), _view(run, tasks))


@app.command("cancel")
def cancel_run(run_id: RunId, json: JsonOption = False) -> None:
    """Cancel a run and every unfinished task of it."""
    with client() as api:
        run = unwrap(api.update_run(run_id, status=RunStatus.CANCELLED))
    if json:
        out.print_json(render.to_json(run))
        return
    out.print(render.run_header(run))


@app.command("retry")
def retry_run(run_id: RunId, json: JsonOption = False) -> None:
    """Retry every failed or cancelled task of a run (the run reopens)."""
    with client() as api:
        retried = unwrap(api.retry_run(run_id))
        note = enqueue_retried(api, retried.task_ids)
    if json:
        out.print_json(render.to_json(retried))
        return
    out.print(f"{retried.moved} task(s) of run {run_id} queued again{note}")
