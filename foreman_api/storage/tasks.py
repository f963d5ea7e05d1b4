"""SQL for tasks: creation, the status machine's compare-and-set, lists.

**The claim is the lock.** Every status change is one ``UPDATE … WHERE id = :id AND
org_id = :org AND status IN (:allowed sources) RETURNING *``: of two concurrent claims the
database lets exactly one match. Only when nothing matched is the row read again, to tell
``404`` from ``409`` and to recognise the idempotent repeat of a won claim.

Counters on the run (``total_tasks``, ``completed_tasks``, ``failed_tasks``) move by atomic
increments in the same transaction as the task change. A change that touches the run (a
move that raises a counter, or a claim that auto-starts a pending run) updates the **run
row first**, then the task: the lock order shared with :mod:`foreman_api.storage.runs`, so
a run cancel and a task completion never deadlock. If the task's compare-and-set then
fails, raising rolls the counter back.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any

import sqlalchemy as sa

from foreman_api.clock import utcnow
from foreman_api.domain.states import (
    invalid_transition,
    is_terminal_task,
    task_counter,
    task_sources,
    task_touches_run,
)
from foreman_api.errors import BadRequest, Conflict, NotFound
from foreman_api.schemas import TERMINAL_RUN_STATUSES, RunStatus, SortOrder, TaskStatus, TimeSort
from foreman_api.storage.engine import read_transaction, single_read, write_transaction
from foreman_api.storage.rows import elapsed_ms_sql, stable_order
from foreman_api.storage.runs import get_run_row, run_not_found
from foreman_api.storage.tables import runs, tasks

_TERMINAL_RUN_VALUES = [s.value for s in TERMINAL_RUN_STATUSES]


# Hot-path statements, built once with bound parameters: building a statement per request
# (and its cache key) costs about as much CPU as executing it.
_BY_ID = (
    tasks.c.id == sa.bindparam("p_task_id"),
    tasks.c.org_id == sa.bindparam("p_org_id"),
)
_GET_TASK = sa.select(tasks).where(*_BY_ID)
_INSERT_TASK = tasks.insert().returning(tasks)
_COUNT_NEW_TASK = (
    runs.update()
    .where(
        runs.c.id == sa.bindparam("p_run_id"),
        runs.c.org_id == sa.bindparam("p_org_id"),
        runs.c.status.not_in(_TERMINAL_RUN_VALUES),
    )
    .values(total_tasks=runs.c.total_tasks + 1, updated_at=sa.bindparam("p_now"))
)


def task_not_found(task_id: uuid.UUID) -> NotFound:
    return NotFound(f"task {task_id} not found")


def _task_where(*, org_id: str, task_id: uuid.UUID) -> list[sa.ColumnElement[bool]]:
    return [tasks.c.id == task_id, tasks.c.org_id == org_id]


def get_task_row(conn: sa.Connection, *, org_id: str, task_id: uuid.UUID) -> sa.RowMapping | None:
    params = {"p_task_id": task_id, "p_org_id": org_id}
    return conn.execute(_GET_TASK, params).mappings().first()


def task_belongs_to_run(
    conn: sa.Connection, *, org_id: str, run_id: uuid.UUID, task_id: uuid.UUID
) -> bool:
    """Whether ``task_id`` is a task of run ``run_id`` in ``org_id``."""
    query = sa.select(sa.literal(1)).where(
        tasks.c.id == task_id, tasks.c.run_id == run_id, tasks.c.org_id == org_id
    )
    return conn.execute(query).first() is not None


def create_task(
    engine: sa.Engine,
    *,
    org_id: str,
    run_id: uuid.UUID,
    type: str,
    input_data: Any,
    parent_task_id: uuid.UUID | None,
    metadata: Any,
    max_retries: int,
) -> sa.RowMapping:
    """Insert a pending task and count it in its run's ``total_tasks``.

    ``404`` when the run is unknown in ``org_id``; ``409`` when the run is terminal;
    ``400`` when ``parent_task_id`` is not a task of the same run (an invalid field of the
    body, whatever the reason, and the message does not reveal whether the id exists
    elsewhere).
    """
    now = utcnow()
    with write_transaction(engine) as conn:
        counted = conn.execute(
            _COUNT_NEW_TASK, {"p_run_id": run_id, "p_org_id": org_id, "p_now": now}
        )
        if counted.rowcount != 1:
            run = get_run_row(conn, org_id=org_id, run_id=run_id)
            if run is None:
                raise run_not_found(run_id)
            raise Conflict(
                f"cannot create a task in run {run_id}: the run is {run['status']}",
                code="run_finished",
            )
        if parent_task_id is not None and not task_belongs_to_run(
            conn, org_id=org_id, run_id=run_id, task_id=parent_task_id
        ):
            raise BadRequest(
                f"parentTaskId {parent_task_id} is not a task of run {run_id}",
                details=[{"field": "parentTaskId", "message": "not a task of this run"}],
            )
        values = {
            "id": uuid.uuid4(),
            "run_id": run_id,
            "parent_task_id": parent_task_id,
            "org_id": org_id,
            "type": type,
            "status": TaskStatus.PENDING.value,
            "input_data": input_data,
            "metadata": metadata,
            "retry_count": 0,
            "max_retries": max_retries,
            "created_at": now,
            "updated_at": now,
        }
        return conn.execute(_INSERT_TASK, values).mappings().one()


def get_task(engine: sa.Engine, *, org_id: str, task_id: uuid.UUID) -> sa.RowMapping:
    with single_read(engine) as conn:
        row = get_task_row(conn, org_id=org_id, task_id=task_id)
    if row is None:
        raise task_not_found(task_id)
    return row


def list_tasks(
    engine: sa.Engine,
    *,
    org_id: str,
    run_id: uuid.UUID | None,
    parent_task_id: uuid.UUID | None,
    status: TaskStatus | None,
    type: str | None,
    limit: int,
    offset: int,
    sort_by: TimeSort,
    sort_order: SortOrder,
) -> tuple[Sequence[sa.RowMapping], int]:
    """One page of tasks and the total matching, from one snapshot. Ties break on id.

    A ``run_id`` or ``parent_task_id`` filter naming nothing in ``org_id`` is a ``404``
    (another organisation's run is indistinguishable from no run), not an empty page.
    """
    where = [tasks.c.org_id == org_id]
    if run_id is not None:
        where.append(tasks.c.run_id == run_id)
    if parent_task_id is not None:
        where.append(tasks.c.parent_task_id == parent_task_id)
    if status is not None:
        where.append(tasks.c.status == status.value)
    if type is not None:
        where.append(tasks.c.type == type)
    order = stable_order(tasks, sort_by, sort_order)
    page = sa.select(tasks).where(*where).order_by(*order).limit(limit).offset(offset)
    count = sa.select(sa.func.count()).select_from(tasks).where(*where)
    with read_transaction(engine) as conn:
        if run_id is not None and get_run_row(conn, org_id=org_id, run_id=run_id) is None:
            raise run_not_found(run_id)
        if parent_task_id is not None and (
            get_task_row(conn, org_id=org_id, task_id=parent_task_id) is None
        ):
            raise task_not_found(parent_task_id)
        rows = conn.execute(page).mappings().all()
        total = conn.execute(count).scalar_one()
    return rows, total


@lru_cache(maxsize=8)
def _touch_run_statement(target: TaskStatus) -> sa.Update:
    """The run-side UPDATE of a task's move to ``target`` (see :func:`_touch_run`)."""
    run_of_task = sa.select(tasks.c.run_id).where(*_BY_ID).scalar_subquery()
    statement = runs.update().where(
        runs.c.id == run_of_task, runs.c.org_id == sa.bindparam("p_org_id")
    )
    now = sa.bindparam("p_now", type_=runs.c.updated_at.type)
    counter = task_counter(target)
    if counter is not None:
        return statement.values({counter: runs.c[counter] + 1, "updated_at": now})
    return statement.where(runs.c.status == RunStatus.PENDING.value).values(
        status=RunStatus.RUNNING.value, started_at=now, updated_at=now
    )


def _touch_run(
    conn: sa.Connection, *, org_id: str, task_id: uuid.UUID, target: TaskStatus, now: Any
) -> None:
    """Apply what the task's move does to its run, before the task itself changes.

    ``completed``/``failed`` raise a counter: that locks the run row, so counter moves of
    one run are serialised with each other and with a run PATCH (which locks the run, then
    its tasks). A claim starts a run that is still ``pending``; once the run is running the
    statement matches nothing, takes no lock, and claims of one run proceed in parallel.
    """
    conn.execute(
        _touch_run_statement(target), {"p_task_id": task_id, "p_org_id": org_id, "p_now": now}
    )


@lru_cache(maxsize=256)
def _transition_statement(
    target: TaskStatus, changed: tuple[str, ...], dialect: str
) -> sa.Update:
    """The compare-and-set UPDATE moving a task to ``target`` and setting ``changed``.

    Built once per (target, set of changed columns, dialect); the values are bound at
    execution: ``p_task_id``, ``p_org_id``, ``p_now`` and ``v_<column>`` per changed column.
    """
    now = sa.bindparam("p_now", type_=tasks.c.updated_at.type)
    values: dict[str, Any] = {
        name: sa.bindparam(f"v_{name}", type_=tasks.c[name].type) for name in changed
    }
    values["status"] = target.value
    values["updated_at"] = now
    if target is TaskStatus.QUEUED:
        values["queued_at"] = now
    elif target is TaskStatus.RUNNING:
        values["started_at"] = now
    elif target is TaskStatus.RETRYING:
        values["retry_count"] = tasks.c.retry_count + 1
    elif is_terminal_task(target):
        values["completed_at"] = now
        values["duration_ms"] = elapsed_ms_sql(dialect, start=tasks.c.started_at, end=now)
    sources = [s.value for s in task_sources(target)]
    return (
        tasks.update()
        .where(*_BY_ID, tasks.c.status.in_(sources))
        .values(values)
        .returning(tasks)
    )


def update_task(
    engine: sa.Engine,
    *,
    org_id: str,
    task_id: uuid.UUID,
    status: TaskStatus | None,
    changes: Mapping[str, Any],
) -> sa.RowMapping:
    """Apply a PATCH: ``changes`` (column → value) and, if given, a status transition.

    Transitions set ``queued_at`` (→ queued) and ``started_at`` (→ running) to the time of
    that move, so after a retry they describe the latest attempt; a move to a terminal
    status sets ``completed_at`` and ``duration_ms`` (from ``started_at``, null for a task
    that never started); each move to ``retrying`` adds one to ``retry_count``.

    A move to ``running`` from ``running`` is answered with the task, unchanged, when it
    carries the ``queue_job_id`` the task was claimed with (the retry of a claim whose
    response was lost); any other refused move is the ``409 invalid_transition``.
    """
    now = utcnow()
    values: dict[str, Any] = dict(changes)
    with write_transaction(engine) as conn:
        if status is None:
            if not values:
                row = get_task_row(conn, org_id=org_id, task_id=task_id)
            else:
                values["updated_at"] = now
                row = (
                    conn.execute(
                        tasks.update()
                        .where(*_task_where(org_id=org_id, task_id=task_id))
                        .values(values)
                        .returning(tasks)
                    )
                    .mappings()
                    .first()
                )
            if row is None:
                raise task_not_found(task_id)
            return row

        if task_touches_run(status):
            _touch_run(conn, org_id=org_id, task_id=task_id, target=status, now=now)
        statement = _transition_statement(status, tuple(sorted(values)), conn.dialect.name)
        params = {f"v_{name}": value for name, value in values.items()}
        params.update(p_task_id=task_id, p_org_id=org_id, p_now=now)
        row = conn.execute(statement, params).mappings().first()
        if row is not None:
            return row
        current = get_task_row(conn, org_id=org_id, task_id=task_id)
        if current is None:
            raise task_not_found(task_id)
        job_id = changes.get("queue_job_id")
        if (
            status is TaskStatus.RUNNING
            and current["status"] == TaskStatus.RUNNING.value
            and job_id is not None
            and job_id == current["queue_job_id"]
        ):
            return current
        raise invalid_transition("task", current["status"], status.value)
