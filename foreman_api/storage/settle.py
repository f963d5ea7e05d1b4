"""Runs that finish by themselves: when the last unfinished task of a run settles.

A run created with ``auto_complete`` (the default) finishes when a task's move to a
finished status (``completed``, ``failed``, ``cancelled``) leaves none of its tasks
unfinished: ``failed`` if any task failed for good, else ``completed`` (``cancelled`` if
every task was cancelled), with its end time and duration, marked ``auto_completed``.

**Exactly one move is the last.** Every finishing move first locks the run row
(:func:`foreman_api.storage.task_updates.touch_run`), then runs the statement that moves
the task, which holds this step: a statement begun after the lock was granted, so it sees
every task move committed before (a check in the locking statement itself would read an
older snapshot under PostgreSQL's READ COMMITTED and could miss the last one). On
PostgreSQL the step rides in the move's statement (a data-modifying CTE); SQLite, whose
writers are serialised anyway, runs it as a statement of its own.

Tasks a handler spawns are created before the handler finishes, so they keep the run
open. A task created in a run that finished this way, or a retry of one of its tasks,
reopens it (:mod:`foreman_api.storage.tasks`, :mod:`foreman_api.storage.retries`).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import sqlalchemy as sa

from foreman_api.db import Session
from foreman_api.schemas import RunStatus, TaskStatus
from foreman_api.storage.rows import elapsed_ms_sql
from foreman_api.storage.tables import runs, tasks

_NOW = sa.bindparam("p_now", type_=runs.c.updated_at.type)
_UNFINISHED = [
    s.value
    for s in TaskStatus
    if s not in (TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED)
]


def _settle(moved: Any, dialect: str) -> sa.Update:
    """The run's UPDATE that finishes it if ``moved`` (the task just moved) was its last
    unfinished task; it matches nothing otherwise."""
    other = tasks.alias("other")
    others_unfinished = sa.exists().where(
        other.c.run_id == moved.c.run_id,
        other.c.status.in_(_UNFINISHED),
        other.c.id != moved.c.id,
    )
    statement = runs.update().where(
        runs.c.id == moved.c.run_id,
        runs.c.auto_complete,
        runs.c.status.in_([RunStatus.PENDING.value, RunStatus.RUNNING.value]),
        ~others_unfinished,
    )
    if moved is tasks:
        statement = statement.where(tasks.c.id == sa.bindparam("p_task_id"))
    finished_as = sa.case(
        (runs.c.failed_tasks > 0, RunStatus.FAILED.value),
        (runs.c.completed_tasks > 0, RunStatus.COMPLETED.value),
        else_=RunStatus.CANCELLED.value,
    )
    return statement.values(
        status=finished_as,
        completed_at=_NOW,
        duration_ms=elapsed_ms_sql(dialect, start=runs.c.started_at, end=_NOW),
        auto_completed=True,
        updated_at=_NOW,
    )


def step(moved: Any, dialect: str) -> Any:
    """PostgreSQL: the settling step as a CTE of the move's statement."""
    return _settle(moved, dialect).cte("settled")


@lru_cache(maxsize=4)
def _settle_after(dialect: str) -> sa.Update:
    return _settle(tasks, dialect)


async def settle_after_move(session: Session, params: dict[str, Any]) -> None:
    """SQLite: the settling step of a finishing move that already ran in this transaction."""
    await session.run(_settle_after(session.dialect), params)
