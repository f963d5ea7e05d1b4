"""SQL for runs. Every statement filters on the caller's ``org_id``.

Lock order on PostgreSQL: a write that locks both a run's tasks and the run locks the
**task rows first** — a task's move (one statement: the task, then its run), the recovery
of a lost worker's task (likewise), and a run PATCH that finishes the run (its unfinished
tasks, then the run) — so no two of them deadlock. A task create locks only the run (and
its parent task by key-share, which no move conflicts with). On SQLite every writer holds
the database write lock anyway.
Everything here runs on the request path's :class:`~foreman_api.db.Database`.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Mapping, Sequence
from datetime import datetime
from functools import lru_cache
from typing import Any

import sqlalchemy as sa

from foreman_api.clock import duration_ms, utcnow
from foreman_api.db import Database, Session
from foreman_api.db.base import Row
from foreman_api.domain.errors import NotFound
from foreman_api.domain.paging import SortOrder, TimeSortBy
from foreman_api.domain.run_search import RunSearch
from foreman_api.domain.states import (
    UNFINISHED_TASK_STATUSES,
    check_run_transition,
    is_terminal_run,
)
from foreman_api.metrics import instruments
from foreman_api.schemas import RunStatus, TaskStatus
from foreman_api.storage.attempts import close_run_attempts
from foreman_api.storage.rows import elapsed_ms_sql, paged_statements
from foreman_api.storage.tables import runs, tasks
from foreman_api.storage.types import TIMESTAMP_TYPE

# Built once with bound parameters (building a statement per request costs about as much
# CPU as executing it).
_BY_ID = (runs.c.id == sa.bindparam("p_run_id"), runs.c.org_id == sa.bindparam("p_org_id"))
GET_RUN = sa.select(runs).where(*_BY_ID)
_LOCK_RUN = sa.select(runs).where(*_BY_ID).with_for_update(key_share=True)
_LOCK_UNFINISHED_TASKS = (
    sa.select(tasks.c.id)
    .where(
        tasks.c.run_id == sa.bindparam("p_run_id"),
        tasks.c.org_id == sa.bindparam("p_org_id"),
        tasks.c.status.in_(sorted(s.value for s in UNFINISHED_TASK_STATUSES)),
    )
    .order_by(tasks.c.id)
    .with_for_update(key_share=True)
)
"""A run PATCH that finishes the run locks these first (see the lock order above)."""
_INSERT_RUN = runs.insert().returning(runs)
_UPDATE_RUN = runs.update().where(*_BY_ID).returning(runs)
"""Sets the columns the parameters name besides ``p_run_id`` and ``p_org_id``."""


_COUNT_CANCELLED = (
    runs.update()
    .where(*_BY_ID)
    .values(cancelled_tasks=runs.c.cancelled_tasks + sa.bindparam("p_cancelled"))
)


def reopened(when: sa.ColumnElement[bool]) -> dict[str, Any]:
    """UPDATE values that make a finished run ``running`` again when ``when`` holds (its
    end time and duration cleared; finishing again is up to it), else leave it as it is.
    A task created in a run that finished by itself, and a retry, reopen runs this way."""
    return {
        "status": sa.case((when, sa.literal(RunStatus.RUNNING.value)), else_=runs.c.status),
        "completed_at": sa.case((when, None), else_=runs.c.completed_at),
        "duration_ms": sa.case((when, None), else_=runs.c.duration_ms),
        "auto_completed": False,
    }


def run_not_found(run_id: uuid.UUID) -> NotFound:
    return NotFound(f"run {run_id} not found")


@lru_cache(maxsize=4)
def _cancel_tasks_statement(dialect: str) -> sa.Update:
    """The UPDATE of :func:`cancel_unfinished_tasks` (``duration_ms`` is dialect SQL)."""
    now = sa.bindparam("p_now", type_=tasks.c.updated_at.type)
    return (
        tasks.update()
        .where(
            tasks.c.run_id == sa.bindparam("p_run_id"),
            tasks.c.org_id == sa.bindparam("p_org_id"),
            tasks.c.status.in_(sorted(s.value for s in UNFINISHED_TASK_STATUSES)),
        )
        .values(
            status=TaskStatus.CANCELLED.value,
            updated_at=now,
            lease_expires_at=None,
            retry_at=None,
            completed_at=now,
            duration_ms=elapsed_ms_sql(dialect, start=tasks.c.started_at, end=now),
        )
        .returning(tasks.c.type)
    )


async def cancel_unfinished_tasks(
    session: Session, *, org_id: str, run_id: uuid.UUID, now: datetime
) -> list[str]:
    """Cancel every task of the run that has not finished; returns the type of each.

    A worker still running one of them finds its claim gone: its result is refused, and
    its attempt is closed as ``cancelled``.

    Called with the run row already locked (see the lock order above). A cancelled task
    counts in neither ``completedTasks`` nor ``failedTasks``.
    """
    params = {"p_run_id": run_id, "p_org_id": org_id, "p_now": now}
    cancelled = await session.all(_cancel_tasks_statement(session.dialect), params)
    await close_run_attempts(session, org_id=org_id, run_id=run_id, now=now)
    if cancelled:
        await session.run(_COUNT_CANCELLED, {**params, "p_cancelled": len(cancelled)})
    return [row["type"] for row in cancelled]


async def create_run(
    db: Database, *, org_id: str, input_data: Any, metadata: Any, auto_complete: bool = True
) -> Row:
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
        "cancelled_tasks": 0,
        "auto_complete": auto_complete,
        "auto_completed": False,
        "created_at": now,
        "updated_at": now,
    }
    async with db.transaction(write=True) as tx:
        row = await tx.one(_INSERT_RUN, values)
    if row is None:
        raise RuntimeError("INSERT … RETURNING returned no row")
    return row


async def get_run(db: Database, *, org_id: str, run_id: uuid.UUID) -> Row:
    row = await db.one(GET_RUN, {"p_run_id": run_id, "p_org_id": org_id})
    if row is None:
        raise run_not_found(run_id)
    return row


async def list_runs(
    db: Database,
    *,
    org_id: str,
    status: RunStatus | None,
    limit: int,
    offset: int,
    sort_by: TimeSortBy,
    sort_order: SortOrder,
    created_after: datetime | None = None,
    created_before: datetime | None = None,
    search: RunSearch | None = None,
) -> tuple[Sequence[Row], int]:
    """One page of runs and the total matching, from one snapshot. Ties break on id.

    ``created_after`` (inclusive), ``created_before`` (exclusive) and ``search`` narrow
    the list further (the dashboard's filters); their statements are built per call."""
    if created_after is None and created_before is None and search is None:
        page, count = _list_statements(status is not None, sort_by, sort_order)
    else:
        columns = ("org_id", "status") if status is not None else ("org_id",)
        narrowing = functools.partial(
            _narrowed, after=created_after, before=created_before, search=search
        )
        page, count = paged_statements(runs, columns, sort_by, sort_order, narrowing)
    params = {
        "p_org_id": org_id,
        "p_status": status.value if status is not None else None,
        "p_limit": limit,
        "p_offset": offset,
    }
    rows = await db.all(page, params)  # each row carries the total: one statement
    if rows:
        return rows, int(rows[0]["total"])
    return [], int(await db.scalar(count, params))  # an offset past the end: still say how many


def _narrowed(
    table: sa.FromClause,
    *,
    after: datetime | None,
    before: datetime | None,
    search: RunSearch | None,
) -> list[sa.ColumnElement[bool]]:
    """The conditions of :func:`list_runs`'s time window and search on ``table``."""
    terms: list[sa.ColumnElement[bool]] = []
    if after is not None:
        terms.append(table.c.created_at >= sa.literal(after, TIMESTAMP_TYPE))
    if before is not None:
        terms.append(table.c.created_at < sa.literal(before, TIMESTAMP_TYPE))
    if search is None:
        return terms
    if search.run_id is not None:
        terms.append(table.c.id == search.run_id)
    elif search.meta_key is not None:
        terms.append(table.c.metadata[search.meta_key].as_string() == search.meta_value)
    else:
        text = sa.cast(table.c.metadata, sa.Text)
        anywhere = [text.ilike(_containing(search.text or ""), escape="\\")]
        if search.id_prefix is not None:
            digits = sa.func.replace(sa.cast(table.c.id, sa.String), "-", "")
            anywhere.append(digits.like(search.id_prefix + "%"))
        terms.append(sa.or_(*anywhere))
    return terms


def _containing(text: str) -> str:
    """A LIKE pattern (escape ``\\``) for values that contain ``text`` literally."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


@lru_cache(maxsize=16)
def _list_statements(
    by_status: bool, sort_by: TimeSortBy, sort_order: SortOrder
) -> tuple[sa.Select[Any], sa.Select[Any]]:
    """The page (rows carry ``total``) and count statements of a run list (built once)."""
    columns = ("org_id", "status") if by_status else ("org_id",)
    return paged_statements(runs, columns, sort_by, sort_order)


async def update_run(
    db: Database,
    *,
    org_id: str,
    run_id: uuid.UUID,
    status: RunStatus | None,
    changes: Mapping[str, Any],
) -> Row:
    """Apply a PATCH: ``changes`` (column → value) and, if given, a status transition.

    Raises ``NotFound`` and the ``409 invalid_transition``. A move to a terminal status sets
    ``completed_at`` and ``duration_ms`` (from ``started_at``; null for a run that never
    started); a move to ``running`` sets ``started_at``. Finishing a run (completed, failed or
    cancelled) cancels its unfinished tasks in the same transaction, so no task of a
    finished run can start; they count in neither counter.
    """
    now = utcnow()
    by_id = {"p_run_id": run_id, "p_org_id": org_id}
    async with db.transaction(write=True) as tx:
        if status is not None and is_terminal_run(status):
            await tx.all(_LOCK_UNFINISHED_TASKS, by_id)  # the tasks before the run
        current = await tx.one(_LOCK_RUN, by_id)
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
        if status is not None and is_terminal_run(status) and current["auto_completed"]:
            values["auto_completed"] = False  # closed explicitly now: no task reopens it
        if not values:
            return current
        values["updated_at"] = now
        row = await tx.one(_UPDATE_RUN, {**values, **by_id})
        if row is None:
            raise RuntimeError("UPDATE … RETURNING of a locked run returned no row")
        cancelled: list[str] = []
        if moves and status is not None and is_terminal_run(status):
            cancelled = await cancel_unfinished_tasks(tx, org_id=org_id, run_id=run_id, now=now)
    instruments.tasks_cancelled(cancelled)
    return row
