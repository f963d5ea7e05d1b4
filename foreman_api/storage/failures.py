"""SQL for the dashboard's failures: failed tasks grouped by type and error type, and the
failed tasks of one group. Retrying them is :mod:`foreman_api.storage.retries`' job."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from foreman_api.db import Database
from foreman_api.db.base import Row
from foreman_api.schemas import TaskStatus
from foreman_api.storage.retries import error_type
from foreman_api.storage.tables import tasks

FAILED = TaskStatus.FAILED.value
_ERROR_TYPE = error_type(tasks).label("error_type")
_GROUPS = (
    sa.select(
        tasks.c.type,
        _ERROR_TYPE,
        sa.func.count().label("tasks"),
        sa.func.max(tasks.c.completed_at).label("last_failed_at"),
    )
    .where(tasks.c.org_id == sa.bindparam("p_org_id"), tasks.c.status == FAILED)
    .group_by(tasks.c.type, _ERROR_TYPE)
    .order_by(sa.desc("tasks"), tasks.c.type, _ERROR_TYPE)
    .limit(sa.bindparam("p_limit", type_=sa.Integer))
)


async def failure_groups(db: Database, *, org_id: str, limit: int = 200) -> list[Row]:
    """Failed tasks per (type, error type), the largest group first: ``type``,
    ``error_type`` (None for a failure without one), ``tasks``, ``last_failed_at``."""
    return await db.all(_GROUPS, {"p_org_id": org_id, "p_limit": limit})


async def failed_tasks(
    db: Database,
    *,
    org_id: str,
    type: str | None,
    error: str | None,
    limit: int,
) -> list[Row]:
    """The most recently failed tasks, of one type and/or error type when given."""
    where: list[Any] = [tasks.c.org_id == org_id, tasks.c.status == FAILED]
    if type is not None:
        where.append(tasks.c.type == type)
    if error is not None:
        where.append(error_type(tasks) == error)
    statement = (
        sa.select(tasks)
        .where(*where)
        .order_by(tasks.c.completed_at.desc(), tasks.c.id.desc())
        .limit(limit)
    )
    return await db.all(statement)
