"""SQL for the worker registry: which workers are alive, what they serve, with which options.

A ``foreman-worker`` registers itself on start and again every few seconds (its heartbeat):
its queues, what it is running, and its handlers with their ``@task`` options. The options
are kept per task type in ``task_types``, so that a task created by a process that never
imported the handler still gets the handler's queue and ``max_retries``; when a type's
options first appear or change, unfinished tasks of that type that only had defaults take
them too.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from foreman_api.clock import utcnow
from foreman_api.schemas import TaskStatus, WorkerRegistration
from foreman_api.storage.engine import single_read, write_transaction
from foreman_api.storage.tables import task_types, tasks, workers

LIVE_SECONDS = 30.0
"""A worker not seen for this long is not alive (it heartbeats every few seconds)."""

_NOT_STARTED = [TaskStatus.PENDING.value, TaskStatus.QUEUED.value, TaskStatus.RETRYING.value]
_UNFINISHED = [*_NOT_STARTED, TaskStatus.RUNNING.value]


def live_since(now: datetime) -> datetime:
    return now - timedelta(seconds=LIVE_SECONDS)


def _upsert(
    conn: sa.Connection, table: sa.Table, values: Mapping[str, Any], keys: Sequence[str]
) -> None:
    """INSERT, or UPDATE the row with the same ``keys`` (both backends' ON CONFLICT)."""
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    statement = dialect.insert(table).values(dict(values))
    changed = {name: statement.excluded[name] for name in values if name not in keys}
    conn.execute(statement.on_conflict_do_update(index_elements=list(keys), set_=changed))


def register_worker(
    engine: sa.Engine, *, org_id: str, worker_id: str, body: WorkerRegistration
) -> sa.RowMapping:
    """Insert or refresh a worker and the options of the task types it serves."""
    now = utcnow()
    handlers = [h.model_dump(mode="json", by_alias=True) for h in body.handlers]
    with write_transaction(engine) as conn:
        existing = conn.execute(
            sa.select(workers.c.started_at).where(
                workers.c.org_id == org_id, workers.c.id == worker_id
            )
        ).first()
        values = {
            "org_id": org_id,
            "id": worker_id,
            "hostname": body.hostname,
            "pid": body.pid,
            "queues": list(body.queues),
            "handlers": handlers,
            "current_task_id": str(body.current_task_id) if body.current_task_id else None,
            "started_at": existing.started_at if existing is not None else now,
            "last_seen_at": now,
        }
        _upsert(conn, workers, values, ("org_id", "id"))
        known = {
            row.type: row
            for row in conn.execute(
                sa.select(task_types).where(
                    task_types.c.org_id == org_id,
                    task_types.c.type.in_([h.type for h in body.handlers]),
                )
            )
        }
        for handler in body.handlers:
            option = {
                "org_id": org_id,
                "type": handler.type,
                "queue": handler.queue,
                "max_retries": handler.max_retries,
                "timeout": handler.timeout,
                "last_seen_at": now,
            }
            _upsert(conn, task_types, option, ("org_id", "type"))
            before = known.get(handler.type)
            if before is None or (before.queue, before.max_retries) != (
                handler.queue,
                handler.max_retries,
            ):
                _apply_type_options(conn, org_id=org_id, option=option)
        return (
            conn.execute(
                sa.select(workers).where(workers.c.org_id == org_id, workers.c.id == worker_id)
            )
            .mappings()
            .one()
        )


def _apply_type_options(conn: sa.Connection, *, org_id: str, option: Mapping[str, Any]) -> None:
    """Give unfinished tasks of the type that only had defaults the handler's options."""
    of_type = (tasks.c.org_id == org_id, tasks.c.type == option["type"])
    conn.execute(
        tasks.update()
        .where(*of_type, tasks.c.queue_defaulted, tasks.c.status.in_(_NOT_STARTED))
        .values(queue=option["queue"], queue_defaulted=False)
    )
    if option["max_retries"] is not None:
        conn.execute(
            tasks.update()
            .where(*of_type, tasks.c.max_retries_defaulted, tasks.c.status.in_(_UNFINISHED))
            .values(max_retries=option["max_retries"], max_retries_defaulted=False)
        )


TYPE_OPTIONS = sa.select(task_types).where(
    task_types.c.org_id == sa.bindparam("p_org_id"), task_types.c.type == sa.bindparam("p_type")
)
"""The registered options of a type in an organisation, if any worker ever declared them."""


def list_workers(engine: sa.Engine, *, org_id: str) -> Sequence[sa.RowMapping]:
    """The organisation's live workers, oldest first."""
    query = (
        sa.select(workers)
        .where(workers.c.org_id == org_id, workers.c.last_seen_at >= live_since(utcnow()))
        .order_by(workers.c.started_at, workers.c.id)
    )
    with single_read(engine) as conn:
        return conn.execute(query).mappings().all()


def delete_worker(engine: sa.Engine, *, org_id: str, worker_id: str) -> int:
    """Forget a worker (it stopped cleanly); returns how many rows went (0 or 1)."""
    with write_transaction(engine) as conn:
        result = conn.execute(
            workers.delete().where(workers.c.org_id == org_id, workers.c.id == worker_id)
        )
        return result.rowcount
