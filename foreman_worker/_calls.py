"""Every API call, once: pure builders of :class:`Call`, no I/O.

A builder's parameters and docstring are those of the client methods made from it
(:mod:`foreman_worker._methods`).

Both clients build a :class:`Call` with one of the builders below, send it with their own
httpx client (sync or async) and read the outcome with :mod:`foreman_worker._responses`.
Request bodies are built and validated with the request models of
:mod:`foreman_api.schemas`, and each call names the response model that parses its answer:
the SDK keeps no second copy of the wire shapes.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import Enum, StrEnum
from typing import Any, Final, Generic, TypeVar

from pydantic import BaseModel, ValidationError

from foreman_api.domain.paging import DataSortBy, SortOrder, TimeSortBy
from foreman_api.domain.run_data_query import TagMode
from foreman_api.schemas import (
    AttemptList,
    Deleted,
    ErrorDetail,
    Health,
    Page,
    QueueList,
    ReconcileRequest,
    Reconciliation,
    Retried,
    Run,
    RunCreate,
    RunData,
    RunDataCreate,
    RunDataTagsUpdate,
    RunStatus,
    RunUpdate,
    Task,
    TaskCreate,
    TaskHeartbeat,
    TaskRetry,
    TaskRetryFilter,
    TaskStatus,
    TaskUpdate,
    Worker,
    WorkerRegistration,
)
from foreman_worker.result import (
    INVALID_REQUEST,
    ApiErrorInfo,
)

T = TypeVar("T")
E = TypeVar("E", bound=StrEnum)

API_PREFIX: Final = "/api/v1"

Id = str | uuid.UUID
"""An id as a UUID string or a :class:`uuid.UUID`."""
Names = str | Iterable[str]
"""One name (a key, a tag) or several."""


class Unset(Enum):
    """Type of :data:`UNSET`, the default of update fields that were not passed."""

    UNSET = "UNSET"

    def __repr__(self) -> str:
        return "UNSET"


UNSET: Final = Unset.UNSET
"""A field left out of an update, as opposed to one explicitly set to ``None``."""


@dataclass(frozen=True, slots=True)
class Call(Generic[T]):
    """One API call: what to send, how to read a success, whether it creates something."""

    method: str
    path: str
    parse: Callable[[bytes], T]
    params: tuple[tuple[str, str], ...] = ()
    body: dict[str, Any] | None = None
    creates: bool = False
    authenticated: bool = True
    also_ok: frozenset[int] = frozenset()

    @property
    def label(self) -> str:
        return f"{self.method} {self.path}"


class InvalidRequest(Exception):  # internal control flow, never escapes
    """A call rejected before sending; the client returns it as a failed Result."""

    def __init__(self, message: str, details: Iterable[ErrorDetail] = ()) -> None:
        super().__init__(message)
        self.info = ApiErrorInfo(None, INVALID_REQUEST, message, tuple(details))


# ---- argument normalisation ------------------------------------------------------------


def _id(value: Id, name: str) -> str:
    if isinstance(value, uuid.UUID):
        return str(value)
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str or uuid.UUID, not {type(value).__name__}")
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise InvalidRequest(f"{name} is not a valid UUID: {value!r}") from None


def _enum(kind: type[E], value: E | str, name: str) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a {kind.__name__} or str, not {type(value).__name__}")
    try:
        return kind(value).value
    except ValueError:
        allowed = ", ".join(member.value for member in kind)
        raise InvalidRequest(f"{name} must be one of {allowed}, not {value!r}") from None


def _names(value: Names, name: str) -> list[str]:
    items = [value] if isinstance(value, str) else list(value)
    for item in items:
        if not isinstance(item, str):
            raise TypeError(f"{name} must hold str values, not {type(item).__name__}")
    return items


def _body(model: type[BaseModel], **fields: Any) -> dict[str, Any]:
    """Validate with the request model; fields left :data:`UNSET` are not sent."""
    given = {name: value for name, value in fields.items() if value is not UNSET}
    try:
        instance = model.model_validate(given)
    except ValidationError as exc:
        details = [
            ErrorDetail(
                field=".".join(str(part) for part in err["loc"]) or None, message=err["msg"]
            )
            for err in exc.errors(include_url=False)
        ]
        fields_text = ", ".join(d.field or "body" for d in details)
        raise InvalidRequest(f"invalid request body ({fields_text})", details) from None
    return instance.model_dump(mode="json", by_alias=True, exclude_unset=True)


def _unset_if_none(value: Any) -> Any:
    return UNSET if value is None else value


# ---- response parsers ------------------------------------------------------------------


def _parse_model(model: type[T]) -> Callable[[bytes], T]:
    return model.model_validate_json  # type: ignore[attr-defined, no-any-return]


def _parse_entries(content: bytes) -> list[RunData]:
    return Page[RunData].model_validate_json(content).data


def _parse_latest(content: bytes) -> RunData | None:
    entries = _parse_entries(content)
    return entries[0] if entries else None


def _parse_deleted(content: bytes) -> int:
    return Deleted.model_validate_json(content).deleted


# ---- runs ------------------------------------------------------------------------------


def create_run(input_data: Any, *, metadata: Mapping[str, Any] | None = None) -> Call[Run]:
    """Create a run (``POST /runs``) with any JSON ``input_data``."""
    body = _body(RunCreate, input_data=input_data, metadata=_unset_if_none(metadata))
    return Call("POST", f"{API_PREFIX}/runs", _parse_model(Run), body=body, creates=True)


def get_run(run_id: Id) -> Call[Run]:
    """Fetch a run; ``not_found`` if it does not exist in the key's organisation."""
    return Call("GET", f"{API_PREFIX}/runs/{_id(run_id, 'run_id')}", _parse_model(Run))


def update_run(
    run_id: Id,
    *,
    status: RunStatus | str | Unset = UNSET,
    output_data: Any = UNSET,
    error_data: Any = UNSET,
    metadata: Mapping[str, Any] | Unset | None = UNSET,
) -> Call[Run]:
    """Change a run; only the fields passed are sent (``None`` is sent as ``null``)."""
    path = f"{API_PREFIX}/runs/{_id(run_id, 'run_id')}"
    if status is not UNSET:
        status = _enum(RunStatus, status, "status")
    body = _body(
        RunUpdate, status=status, output_data=output_data, error_data=error_data, metadata=metadata
    )
    return Call("PATCH", path, _parse_model(Run), body=body)


def list_runs(
    *,
    status: RunStatus | str | None = None,
    limit: int = 100,
    offset: int = 0,
    sort_by: TimeSortBy = "createdAt",
    sort_order: SortOrder = "desc",
) -> Call[Page[Run]]:
    """One page of runs, optionally of one status."""
    params: list[tuple[str, str]] = []
    if status is not None:
        params.append(("status", _enum(RunStatus, status, "status")))
    params += _paging(limit, offset, sort_by, sort_order)
    return Call("GET", f"{API_PREFIX}/runs", _parse_model(Page[Run]), params=tuple(params))


def _paging(
    limit: int | None, offset: int | None, sort_by: str | None, sort_order: str | None
) -> list[tuple[str, str]]:
    pairs = [("limit", limit), ("offset", offset), ("sortBy", sort_by), ("sortOrder", sort_order)]
    return [(name, str(value)) for name, value in pairs if value is not None]


# ---- tasks -----------------------------------------------------------------------------


def create_task(
    run_id: Id,
    type: str,
    *,
    input_data: Any = None,
    parent_task_id: Id | None = None,
    metadata: Mapping[str, Any] | None = None,
    max_retries: int | None = None,
    queue: str | None = None,
    status: TaskStatus | str = TaskStatus.PENDING,
    idempotency_key: str | None = None,
) -> Call[Task]:
    """Create a task in a run (``max_retries`` None: the server's default, 3)."""
    body = _body(
        TaskCreate,
        run_id=_id(run_id, "run_id"),
        type=type,
        input_data=input_data,
        parent_task_id=UNSET if parent_task_id is None else _id(parent_task_id, "parent_task_id"),
        metadata=_unset_if_none(metadata),
        max_retries=_unset_if_none(max_retries),
        queue=_unset_if_none(queue),
        status=UNSET if status == TaskStatus.PENDING else _enum(TaskStatus, status, "status"),
        idempotency_key=_unset_if_none(idempotency_key),
    )
    # With an idempotency key a create may be sent again safely, like any update.
    creates = idempotency_key is None
    return Call("POST", f"{API_PREFIX}/tasks", _parse_model(Task), body=body, creates=creates)


def get_task(task_id: Id) -> Call[Task]:
    """Fetch a task."""
    return Call("GET", f"{API_PREFIX}/tasks/{_id(task_id, 'task_id')}", _parse_model(Task))


def update_task(
    task_id: Id,
    *,
    status: TaskStatus | str | Unset = UNSET,
    output_data: Any = UNSET,
    error_data: Any = UNSET,
    metadata: Mapping[str, Any] | Unset | None = UNSET,
    queue_job_id: str | Unset | None = UNSET,
    lease_seconds: float | Unset = UNSET,
    retry_delay: float | Unset = UNSET,
    worker_id: str | Unset = UNSET,
) -> Call[Task]:
    """Change a task; an illegal status transition is a ``409`` (code ``conflict``)."""
    path = f"{API_PREFIX}/tasks/{_id(task_id, 'task_id')}"
    if status is not UNSET:
        status = _enum(TaskStatus, status, "status")
    body = _body(
        TaskUpdate,
        status=status,
        output_data=output_data,
        error_data=error_data,
        metadata=metadata,
        queue_job_id=queue_job_id,
        lease_seconds=lease_seconds,
        retry_delay=retry_delay,
        worker_id=worker_id,
    )
    return Call("PATCH", path, _parse_model(Task), body=body)


def retry_task(task_id: Id, *, input_data: Any = UNSET) -> Call[Task]:
    """Run a failed or cancelled task again (``queued``, fresh retry budget, history
    kept); with ``input_data``, a replay with that input. Repeating it is harmless.
    The API does not enqueue: see :func:`foreman_worker.resubmit`."""
    path = f"{API_PREFIX}/tasks/{_id(task_id, 'task_id')}/retry"
    return Call("POST", path, _parse_model(Task), body=_body(TaskRetry, input_data=input_data))


def retry_run(run_id: Id) -> Call[Retried]:
    """Retry every failed or cancelled task of a run; reports what moved."""
    path = f"{API_PREFIX}/runs/{_id(run_id, 'run_id')}/retry"
    return Call("POST", path, _parse_model(Retried))


def retry_tasks(
    *,
    run_id: Id | None = None,
    type: str | None = None,
    status: TaskStatus | str | None = None,
    created_after: datetime | None = None,
    created_before: datetime | None = None,
    limit: int = 10_000,
) -> Call[Retried]:
    """Retry every failed (or cancelled) task matching all the conditions given, oldest
    first, up to ``limit``; reports what moved."""
    body = _body(
        TaskRetryFilter,
        run_id=UNSET if run_id is None else _id(run_id, "run_id"),
        type=_unset_if_none(type),
        status=UNSET if status is None else _enum(TaskStatus, status, "status"),
        created_after=_unset_if_none(created_after),
        created_before=_unset_if_none(created_before),
        limit=limit,
    )
    return Call("POST", f"{API_PREFIX}/tasks/retry", _parse_model(Retried), body=body)


def list_attempts(task_id: Id) -> Call[AttemptList]:
    """Every attempt of a task, first to last (worker, job, times, outcome, error)."""
    path = f"{API_PREFIX}/tasks/{_id(task_id, 'task_id')}/attempts"
    return Call("GET", path, _parse_model(AttemptList))


def heartbeat_task(task_id: Id, *, queue_job_id: str, lease_seconds: float) -> Call[Task]:
    """Renew the lease of a task claimed by ``queue_job_id`` (``409 stale_claim`` if lost)."""
    path = f"{API_PREFIX}/tasks/{_id(task_id, 'task_id')}/heartbeat"
    body = _body(TaskHeartbeat, queue_job_id=queue_job_id, lease_seconds=lease_seconds)
    return Call("POST", path, _parse_model(Task), body=body)


def reconcile_tasks(
    *, after: Id | None = None, limit: int = 500, grace_seconds: float = 5.0
) -> Call[Reconciliation]:
    """Recover tasks whose lease expired; one page of tasks that should be queued."""
    body = _body(
        ReconcileRequest,
        after=UNSET if after is None else _id(after, "after"),
        limit=limit,
        grace_seconds=grace_seconds,
    )
    return Call("POST", f"{API_PREFIX}/reconcile", _parse_model(Reconciliation), body=body)


# ---- workers ---------------------------------------------------------------------------


def _worker_path(worker_id: str) -> str:
    if not isinstance(worker_id, str) or not 0 < len(worker_id) <= 255 or "/" in worker_id:
        raise InvalidRequest(f"worker_id must be 1-255 characters without '/': {worker_id!r}")
    return f"{API_PREFIX}/workers/{worker_id}"


def register_worker(
    worker_id: str,
    *,
    queues: Iterable[str],
    handlers: Iterable[Mapping[str, Any]],
    hostname: str | None = None,
    pid: int | None = None,
    current_task_id: Id | None = None,
) -> Call[Worker]:
    """Register (or heartbeat) a worker: its queues, handlers and current task."""
    body = _body(
        WorkerRegistration,
        queues=list(queues),
        handlers=list(handlers),
        hostname=_unset_if_none(hostname),
        pid=_unset_if_none(pid),
        current_task_id=UNSET
        if current_task_id is None
        else _id(current_task_id, "current_task_id"),
    )
    return Call("PUT", _worker_path(worker_id), _parse_model(Worker), body=body)


def list_workers() -> Call[Page[Worker]]:
    """The organisation's live workers."""
    return Call("GET", f"{API_PREFIX}/workers", _parse_model(Page[Worker]))


def list_queues() -> Call[QueueList]:
    """Per queue: unfinished tasks (queued, retrying, running) and live workers."""
    return Call("GET", f"{API_PREFIX}/queues", _parse_model(QueueList))


def delete_worker(worker_id: str) -> Call[int]:
    """Deregister a worker; the number removed (0 or 1)."""
    return Call("DELETE", _worker_path(worker_id), _parse_deleted)


def list_tasks(
    *,
    run_id: Id | None = None,
    parent_task_id: Id | None = None,
    status: TaskStatus | str | None = None,
    type: str | None = None,
    limit: int = 100,
    offset: int = 0,
    sort_by: TimeSortBy = "createdAt",
    sort_order: SortOrder = "desc",
) -> Call[Page[Task]]:
    """One page of tasks matching every filter given."""
    params: list[tuple[str, str]] = []
    if run_id is not None:
        params.append(("runId", _id(run_id, "run_id")))
    if parent_task_id is not None:
        params.append(("parentTaskId", _id(parent_task_id, "parent_task_id")))
    if status is not None:
        params.append(("status", _enum(TaskStatus, status, "status")))
    if type is not None:
        params.append(("type", type))
    params += _paging(limit, offset, sort_by, sort_order)
    return Call("GET", f"{API_PREFIX}/tasks", _parse_model(Page[Task]), params=tuple(params))


# ---- run data --------------------------------------------------------------------------


def _data_path(run_id: Id) -> str:
    return f"{API_PREFIX}/runs/{_id(run_id, 'run_id')}/data"


def create_run_data(
    run_id: Id,
    key: str,
    value: Any,
    *,
    task_id: Id | None = None,
    tags: Names | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> Call[RunData]:
    """Add an entry under ``key`` (earlier entries of the key are kept)."""
    body = _body(
        RunDataCreate,
        key=key,
        value=value,
        task_id=UNSET if task_id is None else _id(task_id, "task_id"),
        tags=UNSET if tags is None else _names(tags, "tags"),
        metadata=_unset_if_none(metadata),
    )
    return Call("POST", _data_path(run_id), _parse_model(RunData), body=body, creates=True)


def query_run_data(
    run_id: Id,
    *,
    key: str | None = None,
    keys: Names | None = None,
    key_starts_with: Names | None = None,
    key_pattern: Names | None = None,
    tags: Names | None = None,
    tag_starts_with: Names | None = None,
    tag_mode: TagMode | None = None,
    include_all: bool = False,
    limit: int | None = None,
    offset: int | None = None,
    sort_by: DataSortBy | None = None,
    sort_order: SortOrder | None = None,
) -> Call[Page[RunData]]:
    """One page of entries: key filters OR-ed, tag filters AND-ed with them."""
    path = _data_path(run_id)
    params: list[tuple[str, str]] = []
    if key is not None:
        params.append(("key", key))
    lists = [
        ("keys", keys),
        ("keyStartsWith", key_starts_with),
        ("keyPattern", key_pattern),
        ("tags", tags),
        ("tagStartsWith", tag_starts_with),
    ]
    for name, values in lists:
        if values is not None:
            params += [(name, item) for item in _names(values, name)]
    if tag_mode is not None:
        params.append(("tagMode", tag_mode))
    if include_all:
        params.append(("includeAll", "true"))
    params += _paging(limit, offset, sort_by, sort_order)
    return Call("GET", path, _parse_model(Page[RunData]), params=tuple(params))


def get_run_data(run_id: Id, key: str) -> Call[RunData | None]:
    """The latest entry of ``key``; success with ``None`` when the key has none."""
    query = query_run_data(run_id, key=key, limit=1)
    return Call("GET", query.path, _parse_latest, params=query.params)


def get_all_run_data(run_id: Id, key: str, *, limit: int = 1000) -> Call[list[RunData]]:
    """Every entry of ``key``, newest first (at most ``limit``)."""
    query = query_run_data(run_id, key=key, include_all=True, limit=limit, sort_order="desc")
    return Call("GET", query.path, _parse_entries, params=query.params)


def query_run_data_by_tags(
    run_id: Id,
    tags: Names,
    tag_mode: TagMode = "any",
    *,
    include_all: bool = False,
    limit: int = 1000,
) -> Call[list[RunData]]:
    """Entries with any (or all) of ``tags``; latest per key unless ``include_all``."""
    query = query_run_data(
        run_id, tags=tags, tag_mode=tag_mode, include_all=include_all, limit=limit
    )
    return Call("GET", query.path, _parse_entries, params=query.params)


def update_run_data_tags(
    run_id: Id, data_id: Id, *, add: Names = (), remove: Names = ()
) -> Call[RunData]:
    """Add and remove tags of one entry."""
    path = f"{_data_path(run_id)}/{_id(data_id, 'data_id')}/tags"
    body = _body(RunDataTagsUpdate, add=_names(add, "add"), remove=_names(remove, "remove"))
    return Call("PATCH", path, _parse_model(RunData), body=body)


def delete_run_data(run_id: Id, *, key: str | None = None, id: Id | None = None) -> Call[int]:
    """Delete every entry of ``key``, or the entry ``id``; the data is the count deleted."""
    if (key is None) == (id is None):
        raise TypeError("delete_run_data needs exactly one of key= or id=")
    params = (("key", key),) if key is not None else (("id", _id(id, "id")),)  # type: ignore[arg-type]
    return Call("DELETE", _data_path(run_id), _parse_deleted, params=params)


# ---- service ---------------------------------------------------------------------------


def health() -> Call[Health]:
    # A degraded service answers 503 with a Health body: that is an answer, not a failure.
    """The service's health (no key needed); a degraded service is still a success."""
    return Call(
        "GET", "/health", _parse_model(Health), authenticated=False, also_ok=frozenset({503})
    )
