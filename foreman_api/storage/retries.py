"""Retry and replay: ``failed`` and ``cancelled`` tasks back to ``queued``.

A retried task runs again from scratch: ``queued`` with a fresh retry budget
(``retryCount`` 0), no output, error, lease or end time; its attempt history is kept and
its next claim is the next attempt. A replay is a retry with new ``inputData``.

**Counters stay true.** A retried task leaves its run's ``failedTasks`` or
``cancelledTasks``, and a run that had finished is reopened: ``running`` again, without its
end time and duration, until its tasks finish again.

**Lock order.** The runs of the tasks to move are locked first (in id order), then the
tasks move: the order every other writer of runs and tasks follows
(:mod:`foreman_api.storage.task_updates`), so a retry never deadlocks with a completion or
a run cancel. Each task moves by compare-and-set on its status, so a task that finished or
was retried by someone else meanwhile is left alone, and repeating a retry moves nothing
more: retries are idempotent.

The API does not enqueue: a retried task is ``queued`` in the database, and
``foreman-worker``'s reconciler puts it on its queue; the SDK's :func:`foreman_worker.resubmit`
also enqueues at once.
"""

from __future__ import annotations

import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from foreman_api.clock import utcnow
from foreman_api.db import Database, Session
from foreman_api.db.base import Row
from foreman_api.domain.errors import Conflict
from foreman_api.domain.states import INVALID_TRANSITION
from foreman_api.metrics import instruments
from foreman_api.schemas import TERMINAL_RUN_STATUSES, TaskStatus
from foreman_api.storage.runs import reopened
from foreman_api.storage.tables import runs, tasks
from foreman_api.storage.tasks import get_task

RETRYABLE = (TaskStatus.FAILED.value, TaskStatus.CANCELLED.value)
"""The statuses a retry moves from."""
UNSET: Any = object()
"""No new input: a retry, not a replay."""


@dataclass(frozen=True)
class TaskFilter:
    """Which tasks of an organisation a bulk retry moves (all conditions hold)."""

    task_id: uuid.UUID | None = None
    run_id: uuid.UUID | None = None
    type: str | None = None
    status: TaskStatus | None = None
    """``failed`` or ``cancelled``; None for both."""
    created_after: datetime | None = None
    created_before: datetime | None = None
    error_type: str | None = None
    """``errorData.type`` (the dashboard's failure groups)."""
    task_ids: tuple[uuid.UUID, ...] | None = None
    """Only these tasks (a selection)."""

    def where(self, org_id: str) -> list[sa.ColumnElement[bool]]:
        statuses = [self.status.value] if self.status is not None else list(RETRYABLE)
        where = [tasks.c.org_id == org_id, tasks.c.status.in_(statuses)]
        if self.task_id is not None:
            where.append(tasks.c.id == self.task_id)
        if self.run_id is not None:
            where.append(tasks.c.run_id == self.run_id)
        if self.type is not None:
            where.append(tasks.c.type == self.type)
        if self.created_after is not None:
            where.append(tasks.c.created_at >= self.created_after)
        if self.created_before is not None:
            where.append(tasks.c.created_at < self.created_before)
        if self.error_type is not None:
            where.append(error_type(tasks) == self.error_type)
        if self.task_ids is not None:
            where.append(tasks.c.id.in_(self.task_ids))
        return where


def error_type(table: sa.FromClause) -> sa.ColumnElement[str]:
    """A task's ``errorData.type`` as text (NULL without one)."""
    text: sa.ColumnElement[str] = table.c.error_data["type"].as_string()
    return text


async def retry_tasks(
    db: Database,
    *,
    org_id: str,
    matching: TaskFilter,
    limit: int,
    input_data: Any = UNSET,
) -> list[Row]:
    """Move up to ``limit`` of the organisation's tasks ``matching`` (oldest first) back to
    ``queued``; return them as they are now. ``input_data``, if given, replaces each
    one's input (a replay)."""
    now = utcnow()
    async with db.transaction(write=True) as tx:
        candidates = await tx.all(
            sa.select(tasks.c.id, tasks.c.run_id)
            .where(*matching.where(org_id))
            .order_by(tasks.c.created_at, tasks.c.id)
            .limit(limit)
        )
        if not candidates:
            return []
        run_ids = sorted({row["run_id"] for row in candidates})
        await tx.all(
            sa.select(runs.c.id)
            .where(runs.c.id.in_(run_ids), runs.c.org_id == org_id)
            .order_by(runs.c.id)
            .with_for_update(key_share=True)
        )
        ids = [row["id"] for row in candidates]
        moved: list[Row] = []
        per_run: dict[str, Counter[uuid.UUID]] = {}
        for status in RETRYABLE:
            rows = await tx.all(_move_statement(ids, status, now, input_data))
            per_run[status] = Counter(row["run_id"] for row in rows)
            moved.extend(rows)
        for run_id in sorted({row["run_id"] for row in moved}):
            failed = per_run[TaskStatus.FAILED.value][run_id]
            cancelled = per_run[TaskStatus.CANCELLED.value][run_id]
            await _reopen(tx, run_id=run_id, failed=failed, cancelled=cancelled, now=now)
    instruments.tasks_retried(moved)
    return sorted(moved, key=lambda row: (row["created_at"], row["id"]))


async def retry_all(
    db: Database, *, org_id: str, matching: TaskFilter, batch: int = 1000
) -> list[Row]:
    """Every task ``matching``, moved as :func:`retry_tasks` moves them, ``batch`` per
    transaction, until none is left."""
    moved: list[Row] = []
    while True:
        rows = await retry_tasks(db, org_id=org_id, matching=matching, limit=batch)
        moved.extend(rows)
        if len(rows) < batch:
            return moved


async def retry_task(
    db: Database, *, org_id: str, task_id: uuid.UUID, input_data: Any = UNSET
) -> Row:
    """Retry (or, with ``input_data``, replay) one task; the task as it is now.

    A task that is already unfinished again comes back unchanged (repeating a retry is
    harmless); a ``completed`` task, or a replay with other input of an unfinished one, is
    ``409 invalid_transition``; another organisation's task is ``404``."""
    moved = await retry_tasks(
        db, org_id=org_id, matching=TaskFilter(task_id=task_id), limit=1, input_data=input_data
    )
    if moved:
        return moved[0]
    row = await get_task(db, org_id=org_id, task_id=task_id)
    state = TaskStatus(row["status"])
    replay = input_data is not UNSET
    if state is TaskStatus.COMPLETED or (replay and row["input_data"] != input_data):
        raise Conflict(
            f"task {task_id} is {state}: only a failed or cancelled task can be "
            "retried or replayed",
            code=INVALID_TRANSITION,
        )
    return row


def _move_statement(ids: list[uuid.UUID], status: str, now: datetime, input_data: Any) -> sa.Update:
    values: dict[str, Any] = {
        "status": TaskStatus.QUEUED.value,
        "retry_count": 0,
        "retry_at": None,
        "lease_expires_at": None,
        "output_data": None,
        "error_data": None,
        "completed_at": None,
        "duration_ms": None,
        "queued_at": now,
        "updated_at": now,
    }
    if input_data is not UNSET:
        values["input_data"] = input_data
    return (
        tasks.update()
        .where(tasks.c.id.in_(ids), tasks.c.status == status)
        .values(values)
        .returning(tasks)
    )


async def _reopen(
    session: Session, *, run_id: uuid.UUID, failed: int, cancelled: int, now: Any
) -> None:
    """Take the moved tasks out of the run's ``failedTasks`` and ``cancelledTasks``; a
    finished run runs again (its end time and duration cleared)."""
    finished = runs.c.status.in_([s.value for s in TERMINAL_RUN_STATUSES])
    await session.run(
        runs.update()
        .where(runs.c.id == run_id)
        .values(
            failed_tasks=runs.c.failed_tasks - failed,
            cancelled_tasks=runs.c.cancelled_tasks - cancelled,
            started_at=sa.func.coalesce(runs.c.started_at, now),
            updated_at=now,
            **reopened(finished),
        )
    )
