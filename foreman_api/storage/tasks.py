"""SQL for tasks: creation (idempotent with a key), reads and lists.

Creating a task raises its run's ``total_tasks`` in the same transaction. Status changes,
the claim and fencing are in :mod:`foreman_api.storage.task_updates`. Everything here runs
on the request path's :class:`~foreman_api.db.Database`.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import sqlalchemy as sa

from foreman_api.clock import as_utc, utcnow
from foreman_api.db import Database, IntegrityViolation, Session
from foreman_api.db.base import Row
from foreman_api.domain.errors import Conflict, Invalid, NotFound
from foreman_api.domain.paging import SortOrder, TimeSortBy
from foreman_api.metrics import instruments
from foreman_api.schemas import (
    DEFAULT_MAX_RETRIES,
    DEFAULT_QUEUE,
    TERMINAL_RUN_STATUSES,
    Task,
    TaskStatus,
)
from foreman_api.storage.json_pages import RecordPage, postgres_page, time_fields, wire_fields
from foreman_api.storage.rows import paged_statements, sort_column
from foreman_api.storage.runs import GET_RUN, reopened, run_not_found
from foreman_api.storage.tables import runs, tasks
from foreman_api.storage.workers import TYPE_OPTIONS, live_since

_TERMINAL_RUN_VALUES = [s.value for s in TERMINAL_RUN_STATUSES]


# Hot-path statements, built once with bound parameters: building a statement per request
# (and its cache key) costs about as much CPU as executing it.
_BY_ID = (
    tasks.c.id == sa.bindparam("p_task_id"),
    tasks.c.org_id == sa.bindparam("p_org_id"),
)
_GET_TASK = sa.select(tasks).where(*_BY_ID)
_INSERT_TASK = tasks.insert().returning(tasks)
_TASK_OF_RUN = sa.select(sa.literal(1)).where(
    tasks.c.id == sa.bindparam("p_task_id"),
    tasks.c.run_id == sa.bindparam("p_run_id"),
    tasks.c.org_id == sa.bindparam("p_org_id"),
)
_BY_IDEMPOTENCY_KEY = sa.select(tasks).where(
    tasks.c.org_id == sa.bindparam("p_org_id"), tasks.c.idempotency_key == sa.bindparam("p_key")
)
_COUNT_NEW_TASK = (
    runs.update()
    .where(
        runs.c.id == sa.bindparam("p_run_id"),
        runs.c.org_id == sa.bindparam("p_org_id"),
        sa.or_(runs.c.status.not_in(_TERMINAL_RUN_VALUES), runs.c.auto_completed),
    )
    .values(
        total_tasks=runs.c.total_tasks + 1,
        updated_at=sa.bindparam("p_now"),
        # A run that finished by itself runs again (see touch_run); a closed one is refused.
        **reopened(runs.c.auto_completed),
    )
)


def task_not_found(task_id: uuid.UUID) -> NotFound:
    return NotFound(f"task {task_id} not found")


async def get_task_row(session: Session, *, org_id: str, task_id: uuid.UUID) -> Row | None:
    return await session.one(_GET_TASK, {"p_task_id": task_id, "p_org_id": org_id})


async def task_belongs_to_run(
    session: Session, *, org_id: str, run_id: uuid.UUID, task_id: uuid.UUID
) -> bool:
    """Whether ``task_id`` is a task of run ``run_id`` in ``org_id``."""
    params = {"p_task_id": task_id, "p_run_id": run_id, "p_org_id": org_id}
    return await session.one(_TASK_OF_RUN, params) is not None


@dataclass(frozen=True, slots=True)
class CreatedTask:
    """A created (or, for a repeated idempotency key, the existing) task."""

    row: Row
    replayed: bool
    """True when an earlier create with the same idempotency key made it."""
    served: bool
    """Whether a live worker has registered a handler for the task's type."""


async def create_task(
    db: Database,
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
        if db.dialect == "postgresql":
            params = {
                "p_id": uuid.uuid4(),
                "p_run_id": run_id,
                "p_parent_id": parent_task_id,
                "p_org_id": org_id,
                "p_type": type,
                "p_status": status.value,
                "p_input": input_data,
                "p_metadata": metadata,
                "p_max_retries": max_retries,
                "p_queue": queue,
                "p_key": idempotency_key,
                "p_now": now,
                "p_queued_at": now if status is TaskStatus.QUEUED else None,
            }
            row = await db.one(_create_statement(parent_task_id is not None), params)
            if row is None:  # nothing written: say why
                return await _not_created(db, org_id, run_id, type, parent_task_id, idempotency_key)
            seen = row.pop("options_last_seen")
            instruments.task_created(row)
            served = seen is not None and as_utc(seen) >= live_since(now)
            return CreatedTask(row=row, replayed=False, served=served)
        async with db.transaction(write=True) as tx:
            if parent_task_id is not None and not await task_belongs_to_run(
                tx, org_id=org_id, run_id=run_id, task_id=parent_task_id
            ):
                raise _not_of_run(parent_task_id, run_id)
            options = await tx.one(TYPE_OPTIONS, {"p_org_id": org_id, "p_type": type})
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
            # A repeated idempotency key meets the unique index here, which rolls this
            # transaction back: see the except clause.
            row = await tx.one(_INSERT_TASK, values)
            # The run is counted last: its row stays locked from here to the commit only,
            # which is what orders concurrent creates in one run. A run that is not this
            # organisation's, or that has finished, counts nothing, and raising below rolls
            # the insert back.
            counted = await tx.run(
                _COUNT_NEW_TASK, {"p_run_id": run_id, "p_org_id": org_id, "p_now": now}
            )
            if counted != 1:
                raise await _run_refused(tx, org_id, run_id)
        if row is None:
            raise RuntimeError("INSERT … RETURNING returned no row")
        instruments.task_created(row)
        served = options is not None and as_utc(options["last_seen_at"]) >= live_since(now)
        return CreatedTask(row=row, replayed=False, served=served)
    except IntegrityViolation:
        if idempotency_key is not None:
            # The key was used before (or by a concurrent create that won the unique
            # index): answer with its task, even if the run has finished since.
            existing = await _by_idempotency_key(db, org_id=org_id, key=idempotency_key)
            if existing is not None:
                return _replay(existing, run_id=run_id, type=type)
        if await db.one(GET_RUN, {"p_run_id": run_id, "p_org_id": org_id}) is None:
            raise run_not_found(run_id) from None  # the task's foreign key: no such run
        raise


@lru_cache(maxsize=2)
def _create_statement(with_parent: bool) -> sa.Select[Any]:
    """PostgreSQL: a task's creation as one statement that commits by itself: count it in
    its run (locking the run row, which orders creates in one run, and refusing a run
    that is not the caller's, has finished, or lacks the parent), then insert it with
    the options a worker registered for its type. Nothing is written unless both happen;
    a repeated idempotency key aborts the whole statement on the unique index."""
    options = TYPE_OPTIONS.cte("options")
    count = _COUNT_NEW_TASK
    if with_parent:
        count = count.where(
            sa.exists().where(
                tasks.c.id == sa.bindparam("p_parent_id"),
                tasks.c.run_id == sa.bindparam("p_run_id"),
                tasks.c.org_id == sa.bindparam("p_org_id"),
            )
        )
    counted = count.returning(runs.c.id).cte("counted")
    given_retries = sa.bindparam("p_max_retries", type_=tasks.c.max_retries.type)
    given_queue = sa.bindparam("p_queue", type_=tasks.c.queue.type)
    registered_retries = sa.select(options.c.max_retries).scalar_subquery()
    registered = sa.exists(sa.select(options.c.type))
    now = sa.bindparam("p_now", type_=tasks.c.created_at.type)
    columns = {
        "id": sa.bindparam("p_id", type_=tasks.c.id.type),
        "run_id": counted.c.id,
        "parent_task_id": sa.bindparam("p_parent_id", type_=tasks.c.parent_task_id.type),
        "org_id": sa.bindparam("p_org_id", type_=tasks.c.org_id.type),
        "type": sa.bindparam("p_type", type_=tasks.c.type.type),
        "status": sa.bindparam("p_status", type_=tasks.c.status.type),
        "input_data": sa.bindparam("p_input", type_=tasks.c.input_data.type),
        "metadata": sa.bindparam("p_metadata", type_=tasks.c.metadata.type),
        "retry_count": sa.literal(0),
        "max_retries": sa.func.coalesce(
            given_retries, registered_retries, sa.literal(DEFAULT_MAX_RETRIES)
        ),
        "max_retries_defaulted": sa.and_(given_retries.is_(None), registered_retries.is_(None)),
        "queue": sa.func.coalesce(
            given_queue,
            sa.select(options.c.queue).scalar_subquery(),
            sa.literal(DEFAULT_QUEUE),
        ),
        "queue_defaulted": sa.and_(given_queue.is_(None), sa.not_(registered)),
        "idempotency_key": sa.bindparam("p_key", type_=tasks.c.idempotency_key.type),
        "created_at": now,
        "updated_at": now,
        "queued_at": sa.bindparam("p_queued_at", type_=tasks.c.queued_at.type),
    }
    inserted = (
        tasks.insert()
        .from_select(list(columns), sa.select(*columns.values()).select_from(counted))
        .returning(tasks)
        .cte("inserted")
    )
    last_seen = sa.select(options.c.last_seen_at).scalar_subquery().label("options_last_seen")
    return sa.select(inserted, last_seen).add_cte(options).add_cte(counted)


async def _not_created(
    db: Database,
    org_id: str,
    run_id: uuid.UUID,
    type: str,
    parent_task_id: uuid.UUID | None,
    idempotency_key: str | None,
) -> CreatedTask:
    """Why a create wrote nothing: the earlier task of a repeated key (answered as it is,
    even if the run has finished since), a parent of another run, or the run's ``404`` or
    ``409``."""
    if idempotency_key is not None:
        existing = await _by_idempotency_key(db, org_id=org_id, key=idempotency_key)
        if existing is not None:
            return _replay(existing, run_id=run_id, type=type)
    if parent_task_id is not None and not await task_belongs_to_run(
        db, org_id=org_id, run_id=run_id, task_id=parent_task_id
    ):
        raise _not_of_run(parent_task_id, run_id)
    raise await _run_refused(db, org_id, run_id)


def _not_of_run(parent_task_id: uuid.UUID, run_id: uuid.UUID) -> Invalid:
    return Invalid(
        f"parentTaskId {parent_task_id} is not a task of run {run_id}",
        details=[{"field": "parentTaskId", "message": "not a task of this run"}],
    )


async def _run_refused(session: Session, org_id: str, run_id: uuid.UUID) -> NotFound | Conflict:
    """The ``404`` of a run that is not the caller's, or the ``409`` of a finished one."""
    run = await session.one(GET_RUN, {"p_run_id": run_id, "p_org_id": org_id})
    if run is None:
        return run_not_found(run_id)
    return Conflict(
        f"cannot create a task in run {run_id}: the run is {run['status']}", code="run_finished"
    )


def _option(given: Any, options: Row | None, name: str, default: Any) -> Any:
    """The value given, else the one a worker registered for the type, else ``default``."""
    if given is not None:
        return given
    registered = options[name] if options is not None else None
    return registered if registered is not None else default


async def _by_idempotency_key(session: Session, *, org_id: str, key: str) -> Row | None:
    return await session.one(_BY_IDEMPOTENCY_KEY, {"p_org_id": org_id, "p_key": key})


def _replay(existing: Row, *, run_id: uuid.UUID, type: str) -> CreatedTask:
    if existing["run_id"] != run_id or existing["type"] != type:
        raise Conflict(
            "idempotencyKey was already used for a task of another run or type",
            code="idempotency_conflict",
            details=[{"field": "idempotencyKey", "message": "already used"}],
        )
    return CreatedTask(row=existing, replayed=True, served=True)


async def get_task(db: Database, *, org_id: str, task_id: uuid.UUID) -> Row:
    row = await get_task_row(db, org_id=org_id, task_id=task_id)
    if row is None:
        raise task_not_found(task_id)
    return row


async def list_tasks(
    db: Database,
    *,
    org_id: str,
    run_id: uuid.UUID | None = None,
    parent_task_id: uuid.UUID | None = None,
    status: TaskStatus | None = None,
    type: str | None = None,
    limit: int,
    offset: int = 0,
    sort_by: TimeSortBy = "createdAt",
    sort_order: SortOrder = "asc",
    as_json: bool = False,
) -> RecordPage:
    """One page of tasks and the total matching, from one snapshot. Ties break on id.
    With ``as_json``, on PostgreSQL, the page is the response's JSON array written by the
    database (:mod:`.json_pages`) instead of rows.

    A ``run_id`` or ``parent_task_id`` filter naming nothing in ``org_id`` is a ``404``
    (another organisation's run is indistinguishable from no run), not an empty page.
    """
    page, count, json_page = _list_statements(
        run_id is not None,
        parent_task_id is not None,
        status is not None,
        type is not None,
        sort_by,
        sort_order,
    )
    params = {
        "p_org_id": org_id,
        "p_run_id": run_id,
        "p_parent_task_id": parent_task_id,
        "p_status": status.value if status is not None else None,
        "p_type": type,
        "p_limit": limit,
        "p_offset": offset,
    }
    # The common case is one statement: the page carries the total (one snapshot), and a
    # task of the page proves the filtered run or parent is the caller's.
    if as_json and db.dialect == "postgresql":
        built = await db.one(json_page, params)
        if built is not None and built["data"] is not None:
            return RecordPage([], int(built["total"]), built["data"])
    else:
        rows = await db.all(page, params)
        if rows:
            return RecordPage(rows, int(rows[0]["total"]))
    async with db.transaction(isolation="repeatable read") as tx:
        if run_id is not None and (
            await tx.one(GET_RUN, {"p_run_id": run_id, "p_org_id": org_id}) is None
        ):
            raise run_not_found(run_id)
        if parent_task_id is not None and (
            await get_task_row(tx, org_id=org_id, task_id=parent_task_id) is None
        ):
            raise task_not_found(parent_task_id)
        total = await tx.scalar(count, params)  # an offset past the end: still say how many
    return RecordPage([], int(total))


@lru_cache(maxsize=64)
def _list_statements(
    by_run: bool,
    by_parent: bool,
    by_status: bool,
    by_type: bool,
    sort_by: TimeSortBy,
    sort_order: SortOrder,
) -> tuple[sa.Select[Any], sa.Select[Any], sa.Select[Any]]:
    """The page (rows carry ``total``), count and PostgreSQL JSON page statements of a task
    list (built once)."""
    filters = {"run_id": by_run, "parent_task_id": by_parent, "status": by_status, "type": by_type}
    columns = ("org_id", *(column for column, present in filters.items() if present))
    page, count = paged_statements(tasks, columns, sort_by, sort_order)
    json_page = postgres_page(
        page,
        fields=_WIRE_FIELDS,
        times=_TIMES,
        order=[tasks.c[sort_column(sort_by)], tasks.c.id],
        descending=sort_order == "desc",
    )
    return page, count, json_page


_WIRE_FIELDS = wire_fields(Task)
_TIMES = time_fields(Task)
