"""HTTP clients for the Foreman API: :class:`ForemanClient` (sync) and :class:`AsyncForemanClient`.

Both have the same methods, and every method returns a :class:`~foreman_worker.result.Result`:
API errors, network errors, timeouts and malformed responses come back as ``result.error``,
never as exceptions. Only misuse raises (a wrong argument type, a bad configuration).

What a call sends and how its answer is read lives in :mod:`foreman_worker._calls` and is
shared by both classes; they only do the I/O and the waiting between retries.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from types import TracebackType
from typing import Any, NamedTuple, ParamSpec, Self, TypeVar, cast

import httpx
import tenacity

from foreman_api.domain.paging import DataSortBy, SortOrder, TimeSortBy
from foreman_api.schemas import (
    AttemptList,
    Health,
    Page,
    QueueList,
    Reconciliation,
    Retried,
    Run,
    RunData,
    RunStatus,
    Task,
    TaskStatus,
    Worker,
)
from foreman_worker import _calls, _responses
from foreman_worker._async_client import AsyncForemanClient
from foreman_worker._calls import (
    UNSET,
    Call,
    Id,
    InvalidRequest,
    Names,
    TagMode,
    Unset,
)
from foreman_worker._config import ClientBase
from foreman_worker._responses import Attempt
from foreman_worker._retry import RetryPolicy
from foreman_worker._wire import Sent, Wire, lean_wire_fits
from foreman_worker.errors import ConfigurationError
from foreman_worker.result import Result

__all__ = ["UNSET", "AsyncForemanClient", "ForemanClient", "RetryPolicy", "Unset"]

T = TypeVar("T")
P = ParamSpec("P")


class _Ahead(NamedTuple):
    """A call sent ahead by one thread, its answer not read yet."""

    thread: int
    call: Call[Any]
    sent: Sent


class ForemanClient(ClientBase):
    """Synchronous client for the Foreman API.

    ``base_url`` defaults to ``$FOREMAN_API_URL`` (else ``http://127.0.0.1:8000``); the
    ``/api/v1`` prefix is added by the client and tolerated in the URL. ``api_key``
    defaults to ``$FOREMAN_API_KEY``; without one only :meth:`health` succeeds.
    ``timeout`` applies to each attempt. ``transport`` replaces the network (tests use
    ``httpx.MockTransport``).

    Retries follow ``retry`` (default ``RetryPolicy()``: 4 attempts, 0.1 s to 10 s apart;
    ``RetryPolicy.patient()`` for the worker runner, ``RetryPolicy.none()`` for none).
    Reads, updates and deletes are retried on connection errors, timeouts, broken
    connections, 502, 503, 504 and 429 (waiting at least ``Retry-After``): sending them
    twice does no harm. A repeated claim with the same ``queue_job_id`` is answered 200
    again; another repeated status move whose first response was lost comes back as a
    ``409`` (the move already happened), which callers should check with ``get_task``.
    Calls that *create* something (``create_run``, ``create_task``, ``create_run_data``)
    are retried only when the server surely did not act on the first request: the
    connection could not be made, or the answer was 429 or 503. A timeout or a dropped
    connection after sending is returned as a failure rather than risk a duplicate run,
    task or entry.
    """

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float = 10.0,
        retry: RetryPolicy | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if transport is not None and not isinstance(transport, httpx.BaseTransport):
            raise ConfigurationError("ForemanClient needs a sync httpx.BaseTransport")
        super().__init__(base_url, api_key, timeout=timeout, retry=retry)
        settings = self._settings
        self._wire: Wire | None = None
        self._http: httpx.Client | None = None
        self._ahead: _Ahead | None = None
        if transport is None and lean_wire_fits(settings.base_url):
            self._wire = Wire(settings.base_url, timeout=settings.timeout, headers=settings.headers)
        else:
            self._http = httpx.Client(transport=transport, **self._http_options())
        self._sleep: Callable[[float], None] = time.sleep

    def close(self) -> None:
        """Close the connections."""
        if self._wire is not None:
            self._drop_ahead()
            self._wire.close()
        if self._http is not None:
            self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def _call(self, build: Callable[P, Call[T]], /, *args: P.args, **kwargs: P.kwargs) -> Result[T]:
        try:
            call = build(*args, **kwargs)
        except InvalidRequest as exc:
            return Result.fail(exc.info)
        retrying = tenacity.Retrying(sleep=self._sleep, **self._settings.retry_options)
        attempt: Attempt[T] = retrying(self._attempt, call)
        return attempt.result

    def _send_ahead(
        self, build: Callable[P, Call[Any]], /, *args: P.args, **kwargs: P.kwargs
    ) -> None:
        """Write a call's first attempt now, so the API works on it while this thread does
        something else; the same call made next by this thread (``build`` with the same
        arguments) reads that answer instead of sending again, and retries as usual.

        Only over the lean transport; otherwise it does nothing. Any other call made
        first by this thread drops the early answer unread (its connection is closed).
        """
        if self._wire is None:
            return
        try:
            call = build(*args, **kwargs)
        except InvalidRequest:
            return  # the real call reports it
        self._drop_ahead()
        try:
            sent = self._wire.send(call.method, call.path, **self._settings.request_args(call))
        except httpx.HTTPError:
            return  # the real call tries again and reports what happens
        self._ahead = _Ahead(threading.get_ident(), call, sent)

    def _attempt(self, call: Call[T]) -> Attempt[T]:
        args = self._settings.request_args(call)
        try:
            if self._wire is None:
                response = cast(httpx.Client, self._http).request(call.method, call.path, **args)
            else:
                sent = self._take_ahead(call) or self._wire.send(call.method, call.path, **args)
                response = self._wire.receive(sent)
        except httpx.HTTPError as exc:
            return _responses.attempt_from_exception(call, exc)
        return _responses.attempt_from_response(call, response)

    def _take_ahead(self, call: Call[Any]) -> Sent | None:
        ahead = self._ahead
        if ahead is None or ahead.thread != threading.get_ident():
            return None
        self._ahead = None
        if ahead.call == call:
            return ahead.sent
        ahead.sent.abandon()
        return None

    def _drop_ahead(self) -> None:
        ahead, self._ahead = self._ahead, None
        if ahead is not None:
            ahead.sent.abandon()

    # ---- runs ----------------------------------------------------------------------------

    def create_run(
        self, input_data: Any, *, metadata: Mapping[str, Any] | None = None
    ) -> Result[Run]:
        """Create a run (``POST /runs``) with any JSON ``input_data``."""
        return self._call(_calls.create_run, input_data, metadata=metadata)

    def get_run(self, run_id: Id) -> Result[Run]:
        """Fetch a run; ``not_found`` if it does not exist in the key's organisation."""
        return self._call(_calls.get_run, run_id)

    def update_run(
        self,
        run_id: Id,
        *,
        status: RunStatus | str | Unset = UNSET,
        output_data: Any = UNSET,
        error_data: Any = UNSET,
        metadata: Mapping[str, Any] | Unset | None = UNSET,
    ) -> Result[Run]:
        """Change a run; only the fields passed are sent (``None`` is sent as ``null``)."""
        return self._call(
            _calls.update_run,
            run_id,
            status=status,
            output_data=output_data,
            error_data=error_data,
            metadata=metadata,
        )

    def list_runs(
        self,
        *,
        status: RunStatus | str | None = None,
        limit: int = 100,
        offset: int = 0,
        sort_by: TimeSortBy = "createdAt",
        sort_order: SortOrder = "desc",
    ) -> Result[Page[Run]]:
        """One page of runs, optionally of one status."""
        return self._call(
            _calls.list_runs,
            status=status,
            limit=limit,
            offset=offset,
            sort_by=sort_by,
            sort_order=sort_order,
        )

    # ---- tasks ---------------------------------------------------------------------------

    def create_task(
        self,
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
    ) -> Result[Task]:
        """Create a task in a run (``max_retries`` None: the server's default, 3)."""
        return self._call(
            _calls.create_task,
            run_id,
            type,
            input_data=input_data,
            parent_task_id=parent_task_id,
            metadata=metadata,
            max_retries=max_retries,
            queue=queue,
            status=status,
            idempotency_key=idempotency_key,
        )

    def get_task(self, task_id: Id) -> Result[Task]:
        """Fetch a task."""
        return self._call(_calls.get_task, task_id)

    def update_task(
        self,
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
    ) -> Result[Task]:
        """Change a task; an illegal status transition is a ``409`` (code ``conflict``)."""
        return self._call(
            _calls.update_task,
            task_id,
            status=status,
            output_data=output_data,
            error_data=error_data,
            metadata=metadata,
            queue_job_id=queue_job_id,
            lease_seconds=lease_seconds,
            retry_delay=retry_delay,
            worker_id=worker_id,
        )

    def retry_task(self, task_id: Id, *, input_data: Any = UNSET) -> Result[Task]:
        """Run a failed or cancelled task again (``queued``, fresh retry budget, history
        kept); with ``input_data``, a replay with that input. Repeating it is harmless.
        The API does not enqueue: see :func:`foreman_worker.resubmit`."""
        return self._call(_calls.retry_task, task_id, input_data=input_data)

    def retry_run(self, run_id: Id) -> Result[Retried]:
        """Retry every failed or cancelled task of a run; reports what moved."""
        return self._call(_calls.retry_run, run_id)

    def retry_tasks(
        self,
        *,
        run_id: Id | None = None,
        type: str | None = None,
        status: TaskStatus | str | None = None,
        created_after: datetime | None = None,
        created_before: datetime | None = None,
        limit: int = 10_000,
    ) -> Result[Retried]:
        """Retry every failed (or cancelled) task matching all the conditions given, oldest
        first, up to ``limit``; reports what moved."""
        return self._call(
            _calls.retry_tasks,
            run_id=run_id,
            type=type,
            status=status,
            created_after=created_after,
            created_before=created_before,
            limit=limit,
        )

    def list_attempts(self, task_id: Id) -> Result[AttemptList]:
        """Every attempt of a task, first to last (worker, job, times, outcome, error)."""
        return self._call(_calls.list_attempts, task_id)

    def heartbeat_task(
        self, task_id: Id, *, queue_job_id: str, lease_seconds: float
    ) -> Result[Task]:
        """Renew the lease of a task claimed by ``queue_job_id`` (``409 stale_claim`` if lost)."""
        return self._call(
            _calls.heartbeat_task, task_id, queue_job_id=queue_job_id, lease_seconds=lease_seconds
        )

    def reconcile_tasks(
        self, *, after: Id | None = None, limit: int = 500, grace_seconds: float = 5.0
    ) -> Result[Reconciliation]:
        """Recover tasks whose lease expired; one page of tasks that should be queued."""
        return self._call(
            _calls.reconcile_tasks, after=after, limit=limit, grace_seconds=grace_seconds
        )

    # ---- workers -------------------------------------------------------------------------

    def register_worker(
        self,
        worker_id: str,
        *,
        queues: Iterable[str],
        handlers: Iterable[Mapping[str, Any]],
        hostname: str | None = None,
        pid: int | None = None,
        current_task_id: Id | None = None,
    ) -> Result[Worker]:
        """Register (or heartbeat) a worker: its queues, handlers and current task."""
        return self._call(
            _calls.register_worker,
            worker_id,
            queues=queues,
            handlers=handlers,
            hostname=hostname,
            pid=pid,
            current_task_id=current_task_id,
        )

    def list_workers(self) -> Result[Page[Worker]]:
        """The organisation's live workers."""
        return self._call(_calls.list_workers)

    def list_queues(self) -> Result[QueueList]:
        """Per queue: unfinished tasks (queued, retrying, running) and live workers."""
        return self._call(_calls.list_queues)

    def delete_worker(self, worker_id: str) -> Result[int]:
        """Deregister a worker; the number removed (0 or 1)."""
        return self._call(_calls.delete_worker, worker_id)

    def list_tasks(
        self,
        *,
        run_id: Id | None = None,
        parent_task_id: Id | None = None,
        status: TaskStatus | str | None = None,
        type: str | None = None,
        limit: int = 100,
        offset: int = 0,
        sort_by: TimeSortBy = "createdAt",
        sort_order: SortOrder = "desc",
    ) -> Result[Page[Task]]:
        """One page of tasks matching every filter given."""
        return self._call(
            _calls.list_tasks,
            run_id=run_id,
            parent_task_id=parent_task_id,
            status=status,
            type=type,
            limit=limit,
            offset=offset,
            sort_by=sort_by,
            sort_order=sort_order,
        )

    # ---- run data ------------------------------------------------------------------------

    def create_run_data(
        self,
        run_id: Id,
        key: str,
        value: Any,
        *,
        task_id: Id | None = None,
        tags: Names | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> Result[RunData]:
        """Add an entry under ``key`` (earlier entries of the key are kept)."""
        return self._call(
            _calls.create_run_data,
            run_id,
            key,
            value,
            task_id=task_id,
            tags=tags,
            metadata=metadata,
        )

    def get_run_data(self, run_id: Id, key: str) -> Result[RunData | None]:
        """The latest entry of ``key``; success with ``None`` when the key has none."""
        return self._call(_calls.get_run_data, run_id, key)

    def get_all_run_data(self, run_id: Id, key: str, *, limit: int = 1000) -> Result[list[RunData]]:
        """Every entry of ``key``, newest first (at most ``limit``)."""
        return self._call(_calls.get_all_run_data, run_id, key, limit=limit)

    def query_run_data_by_tags(
        self,
        run_id: Id,
        tags: Names,
        tag_mode: TagMode = "any",
        *,
        include_all: bool = False,
        limit: int = 1000,
    ) -> Result[list[RunData]]:
        """Entries with any (or all) of ``tags``; latest per key unless ``include_all``."""
        return self._call(
            _calls.query_run_data_by_tags,
            run_id,
            tags,
            tag_mode,
            include_all=include_all,
            limit=limit,
        )

    def query_run_data(
        self,
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
    ) -> Result[Page[RunData]]:
        """One page of entries: key filters OR-ed, tag filters AND-ed with them."""
        return self._call(
            _calls.query_run_data,
            run_id,
            key=key,
            keys=keys,
            key_starts_with=key_starts_with,
            key_pattern=key_pattern,
            tags=tags,
            tag_starts_with=tag_starts_with,
            tag_mode=tag_mode,
            include_all=include_all,
            limit=limit,
            offset=offset,
            sort_by=sort_by,
            sort_order=sort_order,
        )

    def update_run_data_tags(
        self, run_id: Id, data_id: Id, *, add: Names = (), remove: Names = ()
    ) -> Result[RunData]:
        """Add and remove tags of one entry."""
        return self._call(_calls.update_run_data_tags, run_id, data_id, add=add, remove=remove)

    def delete_run_data(
        self, run_id: Id, *, key: str | None = None, id: Id | None = None
    ) -> Result[int]:
        """Delete every entry of ``key``, or the entry ``id``; the data is the count deleted."""
        return self._call(_calls.delete_run_data, run_id, key=key, id=id)

    # ---- service -------------------------------------------------------------------------

    def health(self) -> Result[Health]:
        """The service's health (no key needed); a degraded service is still a success."""
        return self._call(_calls.health)
