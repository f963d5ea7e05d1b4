"""The ``@task`` decorator and the registry of task handlers.

A handler takes the task's context and, optionally, its input::

    @task("send-email", queue="mail", timeout=30)
    def send_email(ctx: TaskContext, data: Email) -> dict[str, str]:
        ...

* ``handler(ctx)`` — the handler reads ``ctx.input`` itself.
* ``handler(ctx, data)`` — ``data`` is the task's whole ``inputData``, validated into the
  parameter's annotation (a model, a dataclass, ``dict[str, int]``, ``int``…); invalid
  input fails the task at once (no retry) with the offending fields named.

Handlers may be ``def`` or ``async def``. The return value (any JSON value, or a model or
dataclass) becomes the task's ``outputData``, after a check against the return annotation
(:mod:`foreman_worker.validation`). Options are checked when the module is imported:
a duplicate type, an unknown option, a bad queue name or a bad number raise
:class:`~foreman_worker.errors.RegistrationError` at once.
"""

from __future__ import annotations

import inspect
import math
import re
import sys
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, ParamSpec, TypedDict, TypeVar, Unpack

from pydantic import BaseModel

from foreman_worker.errors import RegistrationError
from foreman_worker.validation import HandlerTypes, defining_scope, handler_types

P = ParamSpec("P")
R = TypeVar("R")

QUEUE_NAME = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
DEFAULT_QUEUE = "default"
MAX_RETRIES_LIMIT = 10
"""The API accepts ``maxRetries`` from 0 to 10."""


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff with jitter between attempts, in seconds.

    Before retry *n* (n = 1, 2, …) the runner waits a random time between half and all of
    ``min(maximum, initial * factor ** (n - 1))``.
    """

    initial: float = 1.0
    factor: float = 2.0
    maximum: float = 300.0

    def __post_init__(self) -> None:
        for name in ("initial", "factor", "maximum"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise RegistrationError(f"backoff {name} must be a number, got {value!r}")
            if not math.isfinite(value) or value < 0:
                raise RegistrationError(f"backoff {name} must be a finite number >= 0")
        if self.factor < 1:
            raise RegistrationError("backoff factor must be >= 1")
        if self.maximum < self.initial:
            raise RegistrationError("backoff maximum must be >= backoff initial")

    def ceiling(self, retry_number: int) -> float:
        """The upper bound of the wait before retry ``retry_number`` (1-based)."""
        exponent = max(retry_number - 1, 0)
        try:
            value = self.initial * self.factor**exponent
        except OverflowError:
            return self.maximum
        return min(self.maximum, value)


class TaskOptions(TypedDict, total=False):
    """The options ``@task`` accepts; anything else is a :class:`RegistrationError`."""

    queue: str
    max_retries: int | None
    timeout: float | None
    backoff: float | Backoff | None


_OPTION_NAMES = frozenset(TaskOptions.__annotations__)
InputModel = type[BaseModel]


@dataclass(frozen=True, slots=True)
class TaskHandler:
    """One registered handler, with its options normalised."""

    type: str
    func: Callable[..., Any]
    queue: str = DEFAULT_QUEUE
    max_retries: int | None = None
    """Used as ``maxRetries`` when ``submit``/``spawn`` create a task of this type in a
    process that knows the handler. The runner obeys the task's own ``maxRetries``."""
    timeout: float | None = None
    """Seconds an attempt may run; ``None`` means no limit."""
    backoff: Backoff = field(default_factory=Backoff)
    types: HandlerTypes = field(default_factory=HandlerTypes)
    """Its input and output checks (:mod:`foreman_worker.validation`), built once here."""
    is_async: bool = False

    @property
    def takes_input(self) -> bool:
        """``handler(ctx, data)`` rather than ``handler(ctx)``."""
        return self.types.takes_input

    @property
    def input_model(self) -> InputModel | None:
        """The input annotation when it is a pydantic model."""
        return self.types.input_model


def _check_number(name: str, value: object, *, minimum: float, integer: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, int if integer else int | float):
        kind = "an integer" if integer else "a number"
        raise RegistrationError(f"{name} must be {kind}, got {value!r}")
    if not isinstance(value, int | float) or not math.isfinite(value) or value < minimum:
        raise RegistrationError(f"{name} must be >= {minimum}, got {value!r}")


def make_handler(
    type_: str,
    func: Callable[..., Any],
    options: dict[str, Any],
    *,
    localns: Mapping[str, Any] | None = None,
) -> TaskHandler:
    """Validate ``@task`` options and build the handler record (the one normalising helper).

    ``localns`` resolves annotations naming types local to the registering function.
    """
    if not isinstance(type_, str) or not 1 <= len(type_) <= 255 or type_.strip() != type_:
        raise RegistrationError(
            f"task type must be a non-empty string of at most 255 characters without "
            f"surrounding spaces, got {type_!r}"
        )
    unknown = sorted(set(options) - _OPTION_NAMES)
    if unknown:
        raise RegistrationError(
            f"task {type_!r}: unknown option(s) {', '.join(unknown)}; "
            f"known: {', '.join(sorted(_OPTION_NAMES))}"
        )
    if not callable(func):
        raise RegistrationError(f"task {type_!r}: the handler must be callable")

    queue = options.get("queue", DEFAULT_QUEUE)
    if not isinstance(queue, str) or not QUEUE_NAME.fullmatch(queue):
        raise RegistrationError(
            f"task {type_!r}: queue name {queue!r} must be 1-64 characters of A-Z a-z 0-9 _ . : -"
        )
    max_retries = options.get("max_retries")
    if max_retries is not None:
        _check_number(f"task {type_!r}: max_retries", max_retries, minimum=0, integer=True)
        if max_retries > MAX_RETRIES_LIMIT:
            raise RegistrationError(
                f"task {type_!r}: max_retries must be <= {MAX_RETRIES_LIMIT}, got {max_retries}"
            )
    timeout = options.get("timeout")
    if timeout is not None:
        _check_number(f"task {type_!r}: timeout", timeout, minimum=0)
        if timeout == 0:
            raise RegistrationError(f"task {type_!r}: timeout must be > 0 (or None for no limit)")
        timeout = float(timeout)
    backoff_option = options.get("backoff")
    if backoff_option is None:
        backoff = Backoff()
    elif isinstance(backoff_option, Backoff):
        backoff = backoff_option
    else:
        _check_number(f"task {type_!r}: backoff", backoff_option, minimum=0)
        backoff = Backoff(initial=float(backoff_option), maximum=max(300.0, backoff_option))

    return TaskHandler(
        type=type_,
        func=func,
        queue=queue,
        max_retries=max_retries,
        timeout=timeout,
        backoff=backoff,
        types=handler_types(type_, func, localns=localns),
        is_async=inspect.iscoroutinefunction(func),
    )


class Registry:
    """Task type → handler. The module-level :data:`registry` is the one ``@task`` uses."""

    def __init__(self) -> None:
        self._handlers: dict[str, TaskHandler] = {}
        self._lock = threading.Lock()

    def task(
        self, type_: str, /, **options: Unpack[TaskOptions]
    ) -> Callable[[Callable[P, R]], Callable[P, R]]:
        """Register the decorated function as the handler of task type ``type_``.

        The function is returned unchanged, so it stays directly callable.
        """
        options_dict: dict[str, Any] = dict(options)

        def decorate(func: Callable[P, R]) -> Callable[P, R]:
            localns = defining_scope(func, sys._getframe(1))
            self.add(make_handler(type_, func, options_dict, localns=localns))
            return func

        return decorate

    def add(self, handler: TaskHandler) -> None:
        with self._lock:
            existing = self._handlers.get(handler.type)
            if existing is not None and existing.func is not handler.func:
                where = f"{existing.func.__module__}.{existing.func.__qualname__}"
                raise RegistrationError(
                    f"task type {handler.type!r} is already registered by {where}"
                )
            self._handlers[handler.type] = handler

    def get(self, type_: str) -> TaskHandler | None:
        return self._handlers.get(type_)

    def queues(self) -> list[str]:
        """The queues the registered handlers use, sorted."""
        return sorted({h.queue for h in self._handlers.values()})

    def types(self) -> list[str]:
        return sorted(self._handlers)

    def clear(self) -> None:
        """Forget every handler (for tests)."""
        with self._lock:
            self._handlers.clear()

    def __len__(self) -> int:
        return len(self._handlers)

    def __iter__(self) -> Iterator[TaskHandler]:
        return iter(list(self._handlers.values()))

    def __contains__(self, type_: object) -> bool:
        return type_ in self._handlers


registry = Registry()
"""The process-wide registry that :func:`task` fills and the worker reads."""


def task(
    type_: str, /, **options: Unpack[TaskOptions]
) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Register a task handler: ``@task("type", queue=, max_retries=, timeout=, backoff=)``.

    ``backoff`` is the first retry delay in seconds (doubling up to 300 s) or a
    :class:`Backoff`. See the module docstring for the handler signature.
    """
    return registry.task(type_, **options)
