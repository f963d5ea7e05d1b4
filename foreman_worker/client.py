"""HTTP clients for the Foreman API: :class:`ForemanClient` (sync) and :class:`AsyncForemanClient`.

Both have the same methods, and every method returns a :class:`~foreman_worker.result.Result`:
API errors, network errors, timeouts and malformed responses come back as ``result.error``,
never as exceptions. Only misuse raises (a wrong argument type, a bad configuration).

Each call is written once, in :mod:`foreman_worker._calls`: its parameters, docstring,
what it sends and how its answer is read. Both classes make their methods from those
builders (:mod:`foreman_worker._methods`) and only do the I/O and the waiting between
retries.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any, NamedTuple, ParamSpec, Self, TypeVar, cast

import httpx
import tenacity

from foreman_worker import _calls, _responses
from foreman_worker._async_client import AsyncForemanClient
from foreman_worker._calls import (
    UNSET,
    Call,
    InvalidRequest,
    Unset,
)
from foreman_worker._config import ClientBase
from foreman_worker._methods import sync_method
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

    def _async_transport(self) -> httpx.AsyncBaseTransport | None:
        """The transport of the async clients made from this one (a handler's
        :attr:`TaskContext.async_client`); None: the network."""
        return None

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

        Only over the lean transport; otherwise it does nothing. The same call already
        ahead is not sent twice. Any other call made first by this thread drops the early
        answer unread (its connection is closed).
        """
        if self._wire is None:
            return
        try:
            call = build(*args, **kwargs)
        except InvalidRequest:
            return  # the real call reports it
        ahead = self._ahead
        if ahead is not None and ahead.thread == threading.get_ident() and ahead.call == call:
            return
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

    create_run = sync_method(_calls.create_run)

    get_run = sync_method(_calls.get_run)

    update_run = sync_method(_calls.update_run)

    list_runs = sync_method(_calls.list_runs)

    # ---- tasks ---------------------------------------------------------------------------

    create_task = sync_method(_calls.create_task)

    get_task = sync_method(_calls.get_task)

    update_task = sync_method(_calls.update_task)

    retry_task = sync_method(_calls.retry_task)

    retry_run = sync_method(_calls.retry_run)

    retry_tasks = sync_method(_calls.retry_tasks)

    list_attempts = sync_method(_calls.list_attempts)

    heartbeat_task = sync_method(_calls.heartbeat_task)

    reconcile_tasks = sync_method(_calls.reconcile_tasks)

    # ---- workers -------------------------------------------------------------------------

    register_worker = sync_method(_calls.register_worker)

    list_workers = sync_method(_calls.list_workers)

    list_queues = sync_method(_calls.list_queues)

    delete_worker = sync_method(_calls.delete_worker)

    list_tasks = sync_method(_calls.list_tasks)

    # ---- run data ------------------------------------------------------------------------

    create_run_data = sync_method(_calls.create_run_data)

    get_run_data = sync_method(_calls.get_run_data)

    get_all_run_data = sync_method(_calls.get_all_run_data)

    query_run_data_by_tags = sync_method(_calls.query_run_data_by_tags)

    query_run_data = sync_method(_calls.query_run_data)

    update_run_data_tags = sync_method(_calls.update_run_data_tags)

    delete_run_data = sync_method(_calls.delete_run_data)

    # ---- service -------------------------------------------------------------------------

    health = sync_method(_calls.health)
