"""SQL for changing tasks: the claim, fenced writes, leases, and the status machine.

**The claim is the lock.** Every status change is one ``UPDATE … WHERE id = :id AND
org_id = :org AND status IN (:allowed sources) … RETURNING *``: of two concurrent claims the
database lets exactly one match. Only when nothing matched is the row read again, to tell
``404`` from ``409`` and to recognise the idempotent repeat of a request whose response
was lost.

**Fencing.** Only a claim sets ``queue_job_id``. Any other write that carries a job id adds
``AND status = 'running' AND queue_job_id = :job`` to its ``UPDATE``: a worker that lost
its claim (its lease expired while it was paused, the task was cancelled or re-run
elsewhere) changes nothing and gets ``409 stale_claim``. A terminal task is never changed.

Counters on the run move by atomic increments with the task change. On PostgreSQL a move
is one statement (:func:`move_statement`): the task's compare-and-set, then its run's
counter only if the task moved, so the task row is locked before the run row — the lock
order of :mod:`foreman_api.storage.runs`. On SQLite (one writer at a time) the run is
updated first in a transaction (:func:`touch_run`), and a failed compare-and-set rolls the
counter back.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any

import sqlalchemy as sa

from foreman_api.clock import as_utc, utcnow
from foreman_api.db import Database, Session
from foreman_api.db.base import Row
from foreman_api.domain.errors import Invalid
from foreman_api.domain.states import (
    invalid_transition,
    is_terminal_task,
    retry_not_due,
    stale_claim,
    task_counter,
    task_finished,
    task_sources,
    task_touches_run,
)
from foreman_api.metrics import instruments
from foreman_api.schemas import RunStatus, TaskStatus, format_timestamp
from foreman_api.storage import attempts
from foreman_api.storage.rows import elapsed_ms_sql
from foreman_api.storage.tables import runs, tasks
from foreman_api.storage.tasks import get_task_row, task_not_found

_BY_ID = (
    tasks.c.id == sa.bindparam("p_task_id"),
    tasks.c.org_id == sa.bindparam("p_org_id"),
)
_HELD_BY_JOB = (
    tasks.c.status == TaskStatus.RUNNING.value,
    tasks.c.queue_job_id == sa.bindparam("p_job_id"),
)
_UNFINISHED = tasks.c.status.not_in([s.value for s in TaskStatus if is_terminal_task(s)])
_NOW = sa.bindparam("p_now", type_=tasks.c.updated_at.type)
_RENEW_LEASE = (
    tasks.update()
    .where(*_BY_ID, *_HELD_BY_JOB)
    .values(lease_expires_at=sa.bindparam("p_lease_expires_at", type_=tasks.c.updated_at.type))
    .returning(tasks)
)


def _run_started(run_of_task: Any) -> sa.Update:
    """The run's first claim starts it: ``pending`` → ``running`` (nothing otherwise)."""
    now = sa.bindparam("p_now", type_=runs.c.updated_at.type)
    return (
        runs.update()
        .where(
            runs.c.id == run_of_task,
            runs.c.org_id == sa.bindparam("p_org_id"),
            runs.c.status == RunStatus.PENDING.value,
        )
        .values(status=RunStatus.RUNNING.value, started_at=now, updated_at=now)
    )


@lru_cache(maxsize=16)
def _touch_run_statement(target: TaskStatus, dialect: str) -> sa.Update:
    """The run-side UPDATE of a task's move to ``target`` (see :func:`touch_run`)."""
    return _run_update(target, dialect, sa.select(tasks.c.run_id).where(*_BY_ID).scalar_subquery())


def _run_update(target: TaskStatus, dialect: str, run_of_task: Any) -> sa.Update:
    """What a task's move to ``target`` does to the run whose id ``run_of_task`` gives."""
    counter = task_counter(target)
    if counter is None:
        return _run_started(run_of_task)
    statement = runs.update().where(
        runs.c.id == run_of_task, runs.c.org_id == sa.bindparam("p_org_id")
    )
    now = sa.bindparam("p_now", type_=runs.c.updated_at.type)
    counted = {
        name: runs.c[name] + (1 if name == counter else 0)
        for name in ("completed_tasks", "failed_tasks", "cancelled_tasks")
    }
    # This task was the run's last unfinished one: the run finishes by itself (if it asked
    # to). Counted on the run's own row, which this UPDATE locks and, under concurrent
    # moves, re-reads at its newest version: exactly one of them sees the total reached.
    settles = sa.and_(
        runs.c.auto_complete,
        runs.c.status.in_([RunStatus.PENDING.value, RunStatus.RUNNING.value]),
        runs.c.total_tasks == sum(counted.values(), sa.literal(0)),
    )
    finished_as = sa.case(
        (counted["failed_tasks"] > 0, RunStatus.FAILED.value),
        (counted["completed_tasks"] > 0, RunStatus.COMPLETED.value),
        else_=RunStatus.CANCELLED.value,
    )
    return statement.values(
        {
            counter: counted[counter],
            "updated_at": now,
            "status": sa.case((settles, finished_as), else_=runs.c.status),
            "completed_at": sa.case((settles, now), else_=runs.c.completed_at),
            "duration_ms": sa.case(
                (settles, elapsed_ms_sql(dialect, start=runs.c.started_at, end=now)),
                else_=runs.c.duration_ms,
            ),
            "auto_completed": sa.case((settles, sa.true()), else_=runs.c.auto_completed),
        }
    )


async def touch_run(
    session: Session, *, org_id: str, task_id: uuid.UUID, target: TaskStatus, now: Any
) -> None:
    """Apply what the task's move does to its run, before the task itself changes (SQLite,
    whose writers are serialised anyway; PostgreSQL does it in :func:`move_statement`).

    A move to a finished status raises a counter (completed, failed or cancelled), which
    locks the run row, so such moves of one run are serialised with each other and with a
    run PATCH. When the counters then add up to the
    run's total, that was its last unfinished task and the run finishes by itself in the
    same statement (``auto_complete``; see ``POST /runs``). A claim starts a run that is
    still ``pending``; once the run is running the statement matches nothing, takes no
    lock, and claims of one run proceed in parallel.
    """
    if task_touches_run(target):
        await session.run(
            _touch_run_statement(target, session.dialect),
            {"p_task_id": task_id, "p_org_id": org_id, "p_now": now},
        )


@lru_cache(maxsize=512)
def transition_statement(
    target: TaskStatus,
    changed: tuple[str, ...],
    dialect: str,
    *,
    fenced: bool = False,
    lease_expired: bool = False,
) -> sa.Update:
    """The compare-and-set UPDATE moving a task to ``target`` and setting ``changed``.

    Built once per shape; values are bound at execution: ``p_task_id``, ``p_org_id``,
    ``p_now``, ``v_<column>`` per changed column, ``p_job_id`` when ``fenced`` (the write
    applies only while that job holds the claim), and for ``retrying`` ``p_retry_at``.
    ``lease_expired`` matches only a task whose lease ended before ``p_now``.
    """
    values: dict[str, Any] = {
        name: sa.bindparam(f"v_{name}", type_=tasks.c[name].type) for name in changed
    }
    values["status"] = target.value
    values["updated_at"] = _NOW
    if target is not TaskStatus.RUNNING:
        values["lease_expires_at"] = None
        values["retry_at"] = None
    if target is TaskStatus.QUEUED:
        values["queued_at"] = _NOW
    elif target is TaskStatus.RUNNING:
        values["started_at"] = _NOW
        values["retry_at"] = None
        values["attempt_count"] = tasks.c.attempt_count + 1
    elif target is TaskStatus.RETRYING:
        values["retry_count"] = tasks.c.retry_count + 1
        values["retry_at"] = sa.bindparam("p_retry_at", type_=tasks.c.retry_at.type)
    elif is_terminal_task(target):
        if target is TaskStatus.COMPLETED and "error_data" not in changed:
            values["error_data"] = None  # an earlier attempt's error stays in its attempt
        values["completed_at"] = _NOW
        values["duration_ms"] = elapsed_ms_sql(dialect, start=tasks.c.started_at, end=_NOW)
    where = [*_BY_ID, tasks.c.status.in_([s.value for s in task_sources(target)])]
    if target is TaskStatus.RUNNING:
        # A retrying task waits out its backoff: claimed exactly when due, never earlier.
        where.append(sa.or_(tasks.c.retry_at.is_(None), tasks.c.retry_at <= _NOW))
    if fenced:
        where.extend(_HELD_BY_JOB)
    if lease_expired:
        where.extend([tasks.c.status == TaskStatus.RUNNING.value, tasks.c.lease_expires_at < _NOW])
    return tasks.update().where(*where).values(values).returning(tasks)


async def move_task(
    session: Session,
    target: TaskStatus,
    changed: tuple[str, ...],
    params: dict[str, Any],
    *,
    fenced: bool = False,
    lease_expired: bool = False,
) -> Row | None:
    """SQLite: run the compare-and-set move of :func:`transition_statement` in the
    caller's transaction and record it in the task's attempt history
    (:mod:`foreman_api.storage.attempts`); the moved task, or None when nothing matched.
    PostgreSQL runs a move as one statement instead (:func:`move_statement`)."""
    statement = transition_statement(
        target, changed, session.dialect, fenced=fenced, lease_expired=lease_expired
    )
    error = "error_data" in changed
    row = await session.one(statement, params)
    if row is not None:
        await attempts.record_after_move(session, target, params, error=error)
    return row


@lru_cache(maxsize=256)
def move_statement(
    target: TaskStatus, changed: tuple[str, ...], *, fenced: bool, lease_expired: bool = False
) -> sa.Select[Any]:
    """PostgreSQL: a task's move as one statement that commits by itself: the task's
    compare-and-set, its attempt step, and what the move does to the run (a claim starts a
    pending run; a finished task raises a counter and may finish the run), the run's part
    only if the task moved. One round trip instead of four (BEGIN, the run, the task,
    COMMIT), and the run row stays locked only from the end of the statement to its commit.

    The task row is locked before the run row: the lock order of
    :mod:`foreman_api.storage.runs`, which a run PATCH that finishes the run follows too.
    ``lease_expired`` as for :func:`transition_statement`."""
    move = transition_statement(
        target, changed, "postgresql", fenced=fenced, lease_expired=lease_expired
    )
    moved = move.cte("moved")
    statement = sa.select(moved).add_cte(
        attempts.step(moved, target, error="error_data" in changed)
    )
    if task_touches_run(target):
        run_of_task = sa.select(moved.c.run_id).scalar_subquery()
        statement = statement.add_cte(_run_update(target, "postgresql", run_of_task).cte("run"))
    return statement


@lru_cache(maxsize=64)
def _fields_statement(changed: tuple[str, ...], *, fenced: bool) -> sa.Update:
    """UPDATE of fields without a status move: unfinished tasks only, fenced if asked."""
    values: dict[str, Any] = {
        name: sa.bindparam(f"v_{name}", type_=tasks.c[name].type) for name in changed
    }
    values["updated_at"] = _NOW
    where = [*_BY_ID, _UNFINISHED, *(_HELD_BY_JOB if fenced else ())]
    return tasks.update().where(*where).values(values).returning(tasks)


def _check_options(
    status: TaskStatus | None,
    lease_seconds: float | None,
    retry_delay: float | None,
    worker_id: str | None,
) -> None:
    for field, value in (("leaseSeconds", lease_seconds), ("workerId", worker_id)):
        if value is not None and status is not TaskStatus.RUNNING:
            raise Invalid(
                f"{field} applies only to a claim (status 'running')",
                details=[{"field": field, "message": "only with status 'running'"}],
            )
    if retry_delay is not None and status is not TaskStatus.RETRYING:
        raise Invalid(
            "retryDelay applies only to a move to 'retrying'",
            details=[{"field": "retryDelay", "message": "only with status 'retrying'"}],
        )


async def update_task(
    db: Database,
    *,
    org_id: str,
    task_id: uuid.UUID,
    status: TaskStatus | None,
    changes: Mapping[str, Any],
    lease_seconds: float | None = None,
    retry_delay: float | None = None,
    worker_id: str | None = None,
) -> Row:
    """Apply a PATCH: ``changes`` (column → value) and, if given, a status transition.

    ``changes`` may hold ``queue_job_id``: with ``status`` running it is the claim's job id
    (the only way it is ever set); otherwise it fences the write (see the module docstring).
    Transitions set ``queued_at`` (→ queued) and ``started_at`` (→ running) to the time of
    that move; a move to a terminal status sets ``completed_at`` and ``duration_ms``; each
    move to ``retrying`` adds one to ``retry_count`` and sets ``retry_at`` to now plus
    ``retry_delay``. A claim with ``lease_seconds`` holds a lease until renewed by
    :func:`renew_lease`; leaving ``running`` ends it. Each claim opens an attempt (of
    ``worker_id``, if given) that the next move closes (:mod:`~foreman_api.storage.attempts`).
    """
    _check_options(status, lease_seconds, retry_delay, worker_id)
    now = utcnow()
    values = dict(changes)
    job_id: str | None = values.pop("queue_job_id", None)
    params: dict[str, Any] = {f"v_{name}": value for name, value in values.items()}
    params.update(
        p_task_id=task_id, p_org_id=org_id, p_now=now, p_job_id=job_id, p_worker_id=worker_id
    )
    if status is TaskStatus.RUNNING:
        lease = now + timedelta(seconds=lease_seconds) if lease_seconds is not None else None
        values.update(queue_job_id=job_id, lease_expires_at=lease)
        params.update(v_queue_job_id=job_id, v_lease_expires_at=lease)
    if status is TaskStatus.RETRYING:
        params["p_retry_at"] = now + timedelta(seconds=retry_delay or 0.0)
    fenced = job_id is not None and status is not TaskStatus.RUNNING
    try:
        return await _apply(db, status, values, params, fenced=fenced)
    except _NothingMatched as refused:
        current = refused.current  # raised inside the transaction: a counter moved is undone
    return _refused(current, task_id=task_id, status=status, job_id=job_id, now=now)


class _NothingMatched(Exception):
    def __init__(self, current: Row) -> None:
        self.current = current


async def _apply(
    db: Database,
    status: TaskStatus | None,
    values: dict[str, Any],
    params: dict[str, Any],
    *,
    fenced: bool,
) -> Row:
    """Run the PATCH's UPDATE; raise :class:`_NothingMatched` (rolling back) if it missed.
    A status move is counted in the metrics once committed."""
    org_id, task_id, now = params["p_org_id"], params["p_task_id"], params["p_now"]
    if status is None and not values:
        return await _current(db, org_id=org_id, task_id=task_id)
    if status is not None and db.dialect == "postgresql":
        row = await db.one(move_statement(status, tuple(sorted(values)), fenced=fenced), params)
        if row is None:  # the statement changed nothing
            raise _NothingMatched(await _current(db, org_id=org_id, task_id=task_id))
        instruments.task_moved(row)
        return row
    async with db.transaction(write=True) as tx:
        if status is None:
            statement = _fields_statement(tuple(sorted(values)), fenced=fenced)
            row = await tx.one(statement, params)
        else:
            await touch_run(tx, org_id=org_id, task_id=task_id, target=status, now=now)
            row = await move_task(tx, status, tuple(sorted(values)), params, fenced=fenced)
        if row is None:
            raise _NothingMatched(await _current(tx, org_id=org_id, task_id=task_id))
    if status is not None:
        instruments.task_moved(row)
    return row


def _refused(
    current: Row,
    *,
    task_id: uuid.UUID,
    status: TaskStatus | None,
    job_id: str | None,
    now: datetime,
) -> Row:
    """Why a write matched nothing: the repeat of a request that already landed (answered
    with the task as it is), or the ``409`` that says what stands in the way."""
    state = TaskStatus(current["status"])
    same_job = job_id is not None and job_id == current["queue_job_id"]
    if status is not None and state is status and same_job:
        return current  # e.g. a claim or a completion retried after its response was lost
    if status is TaskStatus.RUNNING:
        retry_at = current["retry_at"]
        if state is TaskStatus.RETRYING and retry_at is not None and as_utc(retry_at) > now:
            raise retry_not_due(task_id, format_timestamp(retry_at))
        raise invalid_transition("task", state, status)
    if job_id is not None and not (state is TaskStatus.RUNNING and same_job):
        raise stale_claim(task_id, job_id, status=current["status"], holder=current["queue_job_id"])
    if status is None:
        raise task_finished(task_id, state)
    raise invalid_transition("task", state, status)


async def _current(session: Session, *, org_id: str, task_id: uuid.UUID) -> Row:
    row = await get_task_row(session, org_id=org_id, task_id=task_id)
    if row is None:
        raise task_not_found(task_id)
    return row


async def renew_lease(
    db: Database, *, org_id: str, task_id: uuid.UUID, job_id: str, lease_seconds: float
) -> Row:
    """Extend the lease of a running task held by ``job_id``; ``409 stale_claim`` if it is not."""
    now = utcnow()
    params = {
        "p_task_id": task_id,
        "p_org_id": org_id,
        "p_job_id": job_id,
        "p_lease_expires_at": now + timedelta(seconds=lease_seconds),
    }
    async with db.transaction(write=True) as tx:
        row = await tx.one(_RENEW_LEASE, params)
        if row is not None:
            return row
        current = await _current(tx, org_id=org_id, task_id=task_id)
    raise stale_claim(task_id, job_id, status=current["status"], holder=current["queue_job_id"])
