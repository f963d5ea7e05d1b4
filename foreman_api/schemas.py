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
import types
import typing
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, Generic, Literal, TypeVar

import orjson
from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
    JsonValue,
    PlainSerializer,
    ValidationError,
    ValidatorFunctionWrapHandler,
    WrapValidator,
)
from pydantic.alias_generators import to_camel
from pydantic.fields import FieldInfo
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema, PydanticCustomError, core_schema

from foreman_api.domain.paging import (
    MAX_LIMIT,
    MAX_OFFSET,
    SORT_BY_ALIASES,
    DataSortBy,
    SortOrder,
    TimeSortBy,
    normalise_sort_by,
    sort_by_spellings,
)
from foreman_api.domain.run_data_query import TagMode

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
TERMINAL_TASK_STATUSES = frozenset({TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED})


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


def allowed_types(annotation: Any) -> list[Any]:
    """The types an annotation allows: ``X | None`` → [X, None], ``Annotated[X, …]`` → [X]."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return allowed_types(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        return [t for arg in typing.get_args(annotation) for t in allowed_types(arg)]
    return [annotation]


def wire_name(name: str, field: FieldInfo) -> str:
    """The name field ``name`` has in a response's JSON (its camelCase alias)."""
    return field.serialization_alias or field.alias or name


def format_timestamp(value: datetime) -> str:
    """ISO-8601 UTC with milliseconds and ``Z``: ``2026-11-26T02:32:49.123Z``."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    elif value.utcoffset():
        value = value.astimezone(UTC)
    # orjson writes it four times faster than isoformat(timespec=...): a page of 100 rows
    # carries 200 to 400 of them. It writes 6 digits of fraction, or none when zero.
    text = orjson.dumps(value, option=orjson.OPT_UTC_Z)  # b'"2026-11-26T02:32:49.123456Z"'
    if len(text) == 29:
        return text[1:24].decode() + "Z"
    return text[1:20].decode() + ".000Z"


Timestamp = Annotated[datetime, PlainSerializer(format_timestamp, return_type=str)]

_E = TypeVar("_E", bound=StrEnum)
_newer_values: dict[tuple[type[StrEnum], str], StrEnum] = {}


def newer_value(enum: type[_E], value: str) -> _E:
    """A member of ``enum`` for a value this version does not know (a newer server's): it
    equals ``value``, serialises as it, and is none of the known members. Requests never
    accept it (``enum(value)`` still raises); only responses are read with it."""
    member = _newer_values.get((enum, value))
    if member is None:
        member = str.__new__(enum, value)
        member._name_ = value.upper()
        member._value_ = value
        _newer_values[(enum, value)] = member
    return member  # type: ignore[return-value]


def _known_or_newer(enum: type[StrEnum]) -> WrapValidator:
    def validate(value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        try:
            return handler(value)
        except ValidationError:
            if isinstance(value, str) and value:
                return newer_value(enum, value)
            raise

    return WrapValidator(validate)


ReportedRunStatus = Annotated[RunStatus, _known_or_newer(RunStatus)]
"""A run's status in a response: a status added by a newer server is kept, not refused."""
ReportedTaskStatus = Annotated[TaskStatus, _known_or_newer(TaskStatus)]
"""A task's status in a response: a status added by a newer server is kept, not refused."""


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
    auto_complete: bool = Field(
        default=True,
        strict=True,
        description="Finish by itself when its last unfinished task settles: 'completed', "
        "or 'failed' if any task failed for good ('cancelled' if all were cancelled). A "
        "task created in (or retried from) a run finished that way reopens it. false: the "
        "run stays open until closed with PATCH.",
    )


class RunUpdate(_Request):
    status: RunStatus | None = None
    output_data: Json = None
    error_data: Json = None
    metadata: Metadata | None = None


class Run(_Response):
    id: uuid.UUID
    org_id: str
    status: ReportedRunStatus
    input_data: JsonValue
    output_data: JsonValue = None
    error_data: JsonValue = None
    metadata: dict[str, JsonValue] | None = None
    total_tasks: int
    completed_tasks: int
    failed_tasks: int
    cancelled_tasks: int = Field(
        default=0, description="Tasks cancelled (counted in neither completed nor failed)."
    )
    created_at: Timestamp
    updated_at: Timestamp
    started_at: Timestamp | None = None
    completed_at: Timestamp | None = None
    duration_ms: int | None = None
    auto_complete: bool = Field(
        default=True, description="Finishes by itself when its last task settles."
    )


# ---- tasks ------------------------------------------------------------------------------

TaskType = Annotated[Text, Field(min_length=1, max_length=255)]
QUEUE_NAME_PATTERN = r"^[A-Za-z0-9_.:-]{1,64}$"
QueueName = Annotated[str, Field(pattern=QUEUE_NAME_PATTERN)]
"""A logical queue name: letters, digits and ``_ . : -``, 1 to 64 characters."""
DEFAULT_QUEUE = "default"
DEFAULT_MAX_RETRIES = 3
JobId = Annotated[Text, Field(min_length=1, max_length=255)]
WorkerId = Annotated[Text, Field(min_length=1, max_length=255)]
LeaseSeconds = Annotated[float, Field(ge=1, le=3600, strict=True)]
IdempotencyKey = Annotated[Text, Field(min_length=1, max_length=255)]


class TaskCreate(_Request):
    run_id: uuid.UUID
    type: TaskType
    input_data: Json = None
    parent_task_id: uuid.UUID | None = None
    metadata: Metadata | None = None
    max_retries: int | None = Field(
        default=None,
        strict=True,
        ge=0,
        le=10,
        description="Retries after the first attempt. Omitted: the value a live worker "
        "registered for this type (its @task option), else 3.",
    )
    queue: QueueName | None = Field(
        default=None,
        description="Logical queue. Omitted: the queue a live worker registered for this "
        "type, else 'default'.",
    )
    status: Literal[TaskStatus.PENDING, TaskStatus.QUEUED] = Field(
        default=TaskStatus.PENDING,
        description="'queued' creates the task ready for a worker in one step: the "
        "reconciler puts it on its queue even if the caller dies before enqueueing it.",
    )
    idempotency_key: IdempotencyKey | None = Field(
        default=None,
        description="A repeated create with the same key returns the first task (200).",
    )


class TaskUpdate(_Request):
    status: TaskStatus | None = None
    output_data: Json = None
    error_data: Json = None
    metadata: Metadata | None = None
    queue_job_id: JobId | None = Field(
        default=None,
        description="With status 'running': the claim's job id. Otherwise a fencing token: "
        "the write applies only while this job holds the claim (else 409 stale_claim).",
    )
    lease_seconds: LeaseSeconds | None = Field(
        default=None,
        description="With status 'running': hold the claim under a lease of this many "
        "seconds, renewed by heartbeats; an expired lease means the worker was lost.",
    )
    retry_delay: float | None = Field(
        default=None,
        strict=True,
        ge=0,
        le=86_400,
        description="With status 'retrying': seconds before the next attempt may start.",
    )
    worker_id: WorkerId | None = Field(
        default=None,
        description="With status 'running': the worker making the claim, kept in the "
        "task's attempt history.",
    )


class TaskHeartbeat(_Request):
    queue_job_id: JobId
    lease_seconds: LeaseSeconds


class Task(_Response):
    id: uuid.UUID
    run_id: uuid.UUID
    parent_task_id: uuid.UUID | None = None
    org_id: str
    type: str
    status: ReportedTaskStatus
    input_data: JsonValue = None
    output_data: JsonValue = None
    error_data: JsonValue = None
    metadata: dict[str, JsonValue] | None = None
    retry_count: int
    max_retries: int
    queue_job_id: str | None = None
    queue: str = DEFAULT_QUEUE
    lease_expires_at: Timestamp | None = None
    retry_at: Timestamp | None = None
    idempotency_key: str | None = None
    created_at: Timestamp
    updated_at: Timestamp
    queued_at: Timestamp | None = None
    started_at: Timestamp | None = None
    completed_at: Timestamp | None = None
    duration_ms: int | None = None
    attempt_count: int = Field(
        default=0, description="Attempts so far: each claim starts one (see /attempts)."
    )


class Attempt(_Response):
    """One attempt of a task: opened by its claim, closed by the move that ended it."""

    number: int = Field(description="1 for the first attempt, counting every claim.")
    worker_id: str | None = Field(default=None, description="The worker that claimed it.")
    queue_job_id: str | None = Field(default=None, description="The queue job that ran it.")
    started_at: Timestamp
    finished_at: Timestamp | None = None
    duration_ms: int | None = None
    outcome: str = Field(
        description="'running' while it lasts, then the status the task moved to: "
        "'completed', 'failed', 'retrying' (failed, another attempt follows) or 'cancelled'."
    )
    error: JsonValue = Field(
        default=None,
        description="The errorData written when it ended (type, message, traceback, ...).",
    )


class AttemptList(_Response):
    data: list[Attempt]


class ReconcileRequest(_Request):
    after: uuid.UUID | None = Field(default=None, description="Page cursor: the last id seen.")
    limit: int = Field(default=500, ge=1, le=1000, strict=True)
    grace_seconds: float = Field(
        default=5.0,
        strict=True,
        ge=0,
        le=3600,
        description="Only tasks unchanged for this long: fresh ones are still being enqueued.",
    )


class WaitingTask(_Response):
    """A task that should be on a queue: ``queued``, or ``retrying`` and due."""

    id: uuid.UUID
    queue: str
    status: ReportedTaskStatus
    retry_at: Timestamp | None = None


class Reconciliation(_Response):
    recovered: list[Task] = Field(description="Tasks whose lease expired, moved on just now.")
    waiting: list[WaitingTask]
    next: uuid.UUID | None = Field(description="Cursor of the next page, null on the last.")


# ---- workers ----------------------------------------------------------------------------


class HandlerInfo(_Wire):
    """A handler a worker serves: its task type and its ``@task`` options."""

    model_config = ConfigDict(extra="forbid")

    type: TaskType
    queue: QueueName
    max_retries: int | None = Field(default=None, ge=0, le=10, strict=True)
    """None: the handler does not say; tasks keep the API's default."""
    timeout: float | None = Field(default=None, gt=0, strict=True)


class WorkerRegistration(_Request):
    queues: Annotated[list[QueueName], Field(max_length=100)]
    handlers: Annotated[list[HandlerInfo], Field(max_length=1000)]
    hostname: Annotated[Text, Field(max_length=255)] | None = None
    pid: int | None = Field(default=None, ge=0, le=2**31 - 1, strict=True)
    current_task_id: uuid.UUID | None = None


class Worker(_Response):
    id: str
    org_id: str
    hostname: str | None = None
    pid: int | None = None
    queues: list[str]
    handlers: list[HandlerInfo]
    current_task_id: uuid.UUID | None = None
    started_at: Timestamp
    last_seen_at: Timestamp


class QueueDepth(_Response):
    """One queue of the organisation: its unfinished tasks by status, and who serves it."""

    queue: str
    queued: int = Field(description="Tasks waiting to be taken.")
    retrying: int = Field(description="Tasks waiting out a retry backoff.")
    running: int = Field(description="Tasks claimed by a worker.")
    workers: int = Field(description="Live workers consuming this queue.")


class QueueList(_Response):
    data: list[QueueDepth]


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

Item = TypeVar("Item")


@dataclass(frozen=True, slots=True)
class _SortBySpellings:
    """``Annotated`` metadata of a ``sortBy`` Literal: also accept the other spellings of
    its values (:data:`~foreman_api.domain.paging.SORT_BY_ALIASES`), normalised to the
    value, and list every spelling in the JSON schema (so in the OpenAPI document)."""

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> CoreSchema:
        values: tuple[str, ...] = typing.get_args(source)
        spellings = [repr(spelling) for spelling in sort_by_spellings(values)]
        expected = f"{', '.join(spellings[:-1])} or {spellings[-1]}"

        def normalise(spelling: Any) -> Any:
            value = normalise_sort_by(spelling, values) if isinstance(spelling, str) else None
            if value is None:
                raise PydanticCustomError(
                    "literal_error", "Input should be {expected}", {"expected": expected}
                )
            return value

        return core_schema.no_info_before_validator_function(normalise, handler(source))

    def __get_pydantic_json_schema__(
        self, schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        json_schema = handler.resolve_ref_schema(handler(schema))
        json_schema["enum"] = sort_by_spellings(json_schema["enum"])
        return json_schema


SORT_BY_HELP = "Also accepted: " + ", ".join(
    f"`{alias}` for `{value}`" for alias, value in SORT_BY_ALIASES.items()
)
TimeSortParam = Annotated[TimeSortBy, _SortBySpellings()]
"""``sortBy`` of runs and tasks lists, in any accepted spelling; validates to the value."""
DataSortParam = Annotated[DataSortBy, _SortBySpellings()]
"""``sortBy`` of run data queries, in any accepted spelling; validates to the value."""


class Pagination(_Response):
    total: int
    limit: int
    offset: int


class PageQuery(BaseModel):
    """Query parameters of every list: a page and its order."""

    model_config = ConfigDict(populate_by_name=True, extra="ignore")

    limit: int = Field(default=100, ge=1, le=MAX_LIMIT, description="Page size, 1 to 1000.")
    offset: int = Field(default=0, ge=0, le=MAX_OFFSET, description="Rows to skip, ≥ 0.")
    sort_by: TimeSortParam = Field(
        default="createdAt", alias="sortBy", description=f"Order by this time. {SORT_BY_HELP}."
    )
    sort_order: SortOrder = Field(default="desc", alias="sortOrder")


class RunListQuery(PageQuery):
    status: RunStatus | None = None


class RunPath(BaseModel):
    run_id: uuid.UUID = Field(alias="runId")


class TaskRetry(_Request):
    """A retry; with ``inputData``, a replay with that input instead of the original."""

    input_data: Json = Field(
        default=None,
        description="Replay: run the task again with this input (null is an input too). "
        "Left out: the task's own input.",
    )


class TaskRetryFilter(_Request):
    """Which ``failed``/``cancelled`` tasks a bulk retry moves: all conditions hold."""

    run_id: uuid.UUID | None = None
    type: TaskType | None = None
    status: Literal[TaskStatus.FAILED, TaskStatus.CANCELLED] | None = Field(
        default=None, description="Only tasks in this status; left out: failed and cancelled."
    )
    created_after: AwareDatetime | None = Field(
        default=None, description="Only tasks created at or after this time."
    )
    created_before: AwareDatetime | None = Field(
        default=None, description="Only tasks created before this time."
    )
    limit: int = Field(
        default=10_000,
        ge=1,
        le=10_000,
        strict=True,
        description="Move at most this many (oldest first); repeat the call for more.",
    )


class Retried(_Response):
    """What a run or bulk retry moved back to ``queued``."""

    moved: int = Field(description="How many tasks moved (0 when repeated).")
    task_ids: list[uuid.UUID] = Field(description="The tasks moved, oldest first.")


class TaskListQuery(PageQuery):
    run_id: uuid.UUID | None = Field(default=None, alias="runId")
    parent_task_id: uuid.UUID | None = Field(default=None, alias="parentTaskId")
    status: TaskStatus | None = None
    type: TaskType | None = None


class TaskPath(BaseModel):
    task_id: uuid.UUID = Field(alias="taskId")


class WorkerPath(BaseModel):
    worker_id: str = Field(alias="workerId", min_length=1, max_length=255)


class RunDataPath(BaseModel):
    run_id: uuid.UUID = Field(alias="runId", description="The run's id")


class RunDataEntryPath(RunDataPath):
    entry_id: uuid.UUID = Field(alias="id", description="The entry's id")


LIST_HELP = "A list: comma-separated, or repeat the parameter"


class RunDataListQuery(BaseModel):
    """``GET /runs/{runId}/data``: the filters (:mod:`foreman_api.domain.run_data_query`
    validates and normalises them), a page and its order. A list parameter may be
    repeated; its values are also split at commas."""

    model_config = ConfigDict(extra="ignore")

    key: str | None = Field(default=None, description="One exact key (commas are literal)")
    keys: list[str] | None = Field(default=None, description=LIST_HELP)
    key_starts_with: list[str] | None = Field(
        default=None, alias="keyStartsWith", description=LIST_HELP
    )
    key_pattern: list[str] | None = Field(
        default=None,
        alias="keyPattern",
        description=f"Globs (* any run, ? one character). {LIST_HELP}",
    )
    tags: list[str] | None = Field(default=None, description=LIST_HELP)
    tag_starts_with: list[str] | None = Field(
        default=None, alias="tagStartsWith", description=LIST_HELP
    )
    tag_mode: TagMode = Field(default="any", alias="tagMode")
    include_all: bool = Field(default=False, alias="includeAll")
    limit: int = Field(default=100, ge=1, le=MAX_LIMIT, description="Page size, 1 to 1000.")
    offset: int = Field(default=0, ge=0, le=MAX_OFFSET, description="Rows to skip, ≥ 0.")
    sort_by: DataSortParam = Field(
        default="createdAt",
        alias="sortBy",
        description=f"Order by this (`createdAt` is insertion order). {SORT_BY_HELP}.",
    )
    sort_order: SortOrder = Field(default="desc", alias="sortOrder")


class RunDataDeleteQuery(BaseModel):
    """``DELETE /runs/{runId}/data``: exactly one of ``key`` and ``id``."""

    model_config = ConfigDict(extra="ignore")

    key: str | None = Field(default=None, description="Delete every entry of this key")
    entry_id: uuid.UUID | None = Field(default=None, alias="id", description="Delete one entry")


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
