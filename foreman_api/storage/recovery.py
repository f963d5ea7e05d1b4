"""Reconciliation: recover tasks of lost workers, and list the tasks that should be queued.

The database, not Redis, says what must run. A worker that dies stops renewing the lease of
the task it claimed; :func:`expire_leases` moves such a task on — ``retrying`` (due at once)
while retries are left, else ``failed`` — with ``errorData.type = "WorkerLost"``. Each move
is a compare-and-set guarded by the lease still being expired and still held by the same
job, so a late heartbeat or completion and a recovery never both win.

:func:`waiting_tasks` pages through the tasks that should be waiting on a queue (``queued``,
or ``retrying`` and due), for the reconciler in ``foreman-worker`` to compare with Redis.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from foreman_api.clock import utcnow
from foreman_api.db import Database
from foreman_api.db.base import Row
from foreman_api.metrics import instruments
from foreman_api.schemas import TaskStatus
from foreman_api.storage.tables import tasks
from foreman_api.storage.task_updates import move_statement, move_task, touch_run

EXPIRED_BATCH = 200
"""Leases expired in one call at most; the next call takes the rest."""
WORKER_LOST = "WorkerLost"


def worker_lost_error(job_id: str | None, attempt: int) -> dict[str, Any]:
    """``errorData`` of an attempt whose worker stopped renewing its lease."""
    return {
        "type": WORKER_LOST,
        "message": f"the worker running job {job_id} stopped renewing its lease "
        "(killed, crashed, hung or cut off)",
        "traceback": None,
        "attempt": attempt,
    }


async def expire_leases(db: Database, *, org_id: str) -> list[Row]:
    """Move on every running task of ``org_id`` whose lease has expired; return them."""
    now = utcnow()
    query = (
        sa.select(tasks.c.id, tasks.c.queue_job_id, tasks.c.retry_count, tasks.c.max_retries)
        .where(
            tasks.c.org_id == org_id,
            tasks.c.status == TaskStatus.RUNNING.value,
            tasks.c.lease_expires_at < now,
        )
        .limit(EXPIRED_BATCH)
    )
    expired = await db.all(query)
    recovered = []
    for task in expired:
        row = await _recover(db, org_id=org_id, task=task, now=now)
        if row is not None:
            recovered.append(row)
    return recovered


async def _recover(db: Database, *, org_id: str, task: Row, now: datetime) -> Row | None:
    retries_left = task["retry_count"] < task["max_retries"]
    target = TaskStatus.RETRYING if retries_left else TaskStatus.FAILED
    params = {
        "p_task_id": task["id"],
        "p_org_id": org_id,
        "p_now": now,
        "p_job_id": task["queue_job_id"],
        "p_retry_at": now,
        "v_error_data": worker_lost_error(task["queue_job_id"], task["retry_count"] + 1),
    }
    if db.dialect == "postgresql":  # one statement, the task's row before its run's
        row = await db.one(
            move_statement(target, ("error_data",), fenced=True, lease_expired=True), params
        )
        if row is None:  # renewed, finished or recovered by someone else meanwhile
            return None
        instruments.task_moved(row)
        return row
    try:
        async with db.transaction(write=True) as tx:
            await touch_run(tx, org_id=org_id, task_id=task["id"], target=target, now=now)
            row = await move_task(
                tx, target, ("error_data",), params, fenced=True, lease_expired=True
            )
            if row is None:
                raise _AlreadyMoved
    except _AlreadyMoved:
        # Renewed, finished or recovered by someone else meanwhile: the counter rolled back.
        return None
    instruments.task_moved(row)
    return row


class _AlreadyMoved(Exception):
    """Raised inside the transaction to roll it back."""


async def waiting_tasks(
    db: Database,
    *,
    org_id: str,
    after: uuid.UUID | None,
    limit: int,
    grace_seconds: float,
) -> tuple[Sequence[Row], uuid.UUID | None]:
    """One page, by id, of the tasks that should be on a queue, and the next page's cursor.

    ``queued`` tasks, and ``retrying`` tasks whose ``retry_at`` has come, that have not
    changed for ``grace_seconds`` (a fresh one may be between its database write and its
    enqueue).
    """
    now = utcnow()
    due = sa.or_(
        tasks.c.status == TaskStatus.QUEUED.value,
        sa.and_(
            tasks.c.status == TaskStatus.RETRYING.value,
            sa.or_(tasks.c.retry_at.is_(None), tasks.c.retry_at <= now),
        ),
    )
    where = [
        tasks.c.org_id == org_id,
        tasks.c.status.in_([TaskStatus.QUEUED.value, TaskStatus.RETRYING.value]),
        due,
        tasks.c.updated_at < now - timedelta(seconds=grace_seconds),
    ]
    if after is not None:
        where.append(tasks.c.id > after)
    query = (
        sa.select(tasks.c.id, tasks.c.queue, tasks.c.status, tasks.c.retry_at)
        .where(*where)
        .order_by(tasks.c.id)
        .limit(limit + 1)
    )
    rows = await db.all(query)
    if len(rows) > limit:
        return rows[:limit], rows[limit - 1]["id"]
    return rows, None
