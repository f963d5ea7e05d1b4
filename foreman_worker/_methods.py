"""Client methods made from the call builders of :mod:`foreman_worker._calls`.

Each API call is written once, as a builder: its parameters, defaults, docstring and the
request it makes. ``create_run = sync_method(_calls.create_run)`` in a client class turns
it into a method with the same parameters that sends the call and returns a
:class:`~foreman_worker.result.Result` (awaited, for :func:`async_method`). Type checkers
see the builder's parameters (``Concatenate``); ``help()`` and ``inspect.signature`` see
them too, with ``self`` and the ``Result`` return.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Coroutine
from typing import Any, Concatenate, ParamSpec, Protocol, TypeVar

from foreman_worker._calls import Call
from foreman_worker.result import Result

P = ParamSpec("P")
T = TypeVar("T")


class SyncCaller(Protocol):
    def _call(
        self, build: Callable[P, Call[T]], /, *args: P.args, **kwargs: P.kwargs
    ) -> Result[T]: ...


class AsyncCaller(Protocol):
    async def _call(
        self, build: Callable[P, Call[T]], /, *args: P.args, **kwargs: P.kwargs
    ) -> Result[T]: ...


def sync_method(build: Callable[P, Call[T]]) -> Callable[Concatenate[SyncCaller, P], Result[T]]:
    """The method of :class:`~foreman_worker.client.ForemanClient` that sends ``build``'s call."""

    def method(self: SyncCaller, /, *args: P.args, **kwargs: P.kwargs) -> Result[T]:
        return self._call(build, *args, **kwargs)

    return _like(method, build)


def async_method(
    build: Callable[P, Call[T]],
) -> Callable[Concatenate[AsyncCaller, P], Coroutine[Any, Any, Result[T]]]:
    """The method of :class:`~foreman_worker.client.AsyncForemanClient` that sends
    ``build``'s call."""

    async def method(self: AsyncCaller, /, *args: P.args, **kwargs: P.kwargs) -> Result[T]:
        return await self._call(build, *args, **kwargs)

    return _like(method, build)


_F = TypeVar("_F", bound=Callable[..., Any])


def _like(method: _F, build: Callable[..., Any]) -> _F:
    """``method`` named and documented as ``build``, with its signature plus ``self``."""
    functools.update_wrapper(method, build)
    del method.__wrapped__  # type: ignore[attr-defined]  # the signature below is the truth
    signature = inspect.signature(build)
    returns = signature.return_annotation
    if isinstance(returns, str) and returns.startswith("Call["):
        returns = "Result[" + returns.removeprefix("Call[")
    self_parameter = inspect.Parameter("self", inspect.Parameter.POSITIONAL_ONLY)
    method.__signature__ = signature.replace(  # type: ignore[attr-defined]
        parameters=[self_parameter, *signature.parameters.values()], return_annotation=returns
    )
    return method
