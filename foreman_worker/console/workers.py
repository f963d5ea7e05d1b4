"""``foreman workers ls`` and ``foreman queues``."""

from __future__ import annotations

import typer
from rich.table import Table

from foreman_worker.console import render
from foreman_worker.console.common import JsonOption, client, out, unwrap

app = typer.Typer(help="Workers: the live ones.", no_args_is_help=True)


@app.command("ls")
def list_workers(json: JsonOption = False) -> None:
    """Live workers: host, pid, queues, task types and the task each is running."""
    with client() as api:
        workers = unwrap(api.list_workers()).data
    if json:
        out.print_json(render.to_json(workers))
        return
    out.print(render.workers_table(workers) if workers else "no live workers")


def queues(json: JsonOption = False) -> None:
    """Queue depths: unfinished tasks per queue (queued, retrying, running) and live workers."""
    with client() as api:
        depths = unwrap(api.list_queues()).data
    if json:
        out.print_json(render.to_json(depths))
        return
    table = Table(box=None, header_style="bold")
    for column in ("QUEUE", "QUEUED", "RETRYING", "RUNNING", "WORKERS"):
        table.add_column(column, justify="left" if column == "QUEUE" else "right")
    for depth in depths:
        table.add_row(
            depth.queue,
            *(str(n) for n in (depth.queued, depth.retrying, depth.running, depth.workers)),
        )
    out.print(table if depths else "no queue has unfinished tasks or live workers")
