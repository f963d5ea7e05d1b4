"""SQL for the worker registry: which workers are alive, what they serve, with which options.

A ``foreman-worker`` registers itself on start and again every few seconds (its heartbeat):
its queues, what it is running, and its handlers with their ``@task`` options. The options
are kept per task type in ``task_types``, so that a task created by a process that never
imported the handler still gets the handler's queue and ``max_retries``; when a type's
options first appear or change, unfinished tasks of that type that only had defaults take
them too. Everything here runs on the request path's :class:`~foreman_api.db.Database`.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from foreman_api.clock import utcnow
from foreman_api.db import Database, Session
from foreman_api.db.base import Row
from foreman_api.schemas import TaskStatus, WorkerRegistration
from foreman_api.storage.tables import task_types, tasks, workers

LIVE_SECONDS = 30.0
"""A worker not seen for this long is not alive (it heartbeats every few seconds)."""

_NOT_STARTED = [TaskStatus.PENDING.value, TaskStatus.QUEUED.value, TaskStatus.RETRYING.value]
_UNFINISHED = [*_NOT_STARTED, TaskStatus.RUNNING.value]

# Built once with bound parameters (building a statement per request costs about as much
# CPU as executing it).
_WORKER_BY_ID = (workers.c.org_id == sa.bindparam("p_org_id"), workers.c.id == sa.bindparam("p_id"))
_WORKER_REFRESHED = ("hostname", "pid", "queues", "handlers", "current_task_id", "last_seen_at")
"""What a repeated registration changes (``started_at`` stays the first registration's)."""
_TYPE_REFRESHED = ("queue", "max_retries", "timeout", "last_seen_at")
_LIVE_WORKERS = (
    sa.select(workers)
    .where(
        workers.c.org_id == sa.bindparam("p_org_id"),
        workers.c.last_seen_at >= sa.bindparam("p_since", type_=workers.c.last_seen_at.type),
    )
    .order_by(workers.c.started_at, workers.c.id)
)
_DELETE_WORKER = workers.delete().where(*_WORKER_BY_ID)
_OF_TYPE = (tasks.c.org_id == sa.bindparam("p_org_id"), tasks.c.type == sa.bindparam("p_type"))
_ADOPT_QUEUE = (
    tasks.update()
    .where(*_OF_TYPE, tasks.c.queue_defaulted, tasks.c.status.in_(_NOT_STARTED))
    .values(queue=sa.bindparam("p_queue", type_=tasks.c.queue.type), queue_defaulted=False)
)
_ADOPT_MAX_RETRIES = (
    tasks.update()
    .where(*_OF_TYPE, tasks.c.max_retries_defaulted, tasks.c.status.in_(_UNFINISHED))
    .values(
        max_retries=sa.bindparam("p_max_retries", type_=tasks.c.max_retries.type),
        max_retries_defaulted=False,
    )
)
TYPE_OPTIONS = sa.select(task_types).where(
    task_types.c.org_id == sa.bindparam("p_org_id"), task_types.c.type == sa.bindparam("p_type")
)
"""The registered options of a type in an organisation, if any worker ever declared them."""


def live_since(now: datetime) -> datetime:
    return now - timedelta(seconds=LIVE_SECONDS)


@lru_cache(maxsize=8)
def _upsert_statement(
    dialect: str, table: sa.Table, keys: tuple[str, ...], refreshed: tuple[str, ...]
) -> Any:
    """INSERT the columns the parameters name or, when a row with the same ``keys`` exists,
    UPDATE its ``refreshed`` columns to the new values (both backends' ON CONFLICT);
    returning the row."""
    insert = (postgresql if dialect == "postgresql" else sqlite).insert(table)
    changed = {name: insert.excluded[name] for name in refreshed}
    return insert.on_conflict_do_update(index_elements=list(keys), set_=changed).returning(table)


@lru_cache(maxsize=64)
def _known_types_statement(count: int) -> sa.Select[Any]:
    """The registered options of ``count`` types (``p_type_0`` …) in ``p_org_id``."""
    names = [sa.bindparam(f"p_type_{i}", type_=task_types.c.type.type) for i in range(count)]
    return sa.select(task_types).where(
        task_types.c.org_id == sa.bindparam("p_org_id"), task_types.c.type.in_(names)
    )


async def register_worker(
    db: Database, *, org_id: str, worker_id: str, body: WorkerRegistration
) -> Row:
    """Insert or refresh a worker and the options of the task types it serves."""
    now = utcnow()
    handlers = [h.model_dump(mode="json", by_alias=True) for h in body.handlers]
    values = {
        "org_id": org_id,
        "id": worker_id,
        "hostname": body.hostname,
        "pid": body.pid,
        "queues": list(body.queues),
        "handlers": handlers,
        "current_task_id": str(body.current_task_id) if body.current_task_id else None,
        "started_at": now,  # a repeated registration keeps the first one's
        "last_seen_at": now,
    }
    types = [handler.type for handler in body.handlers]
    async with db.transaction(write=True) as tx:
        upsert = _upsert_statement(tx.dialect, workers, ("org_id", "id"), _WORKER_REFRESHED)
        row = await tx.one(upsert, values)
        if row is None:
            raise RuntimeError("INSERT … RETURNING returned no row")
        known: dict[str, Row] = {}
        if types:
            params = {"p_org_id": org_id, **{f"p_type_{i}": t for i, t in enumerate(types)}}
            rows = await tx.all(_known_types_statement(len(types)), params)
            known = {option["type"]: option for option in rows}
        upsert = _upsert_statement(tx.dialect, task_types, ("org_id", "type"), _TYPE_REFRESHED)
        for handler in body.handlers:
            option = {
                "org_id": org_id,
                "type": handler.type,
                "queue": handler.queue,
                "max_retries": handler.max_retries,
                "timeout": handler.timeout,
                "last_seen_at": now,
            }
            await tx.one(upsert, option)
            before = known.get(handler.type)
            if before is None or (before["queue"], before["max_retries"]) != (
                handler.queue,
                handler.max_retries,
            ):
                await _apply_type_options(tx, org_id=org_id, option=option)
    return row


async def _apply_type_options(session: Session, *, org_id: str, option: Mapping[str, Any]) -> None:
    """Give unfinished tasks of the type that only had defaults the handler's options."""
    of_type = {"p_org_id": org_id, "p_type": option["type"]}
    await session.run(_ADOPT_QUEUE, {**of_type, "p_queue": option["queue"]})
    if option["max_retries"] is not None:
        await session.run(_ADOPT_MAX_RETRIES, {**of_type, "p_max_retries": option["max_retries"]})


async def list_workers(db: Database, *, org_id: str) -> list[Row]:
    """The organisation's live workers, oldest first."""
    return await db.all(_LIVE_WORKERS, {"p_org_id": org_id, "p_since": live_since(utcnow())})


async def delete_worker(db: Database, *, org_id: str, worker_id: str) -> int:
    """Forget a worker (it stopped cleanly); returns how many rows went (0 or 1)."""
    return await db.run(_DELETE_WORKER, {"p_org_id": org_id, "p_id": worker_id})


_UNFINISHED_BY_QUEUE = (
    sa.select(tasks.c.queue, tasks.c.status, sa.func.count().label("tasks"))
    .where(
        tasks.c.org_id == sa.bindparam("p_org_id"),
        tasks.c.status.in_(
            [s.value for s in (TaskStatus.QUEUED, TaskStatus.RETRYING, TaskStatus.RUNNING)]
        ),
    )
    .group_by(tasks.c.queue, tasks.c.status)
)


async def queue_depths(db: Database, *, org_id: str) -> list[dict[str, Any]]:
    """Per queue (those with unfinished tasks or live workers): tasks queued, retrying and
    running, and the live workers that consume it; by queue name."""
    counts = await db.all(_UNFINISHED_BY_QUEUE, {"p_org_id": org_id})
    live = await list_workers(db, org_id=org_id)
    depths: dict[str, dict[str, Any]] = {}

    def of(queue: str) -> dict[str, Any]:
        empty = {"queue": queue, "queued": 0, "retrying": 0, "running": 0, "workers": 0}
        return depths.setdefault(queue, empty)

    for row in counts:
        of(row["queue"])[row["status"]] = row["tasks"]
    for worker in live:
        for queue in worker["queues"]:
            of(queue)["workers"] += 1
    return [depths[name] for name in sorted(depths)]
