"""Attempt history: one ``task_attempts`` row per attempt of a task.

A claim (a move to ``running``) adds one to ``tasks.attempt_count`` and opens attempt
number ``attempt_count``: its worker, queue job and start. The move that ends it (to
``completed``, ``failed``, ``retrying``, ``cancelled`` — by the worker, the reconciler
recovering a lost worker, or a cancel) closes it: end, duration, outcome (the status moved
to) and the ``errorData`` that move wrote. A move of a task with no open attempt (a
``queued`` task cancelled) touches no attempt.

On PostgreSQL the attempt step rides in the task's own ``UPDATE`` (a data-modifying CTE):
no statement is added to a claim or a completion. SQLite runs it as a second statement in
the same transaction.
"""

from __future__ import annotations

import uuid
from functools import lru_cache
from typing import Any

import sqlalchemy as sa

from foreman_api.db import Session
from foreman_api.db.base import Row
from foreman_api.schemas import TaskStatus
from foreman_api.storage.rows import elapsed_ms_sql
from foreman_api.storage.tables import task_attempts, tasks
from foreman_api.storage.types import TIMESTAMP_TYPE

_NOW = sa.bindparam("p_now", type_=TIMESTAMP_TYPE)
_WORKER_ID = sa.bindparam("p_worker_id", type_=task_attempts.c.worker_id.type)
_ERROR = sa.bindparam("v_error_data", type_=task_attempts.c.error.type)
RUNNING = TaskStatus.RUNNING.value


def _step(moved: Any, target: TaskStatus, *, error: bool, dialect: str) -> Any:
    """The attempt's INSERT (a claim) or UPDATE (any other move) from the moved task row.

    ``moved`` is the task as the move left it: the CTE of the move on PostgreSQL, the
    task row itself on SQLite (read after the move, in the same transaction).
    """
    if target is TaskStatus.RUNNING:
        opened = sa.select(
            moved.c.id,
            moved.c.attempt_count,
            moved.c.org_id,
            moved.c.run_id,
            _WORKER_ID,
            moved.c.queue_job_id,
            _NOW,
            sa.literal(RUNNING),
        )
        if moved is tasks:
            opened = opened.where(tasks.c.id == sa.bindparam("p_task_id"))
        columns = [
            "task_id",
            "number",
            "org_id",
            "run_id",
            "worker_id",
            "queue_job_id",
            "started_at",
            "outcome",
        ]
        return task_attempts.insert().from_select(columns, opened)
    closed = task_attempts.update().where(
        task_attempts.c.task_id == moved.c.id,
        task_attempts.c.number == moved.c.attempt_count,
        task_attempts.c.finished_at.is_(None),
    )
    if moved is tasks:
        closed = closed.where(tasks.c.id == sa.bindparam("p_task_id"))
    return closed.values(
        finished_at=_NOW,
        duration_ms=elapsed_ms_sql(dialect, start=task_attempts.c.started_at, end=_NOW),
        outcome=moved.c.status,
        error=_ERROR if error else None,
    )


def step(moved: Any, target: TaskStatus, *, error: bool) -> Any:
    """PostgreSQL: the attempt step as a CTE of the move's statement (``moved`` is the
    move's own CTE). ``error``: the move writes ``v_error_data``, which the closed attempt
    keeps."""
    return _step(moved, target, error=error, dialect="postgresql").cte("attempt")


@lru_cache(maxsize=32)
def _step_after(target: TaskStatus, error: bool, dialect: str) -> Any:
    return _step(tasks, target, error=error, dialect=dialect)


async def record_after_move(
    session: Session, target: TaskStatus, params: dict[str, Any], *, error: bool
) -> None:
    """SQLite: the attempt step of a move that already ran in this transaction."""
    params = {"p_worker_id": None, "v_error_data": None, **params}
    await session.run(_step_after(target, error, session.dialect), params)


@lru_cache(maxsize=4)
def _close_run_statement(dialect: str) -> sa.Update:
    return (
        task_attempts.update()
        .where(
            task_attempts.c.run_id == sa.bindparam("p_run_id"),
            task_attempts.c.org_id == sa.bindparam("p_org_id"),
            task_attempts.c.finished_at.is_(None),
        )
        .values(
            finished_at=_NOW,
            duration_ms=elapsed_ms_sql(dialect, start=task_attempts.c.started_at, end=_NOW),
            outcome=TaskStatus.CANCELLED.value,
        )
    )


async def close_run_attempts(session: Session, *, org_id: str, run_id: uuid.UUID, now: Any) -> int:
    """Close every open attempt of the run as ``cancelled`` (the run was cancelled)."""
    params = {"p_run_id": run_id, "p_org_id": org_id, "p_now": now}
    return await session.run(_close_run_statement(session.dialect), params)


_LIST = (
    sa.select(task_attempts)
    .where(task_attempts.c.task_id == sa.bindparam("p_task_id"))
    .where(task_attempts.c.org_id == sa.bindparam("p_org_id"))
    .order_by(task_attempts.c.number)
)


async def list_attempts(session: Session, *, org_id: str, task_id: uuid.UUID) -> list[Row]:
    """The task's attempts, first to last."""
    return await session.all(_LIST, {"p_task_id": task_id, "p_org_id": org_id})
