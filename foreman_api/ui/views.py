"""What pages show, built from storage rows: the task tree, the timeline, page links.

Pure functions over wire models (:mod:`foreman_api.schemas`), so the pages and their tests
share them.
"""

from __future__ import annotations

import functools
import typing
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar
from urllib.parse import urlencode

from pydantic import BaseModel

from foreman_api.clock import as_utc, utcnow
from foreman_api.domain.errors import NotFound
from foreman_api.schemas import TERMINAL_RUN_STATUSES, TERMINAL_TASK_STATUSES, Run, Task

MAX_DEPTH_CLASS = 12
"""Deeper tasks are indented as much as this depth (``d0`` … ``d12`` in the stylesheet)."""


M = TypeVar("M", bound=BaseModel)


def wire(model: type[M], row: Mapping[str, Any]) -> M:
    """A storage row as its wire model, with its times in UTC (SQLite's come back naive)."""
    values = dict(row)
    for name in _time_fields(model):
        value = values.get(name)
        if value is not None and value.tzinfo is None:
            values[name] = value.replace(tzinfo=UTC)
    return model.model_validate(values)


@functools.cache
def _time_fields(model: type[BaseModel]) -> tuple[str, ...]:
    """The fields of ``model`` that hold a timestamp."""
    return tuple(
        name for name, field in model.model_fields.items() if _holds_time(field.annotation)
    )


def _holds_time(annotation: Any) -> bool:
    """``datetime``, also inside ``Annotated[...]`` or a union with None."""
    return annotation is datetime or any(_holds_time(arg) for arg in typing.get_args(annotation))


def parse_id(text: str) -> uuid.UUID:
    """An id from an address; anything that is not a UUID is simply not found."""
    try:
        return uuid.UUID(text)
    except ValueError:
        raise NotFound(f"{text!r} is not an id") from None


def run_live(run: Run) -> bool:
    """Whether the run may still change by itself (its page keeps polling)."""
    return run.status not in TERMINAL_RUN_STATUSES


def task_live(task: Task) -> bool:
    return task.status not in TERMINAL_TASK_STATUSES


@dataclass(frozen=True, slots=True)
class TreeRow:
    """A task in the tree, depth first: its depth (indentation) and its children count."""

    task: Task
    depth: int
    children: int

    @property
    def indent(self) -> str:
        return f"d{min(self.depth, MAX_DEPTH_CLASS)}"


def task_tree(tasks: Sequence[Task]) -> list[TreeRow]:
    """The tasks in tree order (each parent before its children, siblings by creation).

    A task whose parent is not among ``tasks`` (a page of a larger run) is a root."""
    present = {task.id for task in tasks}
    children: dict[uuid.UUID | None, list[Task]] = {}
    for task in tasks:
        parent = task.parent_task_id if task.parent_task_id in present else None
        children.setdefault(parent, []).append(task)
    rows: list[TreeRow] = []
    stack = [(task, 0) for task in reversed(children.get(None, []))]
    while stack:
        task, depth = stack.pop()
        kids = children.get(task.id, [])
        rows.append(TreeRow(task=task, depth=depth, children=len(kids)))
        stack.extend((kid, depth + 1) for kid in reversed(kids))
    return rows


@dataclass(frozen=True, slots=True)
class Bar:
    """A task on the timeline: where it waited and where it ran, in per mille of the span."""

    task: Task
    wait_x: float
    wait_width: float
    run_x: float
    run_width: float


def timeline(rows: Sequence[TreeRow], now: datetime | None = None) -> list[Bar]:
    """Each task's queued → started → ended as bars on the run's common time axis."""
    now = now or utcnow()
    spans = []
    for row in rows:
        task = row.task
        start = as_utc(task.queued_at or task.created_at)
        began = as_utc(task.started_at) if task.started_at else None
        end = as_utc(task.completed_at) if task.completed_at else (now if began else None)
        spans.append((task, start, began, end))
    if not spans:
        return []
    first = min(start for _, start, _, _ in spans)
    last = max(max(start, began or start, end or now) for _, start, began, end in spans)
    total = max((last - first).total_seconds(), 0.001)

    def at(moment: datetime) -> float:
        return round((moment - first).total_seconds() / total * 1000, 1)

    bars = []
    for task, start, began, end in spans:
        waited_until = began or end or now
        wait_x, run_x = at(start), at(began) if began else at(waited_until)
        run_end = at(end) if (began and end) else run_x
        bars.append(
            Bar(
                task=task,
                wait_x=wait_x,
                wait_width=max(run_x - wait_x, 0.0),
                run_x=run_x,
                run_width=max(run_end - run_x, 2.0 if began else 0.0),
            )
        )
    return bars


@dataclass(frozen=True, slots=True)
class Pager:
    """Page links that keep the current filters."""

    page: int
    size: int
    total: int
    filters: Mapping[str, Any]

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.size))

    @property
    def first_row(self) -> int:
        return min((self.page - 1) * self.size + 1, self.total)

    @property
    def last_row(self) -> int:
        return min(self.page * self.size, self.total)

    def link(self, page: int) -> str:
        """The address of ``page`` with the same filters."""
        query = {name: value for name, value in self.filters.items() if value}
        if page > 1:
            query["page"] = page
        return "?" + urlencode(query) if query else "?"
