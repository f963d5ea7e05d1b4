"""The asynchronous client; same methods as the sync one, over ``httpx.AsyncClient``."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import ParamSpec, Self, TypeVar

import httpx
import tenacity

from foreman_worker import _calls, _responses
from foreman_worker._calls import Call, InvalidRequest
from foreman_worker._config import ClientBase
from foreman_worker._methods import async_method
from foreman_worker._responses import Attempt
from foreman_worker._retry import RetryPolicy
from foreman_worker.errors import ConfigurationError
from foreman_worker.result import Result

T = TypeVar("T")
P = ParamSpec("P")


class AsyncForemanClient(ClientBase):
    """Asynchronous client for the Foreman API: :class:`ForemanClient`'s methods, awaited.

    Same arguments, defaults, retry rules and results as the sync client; ``transport``
    must be an ``httpx.AsyncBaseTransport``. Close it with ``await client.close()`` or use
    ``async with``.
    """

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float = 10.0,
        retry: RetryPolicy | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if transport is not None and not isinstance(transport, httpx.AsyncBaseTransport):
            raise ConfigurationError("AsyncForemanClient needs an httpx.AsyncBaseTransport")
        super().__init__(base_url, api_key, timeout=timeout, retry=retry)
        self._http = httpx.AsyncClient(transport=transport, **self._http_options())
        self._sleep: Callable[[float], Awaitable[None]] = asyncio.sleep

    async def close(self) -> None:
        """Close the connections."""
        await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    async def _call(
        self, build: Callable[P, Call[T]], /, *args: P.args, **kwargs: P.kwargs
    ) -> Result[T]:
        try:
            call = build(*args, **kwargs)
        except InvalidRequest as exc:
            return Result.fail(exc.info)
        retrying = tenacity.AsyncRetrying(sleep=self._sleep, **self._settings.retry_options)
        attempt: Attempt[T] = await retrying(self._attempt, call)
        return attempt.result

    async def _attempt(self, call: Call[T]) -> Attempt[T]:
        try:
            response = await self._http.request(
                call.method, call.path, **self._settings.request_args(call)
            )
        except httpx.HTTPError as exc:
            return _responses.attempt_from_exception(call, exc)
        return _responses.attempt_from_response(call, response)

    # ---- runs ----------------------------------------------------------------------------

    create_run = async_method(_calls.create_run)

    get_run = async_method(_calls.get_run)

    update_run = async_method(_calls.update_run)

    list_runs = async_method(_calls.list_runs)

    # ---- tasks ---------------------------------------------------------------------------

    create_task = async_method(_calls.create_task)

    get_task = async_method(_calls.get_task)

    update_task = async_method(_calls.update_task)

    retry_task = async_method(_calls.retry_task)

    retry_run = async_method(_calls.retry_run)

    retry_tasks = async_method(_calls.retry_tasks)

    list_attempts = async_method(_calls.list_attempts)

    heartbeat_task = async_method(_calls.heartbeat_task)

    reconcile_tasks = async_method(_calls.reconcile_tasks)

    # ---- workers -------------------------------------------------------------------------

    register_worker = async_method(_calls.register_worker)

    list_workers = async_method(_calls.list_workers)

    list_queues = async_method(_calls.list_queues)

    delete_worker = async_method(_calls.delete_worker)

    list_tasks = async_method(_calls.list_tasks)

    # ---- run data ------------------------------------------------------------------------

    create_run_data = async_method(_calls.create_run_data)

    get_run_data = async_method(_calls.get_run_data)

    get_all_run_data = async_method(_calls.get_all_run_data)

    query_run_data_by_tags = async_method(_calls.query_run_data_by_tags)

    query_run_data = async_method(_calls.query_run_data)

    update_run_data_tags = async_method(_calls.update_run_data_tags)

    delete_run_data = async_method(_calls.delete_run_data)

    # ---- service -------------------------------------------------------------------------

    health = async_method(_calls.health)
