"""``TaskContext``: what a handler gets besides its input.

Run-data helpers are bound to the task's run (and ``put`` to the task itself); they raise
:class:`~foreman_worker.errors.ApiError` when the API refuses, which fails the attempt
and so retries it. The client is the worker's, with its long retry policy.
"""

from __future__ import annotations

import logging
from collections.abc import MutableMapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

from pydantic import JsonValue
from redis import Redis

from foreman_api.schemas import RunData, Task
from foreman_worker.enqueue import submit

if TYPE_CHECKING:
    from foreman_worker.client import ForemanClient

_logger = logging.getLogger("foreman_worker.task")


class TaskLogger(logging.LoggerAdapter[logging.Logger]):
    """Adds ``task_id``, ``run_id`` and ``task_type`` to every record and message."""

    def process(
        self, msg: Any, kwargs: MutableMapping[str, Any]
    ) -> tuple[Any, MutableMapping[str, Any]]:
        extra = self.extra or {}
        kwargs["extra"] = {**extra, **kwargs.get("extra", {})}
        return f"[task {extra.get('task_id')} run {extra.get('run_id')}] {msg}", kwargs


class TaskContext:
    """The running task, its attempt number, the API client and helpers bound to the run."""

    def __init__(
        self,
        task: Task,
        *,
        client: ForemanClient,
        connection: Redis | None = None,
    ) -> None:
        self.task = task
        self.client = client
        self.connection = connection
        self.logger = TaskLogger(
            _logger,
            {"task_id": str(task.id), "run_id": str(task.run_id), "task_type": task.type},
        )

    @property
    def task_id(self) -> str:
        return str(self.task.id)

    @property
    def run_id(self) -> str:
        return str(self.task.run_id)

    @property
    def type(self) -> str:
        return self.task.type

    @property
    def input(self) -> JsonValue:
        """The task's raw ``inputData``."""
        return self.task.input_data

    @property
    def attempt(self) -> int:
        """1 for the first run, 2 for the first retry, …"""
        return self.task.retry_count + 1

    # ---- run data ------------------------------------------------------------------------

    def put(
        self,
        key: str,
        value: JsonValue,
        *,
        tags: Sequence[str] | None = None,
        metadata: dict[str, JsonValue] | None = None,
    ) -> RunData:
        """Store a value under ``key`` in this run, linked to this task."""
        return self.client.create_run_data(
            self.run_id,
            key,
            value,
            task_id=self.task_id,
            tags=list(tags) if tags is not None else None,
            metadata=metadata,
        ).unwrap()

    def get(self, key: str, default: JsonValue = None) -> JsonValue:
        """The latest value stored under ``key`` in this run, or ``default``."""
        entry = self.client.get_run_data(self.run_id, key).unwrap()
        return default if entry is None else entry.value

    def get_all(self, key: str) -> list[RunData]:
        """Every entry stored under ``key`` in this run."""
        return self.client.get_all_run_data(self.run_id, key).unwrap()

    def query(
        self,
        *,
        key_starts_with: Sequence[str] | None = None,
        tags: Sequence[str] | None = None,
        tag_mode: Literal["any", "all"] = "any",
        include_all: bool = False,
        **filters: Any,
    ) -> list[RunData]:
        """Entries of this run matching the filters (see ``ForemanClient.query_run_data``)."""
        page = self.client.query_run_data(
            self.run_id,
            key_starts_with=list(key_starts_with) if key_starts_with is not None else None,
            tags=list(tags) if tags is not None else None,
            tag_mode=tag_mode,
            include_all=include_all,
            **filters,
        ).unwrap()
        return list(page.data)

    # ---- child tasks ---------------------------------------------------------------------

    def spawn(
        self,
        type: str,
        input_data: JsonValue = None,
        *,
        queue: str | None = None,
        max_retries: int | None = None,
        metadata: dict[str, JsonValue] | None = None,
    ) -> Task:
        """Create a child task of this one (same run, ``parentTaskId`` set) and enqueue it."""
        return submit(
            self.run_id,
            type,
            input_data,
            client=self.client,
            queue=queue,
            parent_task_id=self.task_id,
            max_retries=max_retries,
            metadata=metadata,
            connection=self.connection,
        )

    def __repr__(self) -> str:
        return f"TaskContext(task_id={self.task_id!r}, type={self.type!r}, attempt={self.attempt})"

