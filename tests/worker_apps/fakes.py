"""An in-memory stand-in for ForemanClient: the task state machine and run data, no HTTP."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from foreman_api.schemas import Page, Pagination, RunData, Task, TaskStatus
from foreman_worker.result import ApiErrorInfo, Result

ALLOWED = {
    TaskStatus.PENDING: {TaskStatus.QUEUED, TaskStatus.RUNNING, TaskStatus.CANCELLED},
    TaskStatus.QUEUED: {TaskStatus.RUNNING, TaskStatus.CANCELLED},
    TaskStatus.RUNNING: {
        TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.RETRYING, TaskStatus.CANCELLED
    },
    TaskStatus.RETRYING: {
        TaskStatus.QUEUED, TaskStatus.RUNNING, TaskStatus.FAILED, TaskStatus.CANCELLED
    },
}


def _now() -> datetime:
    return datetime.now(UTC)


def _error(status: int, code: str, message: str) -> Result[Any]:
    return Result.fail(ApiErrorInfo(status, code, message))


class FakeClient:
    def __init__(self) -> None:
        self.tasks: dict[str, Task] = {}
        self.data: list[RunData] = []
        self.calls: list[tuple[str, Any]] = []
        self.run_id = uuid.uuid4()

    def add_task(self, type: str, input_data: Any = None, **fields: Any) -> Task:
        now = _now()
        task = Task(
            id=uuid.uuid4(), run_id=self.run_id, org_id="org", type=type,
            status=fields.pop("status", TaskStatus.QUEUED), input_data=input_data,
            retry_count=fields.pop("retry_count", 0), max_retries=fields.pop("max_retries", 3),
            created_at=now, updated_at=now, **fields,
        )
        self.tasks[str(task.id)] = task
        return task

    def get_task(self, task_id: Any) -> Result[Task]:
        self.calls.append(("get_task", str(task_id)))
        task = self.tasks.get(str(task_id))
        return Result.ok(task) if task else _error(404, "not_found", "no such task")

    def create_task(self, run_id: Any, type: str, *, input_data: Any = None,
                    parent_task_id: Any = None, metadata: Any = None,
                    max_retries: int | None = None, queue: str | None = None,
                    status: TaskStatus = TaskStatus.PENDING,
                    idempotency_key: str | None = None) -> Result[Task]:
        self.calls.append(("create_task", type))
        task = self.add_task(
            type, input_data, status=TaskStatus(status), queue=queue or "default",
            max_retries=3 if max_retries is None else max_retries,
            parent_task_id=uuid.UUID(str(parent_task_id)) if parent_task_id else None,
            metadata=metadata,
        )
        return Result.ok(task)

    def update_task(self, task_id: Any, **fields: Any) -> Result[Task]:
        self.calls.append(("update_task", fields))
        task = self.tasks.get(str(task_id))
        if task is None:
            return _error(404, "not_found", "no such task")
        changes: dict[str, Any] = {}
        status = fields.get("status")
        if status is not None:
            status = TaskStatus(status)
            same_claim = (
                status == TaskStatus.RUNNING and task.status == TaskStatus.RUNNING
                and fields.get("queue_job_id") == task.queue_job_id
            )
            if not same_claim and status not in ALLOWED.get(task.status, set()):
                return _error(409, "conflict", f"cannot move from {task.status} to {status}")
            changes["status"] = status
            if status == TaskStatus.RETRYING:
                changes["retry_count"] = task.retry_count + 1
        for name in ("output_data", "error_data", "metadata", "queue_job_id"):
            if name in fields:
                changes[name] = fields[name]
        task = task.model_copy(update=changes)
        self.tasks[str(task_id)] = task
        return Result.ok(task)

    def create_run_data(self, run_id: Any, key: str, value: Any, *, task_id: Any = None,
                        tags: Any = None, metadata: Any = None) -> Result[RunData]:
        now = _now()
        entry = RunData(
            id=uuid.uuid4(), run_id=uuid.UUID(str(run_id)),
            task_id=uuid.UUID(str(task_id)) if task_id else None, org_id="org", key=key,
            value=value, tags=list(tags or []), metadata=metadata, created_at=now, updated_at=now,
        )
        self.data.append(entry)
        return Result.ok(entry)

    def get_run_data(self, run_id: Any, key: str) -> Result[RunData | None]:
        matches = [d for d in self.data if d.key == key and str(d.run_id) == str(run_id)]
        return Result.ok(matches[-1] if matches else None)

    def get_all_run_data(self, run_id: Any, key: str) -> Result[list[RunData]]:
        return Result.ok([d for d in self.data if d.key == key and str(d.run_id) == str(run_id)])

    def query_run_data(self, run_id: Any, **filters: Any) -> Result[Page[RunData]]:
        prefixes = filters.get("key_starts_with") or []
        items = [d for d in self.data if any(d.key.startswith(p) for p in prefixes)]
        return Result.ok(Page[RunData](
            data=items, pagination=Pagination(total=len(items), limit=100, offset=0)
        ))
