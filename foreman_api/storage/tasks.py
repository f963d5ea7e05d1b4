"""SQL for tasks: creation (idempotent with a key), reads and lists.

Creating a task raises its run's ``total_tasks`` in the same transaction. Status changes,
the claim and fencing are in :mod:`foreman_api.storage.task_updates`.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from foreman_api.clock import as_utc, utcnow
from foreman_api.errors import BadRequest, Conflict, NotFound
from foreman_api.schemas import (
    DEFAULT_MAX_RETRIES,
    DEFAULT_QUEUE,
    TERMINAL_RUN_STATUSES,
    SortOrder,
    TaskStatus,
    TimeSort,
)
from foreman_api.storage.engine import read_transaction, single_read, write_transaction
from foreman_api.storage.rows import stable_order
from foreman_api.storage.runs import get_run_row, run_not_found
from foreman_api.storage.tables import runs, tasks
from foreman_api.storage.workers import live_since, type_options

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


@dataclass(frozen=True, slots=True)
class CreatedTask:
    """A created (or, for a repeated idempotency key, the existing) task."""

    row: sa.RowMapping
    replayed: bool
    """True when an earlier create with the same idempotency key made it."""
    served: bool
    """Whether a live worker has registered a handler for the task's type."""


def create_task(
    engine: sa.Engine,
    *,
    org_id: str,
    run_id: uuid.UUID,
    type: str,
    input_data: Any,
    parent_task_id: uuid.UUID | None,
    metadata: Any,
    max_retries: int | None,
    queue: str | None = None,
    status: TaskStatus = TaskStatus.PENDING,
    idempotency_key: str | None = None,
) -> CreatedTask:
    """Insert a pending (or queued) task and count it in its run's ``total_tasks``.

    ``404`` when the run is unknown in ``org_id``; ``409`` when the run is terminal;
    ``400`` when ``parent_task_id`` is not a task of the same run (an invalid field of the
    body, whatever the reason, and the message does not reveal whether the id exists
    elsewhere). ``queue`` and ``max_retries`` left out take the options a worker registered
    for ``type``, else the defaults. With an ``idempotency_key`` already used in ``org_id``,
    the task made then is returned (``409`` if it was for another run or type).
    """
    try:
        now = utcnow()
        with write_transaction(engine) as conn:
            # A repeated idempotency key meets the unique index at the INSERT below, which
            # rolls this transaction back (the counter too): see the except clause.
            counted = conn.execute(
                _COUNT_NEW_TASK, {"p_run_id": run_id, "p_org_id": org_id, "p_now": now}
            )
            if counted.rowcount != 1:
                if idempotency_key is not None:  # the task may predate the run's end
                    existing = _by_idempotency_key(conn, org_id=org_id, key=idempotency_key)
                    if existing is not None:
                        return _replay(existing, run_id=run_id, type=type)
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
            options = type_options(conn, org_id=org_id, type=type)
            values = {
                "id": uuid.uuid4(),
                "run_id": run_id,
                "parent_task_id": parent_task_id,
                "org_id": org_id,
                "type": type,
                "status": status.value,
                "input_data": input_data,
                "metadata": metadata,
                "retry_count": 0,
                "max_retries": _option(max_retries, options, "max_retries", DEFAULT_MAX_RETRIES),
                "max_retries_defaulted": max_retries is None
                and _option(None, options, "max_retries", None) is None,
                "queue": _option(queue, options, "queue", DEFAULT_QUEUE),
                "queue_defaulted": queue is None and options is None,
                "idempotency_key": idempotency_key,
                "created_at": now,
                "updated_at": now,
                "queued_at": now if status is TaskStatus.QUEUED else None,
            }
            row = conn.execute(_INSERT_TASK, values).mappings().one()
        served = options is not None and as_utc(options.last_seen_at) >= live_since(now)
        return CreatedTask(row=row, replayed=False, served=served)
    except sa.exc.IntegrityError:
        if idempotency_key is None:
            raise
        # A concurrent create with the same key won the unique index: answer with its task.
        with single_read(engine) as conn:
            existing = _by_idempotency_key(conn, org_id=org_id, key=idempotency_key)
        if existing is None:
            raise
        return _replay(existing, run_id=run_id, type=type)


def _option(given: Any, options: sa.Row[Any] | None, name: str, default: Any) -> Any:
    """The value given, else the one a worker registered for the type, else ``default``."""
    if given is not None:
        return given
    registered = getattr(options, name) if options is not None else None
    return registered if registered is not None else default


def _by_idempotency_key(conn: sa.Connection, *, org_id: str, key: str) -> sa.RowMapping | None:
    query = sa.select(tasks).where(tasks.c.org_id == org_id, tasks.c.idempotency_key == key)
    return conn.execute(query).mappings().first()


def _replay(existing: sa.RowMapping, *, run_id: uuid.UUID, type: str) -> CreatedTask:
    if existing["run_id"] != run_id or existing["type"] != type:
        raise Conflict(
            "idempotencyKey was already used for a task of another run or type",
            code="idempotency_conflict",
            details=[{"field": "idempotencyKey", "message": "already used"}],
        )
    return CreatedTask(row=existing, replayed=True, served=True)


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
