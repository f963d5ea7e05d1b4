"""Wire models: the one definition of every JSON shape the API accepts and returns.

The service validates requests and serialises responses with these models, and the worker
SDK parses responses with the same classes, so client and server cannot drift apart.
Field names are snake_case in Python and camelCase on the wire.

Request models reject unknown fields (a typo such as ``inputdata`` is a ``400``, never
silently dropped); response models ignore unknown fields so that an older client keeps
working against a newer server.
"""

from __future__ import annotations

import math
import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    JsonValue,
    PlainSerializer,
)
from pydantic.alias_generators import to_camel

MAX_JSON_DEPTH = 64


class RunStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


class TaskStatus(StrEnum):
    PENDING = "pending"
    QUEUED = "queued"
    RUNNING = "running"
    RETRYING = "retrying"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


class Permission(StrEnum):
    ALL = "*"
    RUNS_ALL = "runs:*"
    RUNS_CREATE = "runs:create"
    RUNS_READ = "runs:read"
    RUNS_UPDATE = "runs:update"
    TASKS_ALL = "tasks:*"
    TASKS_CREATE = "tasks:create"
    TASKS_READ = "tasks:read"
    TASKS_UPDATE = "tasks:update"
    RUNDATA_ALL = "rundata:*"
    RUNDATA_READ = "rundata:read"
    RUNDATA_WRITE = "rundata:write"
    RUNDATA_DELETE = "rundata:delete"


TERMINAL_RUN_STATUSES = frozenset({RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED})
TERMINAL_TASK_STATUSES = frozenset(
    {TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED}
)


def _check_text(value: str) -> str:
    """Reject text no database can store: NUL characters and lone surrogates."""
    if "\x00" in value:
        raise ValueError("text must not contain NUL (\\u0000) characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError("text must be valid Unicode (no lone surrogates)") from exc
    return value


def _check_json(value: Any, depth: int = 0) -> Any:
    """Bound nesting depth and reject values JSON cannot carry (NaN, Infinity, bad text)."""
    if depth > MAX_JSON_DEPTH:
        raise ValueError(f"JSON value is nested deeper than {MAX_JSON_DEPTH} levels")
    if isinstance(value, str):
        _check_text(value)
    elif isinstance(value, float) and not math.isfinite(value):
        raise ValueError("JSON numbers must be finite (no NaN or Infinity)")
    elif isinstance(value, dict):
        for key, item in value.items():
            _check_text(key)
            _check_json(item, depth + 1)
    elif isinstance(value, list):
        for item in value:
            _check_json(item, depth + 1)
    return value


Json = Annotated[JsonValue, AfterValidator(_check_json)]
"""Any JSON value, bounded in depth and storable by every backend."""

Text = Annotated[str, AfterValidator(_check_text)]
Metadata = Annotated[dict[str, JsonValue], AfterValidator(_check_json)]


def format_timestamp(value: datetime) -> str:
    """ISO-8601 UTC with milliseconds and ``Z``: ``2026-11-26T02:32:49.123Z``."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


Timestamp = Annotated[datetime, PlainSerializer(format_timestamp, return_type=str)]


class _Wire(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, serialize_by_alias=True
    )


class _Request(_Wire):
    model_config = ConfigDict(extra="forbid")


class _Response(_Wire):
    model_config = ConfigDict(extra="ignore")


# ---- runs -------------------------------------------------------------------------------


class RunCreate(_Request):
    input_data: Json
    metadata: Metadata | None = None


class RunUpdate(_Request):
    status: RunStatus | None = None
    output_data: Json = None
    error_data: Json = None
    metadata: Metadata | None = None


class Run(_Response):
    id: uuid.UUID
    org_id: str
    status: RunStatus
    input_data: JsonValue
    output_data: JsonValue = None
    error_data: JsonValue = None
    metadata: dict[str, JsonValue] | None = None
    total_tasks: int
    completed_tasks: int
    failed_tasks: int
    created_at: Timestamp
    updated_at: Timestamp
    started_at: Timestamp | None = None
    completed_at: Timestamp | None = None
    duration_ms: int | None = None


# ---- tasks ------------------------------------------------------------------------------

TaskType = Annotated[Text, Field(min_length=1, max_length=255)]


class TaskCreate(_Request):
    run_id: uuid.UUID
    type: TaskType
    input_data: Json = None
    parent_task_id: uuid.UUID | None = None
    metadata: Metadata | None = None
    max_retries: int = Field(default=3, ge=0, le=10)


class TaskUpdate(_Request):
    status: TaskStatus | None = None
    output_data: Json = None
    error_data: Json = None
    metadata: Metadata | None = None
    queue_job_id: Annotated[Text, Field(min_length=1, max_length=255)] | None = None


class Task(_Response):
    id: uuid.UUID
    run_id: uuid.UUID
    parent_task_id: uuid.UUID | None = None
    org_id: str
    type: str
    status: TaskStatus
    input_data: JsonValue = None
    output_data: JsonValue = None
    error_data: JsonValue = None
    metadata: dict[str, JsonValue] | None = None
    retry_count: int
    max_retries: int
    queue_job_id: str | None = None
    created_at: Timestamp
    updated_at: Timestamp
    queued_at: Timestamp | None = None
    started_at: Timestamp | None = None
    completed_at: Timestamp | None = None
    duration_ms: int | None = None


# ---- run data ---------------------------------------------------------------------------

DataKey = Annotated[Text, Field(min_length=1, max_length=255)]
Tag = Annotated[Text, Field(min_length=1, max_length=255)]


class RunDataCreate(_Request):
    key: DataKey
    value: Json
    task_id: uuid.UUID | None = None
    tags: Annotated[list[Tag], Field(max_length=100)] = Field(default_factory=list)
    metadata: Metadata | None = None


class RunDataTagsUpdate(_Request):
    add: Annotated[list[Tag], Field(max_length=100)] = Field(default_factory=list)
    remove: Annotated[list[Tag], Field(max_length=100)] = Field(default_factory=list)


class RunData(_Response):
    id: uuid.UUID
    run_id: uuid.UUID
    task_id: uuid.UUID | None = None
    org_id: str
    key: str
    value: JsonValue
    tags: list[str]
    metadata: dict[str, JsonValue] | None = None
    created_at: Timestamp
    updated_at: Timestamp


# ---- envelopes --------------------------------------------------------------------------

SortOrder = Literal["asc", "desc"]
TimeSort = Literal["createdAt", "updatedAt"]
"""How runs and tasks lists sort; ties are broken by id."""
Item = TypeVar("Item")


class Pagination(_Response):
    total: int
    limit: int
    offset: int


class Page(_Response, Generic[Item]):
    data: list[Item]
    pagination: Pagination


class Deleted(_Response):
    deleted: int


class ErrorDetail(_Response):
    field: str | None = None
    message: str


class ErrorBody(_Response):
    error: str
    code: str
    details: list[ErrorDetail] = Field(default_factory=list)


class Health(_Response):
    status: Literal["ok", "degraded"]
    database: Literal["ok", "unavailable"]
    redis: Literal["ok", "unavailable", "not_configured"]
    version: str
