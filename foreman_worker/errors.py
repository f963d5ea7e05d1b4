"""Exceptions of the worker SDK, all under one base class.

    ForemanError
    ├── UsageError              the calling code is wrong; fix the code, never retry
    │   ├── ConfigurationError  bad client or worker settings (URL, retry policy, options)
    │   └── RegistrationError   bad ``@task`` declaration (duplicate type, unknown option)
    └── RuntimeFailure          something went wrong while running
        ├── ApiError            a failed API call; raised by ``Result.unwrap()``
        └── HandlerSignal       raised by a task handler to steer the runner
            ├── Retry           "retry me", after ``delay`` seconds or the task's backoff
            └── Fail            "fail me now", whatever retries are left

Client methods never raise for API or network failures: they return a
:class:`~foreman_worker.result.Result` whose ``error`` describes the failure, and
``Result.unwrap()`` turns that into :class:`ApiError` for code that prefers exceptions.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from foreman_api.schemas import ErrorDetail


class ForemanError(Exception):
    """Base class of every exception the SDK raises."""


class UsageError(ForemanError):
    """Misuse of the SDK: a programming error, raised as early as possible."""


class ConfigurationError(UsageError):
    """Invalid settings for the client, a retry policy or a worker."""


class RegistrationError(UsageError):
    """Invalid task handler declaration (duplicate type, unknown option, bad queue name)."""


class RuntimeFailure(ForemanError):
    """A failure while running: an API call that failed or a handler's signal."""


class ApiError(RuntimeFailure):
    """A failed API call.

    ``status`` is the HTTP status, or ``None`` when no response arrived (network error,
    timeout) or the request was rejected before sending. ``code`` is the API's
    snake_case error code (``not_found``, ``conflict``…) or one of the client's own
    (``network_error``, ``timeout``, ``invalid_response``, ``invalid_request``).
    """

    def __init__(
        self,
        status: int | None,
        code: str,
        message: str,
        *,
        details: Sequence[ErrorDetail] = (),
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = tuple(details)
        self.retry_after = retry_after

    def __str__(self) -> str:
        prefix = f"{self.status} {self.code}" if self.status is not None else self.code
        return f"{prefix}: {self.message}"


class HandlerSignal(RuntimeFailure):
    """Base of the exceptions a task handler raises to tell the runner what to do."""


class Retry(HandlerSignal):
    """Retry the task: after ``delay`` seconds, or after its backoff when ``delay`` is None.

    The task still counts the attempt: once its retries are used up it fails.
    """

    def __init__(self, delay: float | None = None, *, message: str = "retry requested") -> None:
        if delay is not None and not (
            isinstance(delay, int | float) and math.isfinite(delay) and delay >= 0
        ):
            raise ValueError(f"Retry delay must be a finite number >= 0, got {delay!r}")
        super().__init__(message)
        self.message = message
        self.delay = delay


class Fail(HandlerSignal):
    """Fail the task now, without retry, whatever retries it has left."""

    def __init__(self, message: str = "task failed") -> None:
        super().__init__(message)
        self.message = message
