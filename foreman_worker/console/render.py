"""How ``foreman`` shows things: tables, task trees, durations, ages and JSON."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text
from rich.tree import Tree

from foreman_api.schemas import Attempt, Run, Task, Worker

STATUS_STYLE: dict[str, tuple[str, str]] = {
    # status: (symbol, colour); the symbol tells the status apart without colour
    "pending": ("·", "dim"),
    "queued": ("○", "cyan"),
    "running": ("▶", "blue"),
    "retrying": ("↻", "yellow"),
    "completed": ("✓", "green"),
    "failed": ("✗", "red"),
    "cancelled": ("⊘", "magenta"),
}


def status_text(status: str) -> Text:
    symbol, style = STATUS_STYLE.get(status, ("?", ""))
    return Text(f"{symbol} {status}", style=style)


def duration(ms: int | None) -> str:
    """``850 ms``, ``12.3 s``, ``4m 05s``, ``2h 03m``; ``-`` when unknown."""
    if ms is None:
        return "-"
    if ms < 1000:
        return f"{ms} ms"
    seconds = ms / 1000
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m {secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m"


def age(moment: datetime | None, now: datetime | None = None) -> str:
    """How long ago: ``12s ago``, ``5m ago``, ``3h ago``, ``2d ago``."""
    if moment is None:
        return "-"
    seconds = max(0, int(((now or datetime.now(UTC)) - moment).total_seconds()))
    for unit, size in (("d", 86_400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit} ago"
    return f"{seconds}s ago"


def elapsed_ms(start: datetime | None, end: datetime | None) -> int | None:
    """Milliseconds from ``start`` to ``end`` (or now, for something still going)."""
    if start is None:
        return None
    return int(((end or datetime.now(UTC)) - start).total_seconds() * 1000)


def short(ident: object) -> str:
    return str(ident)[:8]


def settled(run: Run) -> int:
    """Tasks of the run that finished: completed, failed or cancelled."""
    return run.completed_tasks + run.failed_tasks + run.cancelled_tasks


def to_json(value: BaseModel | Sequence[BaseModel] | dict[str, Any]) -> str:
    """The API's own JSON (camelCase), for scripts."""

    def plain(item: Any) -> Any:
        if isinstance(item, BaseModel):
            return item.model_dump(mode="json", by_alias=True)
        if isinstance(item, dict):
            return {k: plain(v) for k, v in item.items()}
        if isinstance(item, list | tuple):
            return [plain(v) for v in item]
        return item

    return json.dumps(plain(value), indent=2)


def runs_table(runs: Iterable[Run]) -> Table:
    table = Table(box=None, header_style="bold")
    table.add_column("RUN", no_wrap=True)
    for column in ("STATUS", "PROGRESS", "FAILED", "CREATED", "DURATION"):
        table.add_column(column, justify="right" if column in ("PROGRESS", "FAILED") else "left")
    for run in runs:
        table.add_row(
            str(run.id),
            status_text(run.status),
            f"{settled(run)}/{run.total_tasks}",
            str(run.failed_tasks),
            age(run.created_at),
            duration(run.duration_ms or elapsed_ms(run.started_at, run.completed_at)),
        )
    return table


def tasks_table(tasks: Iterable[Task]) -> Table:
    table = Table(box=None, header_style="bold")
    table.add_column("TASK", no_wrap=True)
    for column in ("TYPE", "STATUS", "ATTEMPTS", "RUN", "CREATED", "DURATION"):
        table.add_column(column)
    for task in tasks:
        table.add_row(
            str(task.id),
            task.type,
            status_text(task.status),
            str(task.attempt_count),
            short(task.run_id),
            age(task.created_at),
            duration(task_duration(task)),
        )
    return table


def task_duration(task: Task) -> int | None:
    """Its duration when finished, the time so far while running, else unknown."""
    if task.status == "running":
        return elapsed_ms(task.started_at, None)
    return task.duration_ms


def task_label(task: Task) -> Text:
    label = Text()
    label.append_text(status_text(task.status))
    label.append(f"  {task.type}", style="bold")
    label.append(f"  {duration(task_duration(task))}")
    label.append(f"  attempts {task.attempt_count}", style="dim")
    label.append(f"  {short(task.id)}", style="dim")
    if task.status == "failed" and isinstance(task.error_data, dict):
        label.append(
            f"  {task.error_data.get('type', 'Error')}: {task.error_data.get('message', '')}",
            style="red",
        )
    return label


def task_tree(title: Text | str, tasks: Sequence[Task]) -> Tree:
    """The run's tasks nested under their parents, oldest first at each level."""
    tree = Tree(title)
    ids = {task.id for task in tasks}
    children: dict[Any, list[Task]] = {}
    for task in sorted(tasks, key=lambda t: (t.created_at, str(t.id))):
        parent = task.parent_task_id if task.parent_task_id in ids else None
        children.setdefault(parent, []).append(task)

    def grow(node: Tree, parent: Any) -> None:
        for task in children.get(parent, []):
            grow(node.add(task_label(task)), task.id)

    grow(tree, None)
    return tree


def run_header(run: Run) -> Text:
    text = Text()
    text.append(f"run {run.id}  ", style="bold")
    text.append_text(status_text(run.status))
    text.append(
        f"  {settled(run)}/{run.total_tasks} settled, {run.failed_tasks} failed"
        f"  created {age(run.created_at)}"
        f"  duration {duration(run.duration_ms or elapsed_ms(run.started_at, run.completed_at))}"
    )
    return text


def progress(run: Run) -> Table:
    """A progress bar of settled tasks, and the count."""
    line = Table.grid(padding=(0, 2))
    bar = ProgressBar(total=max(run.total_tasks, 1), completed=settled(run), width=40)
    line.add_row(bar, Text(f"{settled(run)}/{run.total_tasks} tasks settled"))
    return line


def attempts_table(attempts: Iterable[Attempt]) -> Table:
    table = Table(box=None, header_style="bold")
    for column in ("#", "OUTCOME", "WORKER", "JOB", "STARTED", "DURATION", "ERROR"):
        table.add_column(column)
    for attempt in attempts:
        error = attempt.error if isinstance(attempt.error, dict) else {}
        table.add_row(
            str(attempt.number),
            status_text(attempt.outcome),
            attempt.worker_id or "-",
            short(attempt.queue_job_id or "-"),
            age(attempt.started_at),
            duration(attempt.duration_ms or elapsed_ms(attempt.started_at, attempt.finished_at)),
            f"{error.get('type')}: {error.get('message')}" if error else "",
        )
    return table


def workers_table(workers: Iterable[Worker]) -> Table:
    table = Table(box=None, header_style="bold")
    for column in ("WORKER", "HOST", "PID", "QUEUES", "TYPES", "CURRENT TASK", "LAST SEEN"):
        table.add_column(column)
    for worker in workers:
        table.add_row(
            worker.id,
            worker.hostname or "-",
            str(worker.pid or "-"),
            ", ".join(worker.queues),
            ", ".join(handler.type for handler in worker.handlers),
            str(worker.current_task_id or "-"),
            age(worker.last_seen_at),
        )
    return table
