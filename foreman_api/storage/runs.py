"""SQL for runs. Every statement filters on the caller's ``org_id``.

Lock order: a transaction that touches both a run and its tasks locks the **run row first**
(a run PATCH, a task create, a task claim or completion), so two such transactions never
deadlock on PostgreSQL; on SQLite every writer holds the database write lock anyway.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from foreman_api.clock import duration_ms, utcnow
from foreman_api.domain.states import (
    UNFINISHED_TASK_STATUSES,
    check_run_transition,
    is_terminal_run,
)
from foreman_api.errors import NotFound
from foreman_api.schemas import RunStatus, SortOrder, TaskStatus, TimeSort
from foreman_api.storage.engine import read_transaction, single_read, write_transaction
from foreman_api.storage.rows import elapsed_ms_sql, stable_order
from foreman_api.storage.tables import runs, tasks

# Built once with bound parameters (building a statement per request costs about as much
# CPU as executing it).
GET_RUN = sa.select(runs).where(
    runs.c.id == sa.bindparam("p_run_id"), runs.c.org_id == sa.bindparam("p_org_id")
)
_INSERT_RUN = runs.insert().returning(runs)


def run_not_found(run_id: uuid.UUID) -> NotFound:
    return NotFound(f"run {run_id} not found")


def get_run_row(conn: sa.Connection, *, org_id: str, run_id: uuid.UUID) -> sa.RowMapping | None:
    """The run ``run_id`` of ``org_id``, or None (unknown, or another organisation's)."""
    return conn.execute(GET_RUN, {"p_run_id": run_id, "p_org_id": org_id}).mappings().first()


def cancel_unfinished_tasks(
    conn: sa.Connection, *, org_id: str, run_id: uuid.UUID, now: datetime
) -> int:
    """Cancel every task of the run that has not finished; returns how many.

    A worker still running one of them finds its claim gone: its result is refused.

    Called with the run row already locked (see the lock order above). A cancelled task
    counts in neither ``completedTasks`` nor ``failedTasks``.
    """
    result = conn.execute(
        tasks.update()
        .where(
            tasks.c.run_id == run_id,
            tasks.c.org_id == org_id,
            tasks.c.status.in_([s.value for s in UNFINISHED_TASK_STATUSES]),
        )
        .values(
            status=TaskStatus.CANCELLED.value,
            updated_at=now,
            lease_expires_at=None,
            retry_at=None,
            completed_at=now,
            duration_ms=elapsed_ms_sql(conn.dialect.name, start=tasks.c.started_at, end=now),
        )
    )
    return result.rowcount


def create_run(engine: sa.Engine, *, org_id: str, input_data: Any, metadata: Any) -> sa.RowMapping:
    now = utcnow()
    values = {
        "id": uuid.uuid4(),
        "org_id": org_id,
        "status": RunStatus.PENDING.value,
        "input_data": input_data,
        "metadata": metadata,
        "total_tasks": 0,
        "completed_tasks": 0,
        "failed_tasks": 0,
        "created_at": now,
        "updated_at": now,
    }
    with write_transaction(engine) as conn:
        return conn.execute(_INSERT_RUN, values).mappings().one()


def get_run(engine: sa.Engine, *, org_id: str, run_id: uuid.UUID) -> sa.RowMapping:
    with single_read(engine) as conn:
        row = get_run_row(conn, org_id=org_id, run_id=run_id)
    if row is None:
        raise run_not_found(run_id)
    return row


def list_runs(
    engine: sa.Engine,
    *,
    org_id: str,
    status: RunStatus | None,
    limit: int,
    offset: int,
    sort_by: TimeSort,
    sort_order: SortOrder,
) -> tuple[Sequence[sa.RowMapping], int]:
    """One page of runs and the total matching, from one snapshot. Ties break on id."""
    where = [runs.c.org_id == org_id]
    if status is not None:
        where.append(runs.c.status == status.value)
    order = stable_order(runs, sort_by, sort_order)
    page = sa.select(runs).where(*where).order_by(*order).limit(limit).offset(offset)
    count = sa.select(sa.func.count()).select_from(runs).where(*where)
    with read_transaction(engine) as conn:
        rows = conn.execute(page).mappings().all()
        total = conn.execute(count).scalar_one()
    return rows, total


def update_run(
    engine: sa.Engine,
    *,
    org_id: str,
    run_id: uuid.UUID,
    status: RunStatus | None,
    changes: Mapping[str, Any],
) -> sa.RowMapping:
    """Apply a PATCH: ``changes`` (column → value) and, if given, a status transition.

    Raises ``NotFound`` and the ``409 invalid_transition``. A move to a terminal status sets
    ``completed_at`` and ``duration_ms`` (from ``started_at``; null for a run that never
    started); a move to ``running`` sets ``started_at``. Finishing a run (completed, failed or
    cancelled) cancels its unfinished tasks in the same transaction, so no task of a
    finished run can start; they count in neither counter.
    """
    now = utcnow()
    with write_transaction(engine) as conn:
        current = (
            conn.execute(
                sa.select(runs)
                .where(runs.c.id == run_id, runs.c.org_id == org_id)
                .with_for_update(key_share=True)
            )
            .mappings()
            .first()
        )
        if current is None:
            raise run_not_found(run_id)
        values = dict(changes)
        moves = status is not None and check_run_transition(RunStatus(current["status"]), status)
        if status is not None and moves:
            values["status"] = status.value
            if status is RunStatus.RUNNING:
                values["started_at"] = now
            if is_terminal_run(status):
                values["completed_at"] = now
                values["duration_ms"] = duration_ms(current["started_at"], now)
        if not values:
            return current
        values["updated_at"] = now
        row = (
            conn.execute(
                runs.update()
                .where(runs.c.id == run_id, runs.c.org_id == org_id)
                .values(values)
                .returning(runs)
            )
            .mappings()
            .one()
        )
        if moves and status is not None and is_terminal_run(status):
            cancel_unfinished_tasks(conn, org_id=org_id, run_id=run_id, now=now)
        return row
