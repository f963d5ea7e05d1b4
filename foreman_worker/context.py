"""``TaskContext``: what a handler gets besides its input.

Run-data helpers are bound to the task's run (and ``put`` to the task itself); they raise
:class:`~foreman_worker.errors.ApiError` when the API refuses, which fails the attempt
and so retries it. The client is the worker's, with its long retry policy.

Each helper has an awaitable twin for ``async def`` handlers, named with an ``a`` in
front — :meth:`~TaskContext.aput`, :meth:`~TaskContext.aget`, :meth:`~TaskContext.aget_all`,
:meth:`~TaskContext.aquery`, :meth:`~TaskContext.aspawn` — with the same arguments and
results. They call the API through :attr:`TaskContext.async_client` and so never block the
event loop (the sync helpers do: in an async handler, await the twins instead).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import logging
import threading
from collections.abc import Callable, MutableMapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar, cast

from pydantic import JsonValue
from redis import Redis

from foreman_api.domain.run_data_query import TagMode
from foreman_api.schemas import Page, RunData, Task
from foreman_worker._async_client import AsyncForemanClient
from foreman_worker.enqueue import submit
from foreman_worker.queues import Namespace

if TYPE_CHECKING:
    from foreman_worker.client import ForemanClient

R = TypeVar("R")
T = TypeVar("T")

_logger = logging.getLogger("foreman_worker.task")


class TaskLogger(logging.LoggerAdapter[logging.Logger]):
    """Adds ``task_id``, ``run_id`` and ``task_type`` to every record and message."""

    def process(
        self, msg: Any, kwargs: MutableMapping[str, Any]
    ) -> tuple[Any, MutableMapping[str, Any]]:
        extra = self.extra or {}
        kwargs["extra"] = {**extra, **kwargs.get("extra", {})}
        return f"[task {extra.get('task_id')} run {extra.get('run_id')}] {msg}", kwargs


@dataclass(frozen=True, slots=True)
class _Request(Generic[R, T]):
    """What one helper asks of the API, for either client: the method to call (the sync and
    async clients have the same methods), its arguments, and what the helper returns made
    from the call's data."""

    method: str
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    finish: Callable[[R], T]


def _same(value: T) -> T:
    return value


def _list(values: Sequence[str] | None) -> list[str] | None:
    return list(values) if values is not None else None


class TaskContext:
    """The running task, its attempt number, the API clients and helpers bound to the run.

    ``async_client`` is the client of the awaitable helpers; by default one is made from
    ``client``'s settings when first used, for the running event loop, and closed by
    :meth:`aclose` (the runner calls it when an async handler's attempt ends).
    """

    def __init__(
        self,
        task: Task,
        *,
        client: ForemanClient,
        connection: Redis | None = None,
        async_client: AsyncForemanClient | None = None,
        namespace: Namespace | None = None,
    ) -> None:
        self.task = task
        self.client = client
        self.connection = connection
        self.namespace = namespace
        self._given_async_client = async_client
        self._made_async_client: tuple[AsyncForemanClient, asyncio.AbstractEventLoop] | None = None
        self._spawned = 0
        self._spawn_lock = threading.Lock()
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

    @property
    def async_client(self) -> AsyncForemanClient:
        """The client of the awaitable helpers (only from a coroutine: it belongs to the
        running event loop)."""
        if self._given_async_client is not None:
            return self._given_async_client
        loop = asyncio.get_running_loop()
        made = self._made_async_client
        if made is None or made[1] is not loop:
            made = (_async_twin(self.client), loop)
            self._made_async_client = made
        return made[0]

    async def aclose(self) -> None:
        """Close the async client this context made, if any (a given one is the giver's)."""
        made, self._made_async_client = self._made_async_client, None
        if made is not None and made[1] is asyncio.get_running_loop():
            await made[0].close()

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
        return self._send(self._put(key, value, tags, metadata))

    async def aput(
        self,
        key: str,
        value: JsonValue,
        *,
        tags: Sequence[str] | None = None,
        metadata: dict[str, JsonValue] | None = None,
    ) -> RunData:
        """:meth:`put`, awaited."""
        return await self._asend(self._put(key, value, tags, metadata))

    def get(self, key: str, default: JsonValue = None) -> JsonValue:
        """The latest value stored under ``key`` in this run, or ``default``."""
        return self._send(self._get(key, default))

    async def aget(self, key: str, default: JsonValue = None) -> JsonValue:
        """:meth:`get`, awaited."""
        return await self._asend(self._get(key, default))

    def get_all(self, key: str) -> list[RunData]:
        """Every entry stored under ``key`` in this run."""
        return self._send(self._get_all(key))

    async def aget_all(self, key: str) -> list[RunData]:
        """:meth:`get_all`, awaited."""
        return await self._asend(self._get_all(key))

    def query(
        self,
        *,
        key_starts_with: Sequence[str] | None = None,
        tags: Sequence[str] | None = None,
        tag_mode: TagMode = "any",
        include_all: bool = False,
        **filters: Any,
    ) -> list[RunData]:
        """Entries of this run matching the filters (see ``ForemanClient.query_run_data``)."""
        return self._send(self._query(key_starts_with, tags, tag_mode, include_all, filters))

    async def aquery(
        self,
        *,
        key_starts_with: Sequence[str] | None = None,
        tags: Sequence[str] | None = None,
        tag_mode: TagMode = "any",
        include_all: bool = False,
        **filters: Any,
    ) -> list[RunData]:
        """:meth:`query`, awaited."""
        return await self._asend(self._query(key_starts_with, tags, tag_mode, include_all, filters))

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
        """Create a child task of this one (same run, ``parentTaskId`` set) and enqueue it.

        The n-th spawn of an attempt carries the idempotency key ``spawn:<task id>:<n>``: a
        retried attempt that spawns the same children in the same order gets the tasks the
        earlier attempt made, not duplicates.
        """
        return self._submit(self.client, type, input_data, queue, max_retries, metadata)

    async def aspawn(
        self,
        type: str,
        input_data: JsonValue = None,
        *,
        queue: str | None = None,
        max_retries: int | None = None,
        metadata: dict[str, JsonValue] | None = None,
    ) -> Task:
        """:meth:`spawn`, awaited: the API calls go through :attr:`async_client` on this
        event loop, the (quick) Redis enqueue runs in a worker thread."""
        on_loop = _OnLoop(self.async_client, asyncio.get_running_loop())
        return await asyncio.to_thread(
            self._submit, on_loop, type, input_data, queue, max_retries, metadata
        )

    # ---- requests, shared by the sync and async helpers ----------------------------------

    def _put(
        self,
        key: str,
        value: JsonValue,
        tags: Sequence[str] | None,
        metadata: dict[str, JsonValue] | None,
    ) -> _Request[RunData, RunData]:
        options = {"task_id": self.task_id, "tags": _list(tags), "metadata": metadata}
        return _Request("create_run_data", (self.run_id, key, value), options, _same)

    def _get(self, key: str, default: JsonValue) -> _Request[RunData | None, JsonValue]:
        def value_of(entry: RunData | None) -> JsonValue:
            return default if entry is None else entry.value

        return _Request("get_run_data", (self.run_id, key), {}, value_of)

    def _get_all(self, key: str) -> _Request[list[RunData], list[RunData]]:
        return _Request("get_all_run_data", (self.run_id, key), {}, _same)

    def _query(
        self,
        key_starts_with: Sequence[str] | None,
        tags: Sequence[str] | None,
        tag_mode: TagMode,
        include_all: bool,
        filters: dict[str, Any],
    ) -> _Request[Page[RunData], list[RunData]]:
        options = {
            "key_starts_with": _list(key_starts_with),
            "tags": _list(tags),
            "tag_mode": tag_mode,
            "include_all": include_all,
            **filters,
        }
        return _Request("query_run_data", (self.run_id,), options, _entries)

    def _send(self, request: _Request[Any, T]) -> T:
        method = getattr(self.client, request.method)
        return request.finish(method(*request.args, **request.kwargs).unwrap())

    async def _asend(self, request: _Request[Any, T]) -> T:
        method = getattr(self.async_client, request.method)
        return request.finish((await method(*request.args, **request.kwargs)).unwrap())

    def _submit(
        self,
        client: ForemanClient | _OnLoop,
        type: str,
        input_data: JsonValue,
        queue: str | None,
        max_retries: int | None,
        metadata: dict[str, JsonValue] | None,
    ) -> Task:
        with self._spawn_lock:
            self._spawned += 1
            key = f"spawn:{self.task_id}:{self._spawned}"
        return submit(
            self.run_id,
            type,
            input_data,
            client=cast("ForemanClient", client),
            queue=queue,
            parent_task_id=self.task_id,
            max_retries=max_retries,
            metadata=metadata,
            connection=self.connection,
            idempotency_key=key,
            namespace=self.namespace,
        )

    def __repr__(self) -> str:
        return f"TaskContext(task_id={self.task_id!r}, type={self.type!r}, attempt={self.attempt})"


def _entries(page: Page[RunData]) -> list[RunData]:
    return list(page.data)


def _async_twin(client: ForemanClient) -> AsyncForemanClient:
    """An async client with ``client``'s settings: URL, key, timeout and retry policy."""
    settings = client._settings
    twin = AsyncForemanClient(
        settings.base_url,
        "",
        timeout=settings.timeout,
        retry=settings.retry,
        transport=client._async_transport(),
    )
    twin._settings = settings  # the same key and headers; the settings are never changed
    return twin


class _OnLoop:
    """The sync client's methods for code in a worker thread, each one run by an async
    client on its event loop: lets :func:`~foreman_worker.enqueue.submit` (sync, and the
    one place that says how a task is submitted) make its API calls without a second
    client or a blocked loop."""

    def __init__(self, client: AsyncForemanClient, loop: asyncio.AbstractEventLoop) -> None:
        self._client = client
        self._loop = loop

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._client, name)
        if not inspect.iscoroutinefunction(method):
            return method

        def call(*args: Any, **kwargs: Any) -> Any:
            if self._loop.is_closed():
                raise RuntimeError("the handler's event loop has closed")
            future = asyncio.run_coroutine_threadsafe(method(*args, **kwargs), self._loop)
            while True:
                try:
                    return future.result(timeout=1.0)
                except concurrent.futures.TimeoutError:
                    if self._loop.is_closed():  # before it ran the call: it never will
                        future.cancel()
                        raise RuntimeError("the handler's event loop has closed") from None

        return call
