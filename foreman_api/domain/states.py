"""The run and task status machines, as data, and the rules that read them.

Tasks (anything not listed is an invalid transition, ``409 invalid_transition``)::

    pending  → queued, running, cancelled
    queued   → running, cancelled
    running  → completed, failed, retrying, cancelled
    retrying → queued, running, failed, cancelled
    completed, failed, cancelled: terminal

Runs::

    pending → running, cancelled
    running → completed, failed, cancelled
    completed, failed, cancelled: terminal

A run also moves ``pending → running`` by itself when its first task starts. PATCHing a run
to the status it already has is accepted as a no-op for the status (see
:func:`check_run_transition`); tasks have no such leniency except the idempotent claim,
which the storage layer recognises by its ``queueJobId``.
"""

from __future__ import annotations

from collections.abc import Mapping

from foreman_api.domain.errors import Conflict
from foreman_api.schemas import (
    TERMINAL_RUN_STATUSES,
    TERMINAL_TASK_STATUSES,
    RunStatus,
    TaskStatus,
)

INVALID_TRANSITION = "invalid_transition"

TASK_TRANSITIONS: Mapping[TaskStatus, frozenset[TaskStatus]] = {
    TaskStatus.PENDING: frozenset({TaskStatus.QUEUED, TaskStatus.RUNNING, TaskStatus.CANCELLED}),
    TaskStatus.QUEUED: frozenset({TaskStatus.RUNNING, TaskStatus.CANCELLED}),
    TaskStatus.RUNNING: frozenset(
        {TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.RETRYING, TaskStatus.CANCELLED}
    ),
    TaskStatus.RETRYING: frozenset(
        {TaskStatus.QUEUED, TaskStatus.RUNNING, TaskStatus.FAILED, TaskStatus.CANCELLED}
    ),
    TaskStatus.COMPLETED: frozenset(),
    TaskStatus.FAILED: frozenset(),
    TaskStatus.CANCELLED: frozenset(),
}

RUN_TRANSITIONS: Mapping[RunStatus, frozenset[RunStatus]] = {
    RunStatus.PENDING: frozenset({RunStatus.RUNNING, RunStatus.CANCELLED}),
    RunStatus.RUNNING: frozenset({RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED}),
    RunStatus.COMPLETED: frozenset(),
    RunStatus.FAILED: frozenset(),
    RunStatus.CANCELLED: frozenset(),
}

UNFINISHED_TASK_STATUSES = frozenset(TaskStatus) - TERMINAL_TASK_STATUSES
"""Statuses a task leaves when its run is cancelled."""

_TASK_SOURCES: Mapping[TaskStatus, frozenset[TaskStatus]] = {
    target: frozenset(s for s, targets in TASK_TRANSITIONS.items() if target in targets)
    for target in TaskStatus
}


def task_sources(target: TaskStatus) -> frozenset[TaskStatus]:
    """The statuses from which a task may move to ``target`` (the compare-and-set guard)."""
    return _TASK_SOURCES[target]


def is_terminal_task(status: TaskStatus) -> bool:
    return status in TERMINAL_TASK_STATUSES


def is_terminal_run(status: RunStatus) -> bool:
    return status in TERMINAL_RUN_STATUSES


def invalid_transition(kind: str, current: str, target: str) -> Conflict:
    """The ``409`` for a refused move; the message names both statuses."""
    allowed = (
        TASK_TRANSITIONS[TaskStatus(current)]
        if kind == "task"
        else RUN_TRANSITIONS[RunStatus(current)]
    )
    if allowed:
        hint = "allowed from " + current + ": " + ", ".join(sorted(allowed))
    else:
        hint = f"{current} is terminal"
    return Conflict(
        f"cannot move {kind} from {current} to {target} ({hint})",
        code=INVALID_TRANSITION,
        details=[{"field": "status", "message": f"{current} -> {target} is not allowed"}],
    )


def check_run_transition(current: RunStatus, target: RunStatus) -> bool:
    """Whether a PATCH moves the run; raises the ``409`` for an illegal move.

    Setting the status a run already has is a no-op (returns False): a client that retries
    "complete this run" after a lost response gets ``200``, and timestamps are not reset.
    Leaving a terminal status, or any move outside :data:`RUN_TRANSITIONS`, is a ``409``.
    """
    if current == target:
        return False
    if target not in RUN_TRANSITIONS[current]:
        raise invalid_transition("run", current, target)
    return True


def task_counter(target: TaskStatus) -> str | None:
    """The run counter a task's move to ``target`` raises, if any.

    ``completed`` counts in ``completedTasks``, ``failed`` in ``failedTasks``, ``cancelled``
    in ``cancelledTasks`` (cancelling is not failing).
    """
    if target is TaskStatus.COMPLETED:
        return "completed_tasks"
    if target is TaskStatus.FAILED:
        return "failed_tasks"
    if target is TaskStatus.CANCELLED:
        return "cancelled_tasks"
    return None


def task_touches_run(target: TaskStatus) -> bool:
    """Whether a task's move to ``target`` may change its run: a claim may start it, a
    finished task raises a counter and may finish it (see ``runs.auto_complete``)."""
    return target is TaskStatus.RUNNING or is_terminal_task(target)


STALE_CLAIM = "stale_claim"
TASK_FINISHED = "task_finished"
RETRY_NOT_DUE = "retry_not_due"


def stale_claim(task_id: object, job_id: str, *, status: str, holder: str | None) -> Conflict:
    """The ``409`` for a fenced write whose job no longer holds the task's claim."""
    holder = holder if status == TaskStatus.RUNNING else None
    now_held = f"held by job {holder}" if holder else f"{status}, not claimed"
    return Conflict(
        f"job {job_id} no longer holds the claim on task {task_id} (the task is {now_held}); "
        "this attempt's result is not recorded",
        code=STALE_CLAIM,
        details=[{"field": "queueJobId", "message": "does not hold the current claim"}],
    )


def task_finished(task_id: object, status: str) -> Conflict:
    """The ``409`` for any change to a task in a terminal status."""
    return Conflict(
        f"task {task_id} is {status}: a finished task cannot be changed",
        code=TASK_FINISHED,
        details=[{"field": "status", "message": f"{status} is terminal"}],
    )


def retry_not_due(task_id: object, retry_at: str) -> Conflict:
    """The ``409`` for a claim of a ``retrying`` task before its backoff ends."""
    return Conflict(
        f"task {task_id} may not be retried before {retry_at}",
        code=RETRY_NOT_DUE,
        details=[{"field": "retryAt", "message": retry_at}],
    )
