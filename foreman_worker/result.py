"""``Result[T]``: what every client call returns, success or failure, never an exception.

    result = client.get_task(task_id)
    if not result.success:
        log.warning("lookup failed: %s", result.error)   # ApiErrorInfo
        return
    task = result.data

``result.unwrap()`` returns the data or raises :class:`~foreman_worker.errors.ApiError`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, TypeVar

from foreman_api.schemas import ErrorDetail
from foreman_worker.errors import ApiError

T = TypeVar("T")

NETWORK_ERROR = "network_error"
"""No response: the connection failed or broke (``status`` is None)."""
TIMEOUT = "timeout"
"""No response in time (``status`` is None)."""
INVALID_RESPONSE = "invalid_response"
"""A response that is not JSON or does not match the expected shape."""
INVALID_REQUEST = "invalid_request"
"""Rejected before sending (``status`` None) or by the server (``400``)."""


@dataclass(frozen=True, slots=True)
class ApiErrorInfo:
    """Why a call failed.

    ``status`` is the HTTP status, or None when no response arrived or the request was
    rejected locally before sending. ``code`` is the API's error code (``not_found``,
    ``conflict``, ``rate_limited``…) or one of the client's own: ``network_error``,
    ``timeout``, ``invalid_response``, ``invalid_request``. ``retry_after`` is the server's
    ``Retry-After`` in seconds, when it sent one.
    """

    status: int | None
    code: str
    message: str
    details: tuple[ErrorDetail, ...] = ()
    retry_after: float | None = None

    def to_exception(self) -> ApiError:
        """The same failure as an :class:`ApiError` to raise."""
        return ApiError(
            self.status,
            self.code,
            self.message,
            details=self.details,
            retry_after=self.retry_after,
        )

    def __str__(self) -> str:
        prefix = f"{self.status} {self.code}" if self.status is not None else self.code
        return f"{prefix}: {self.message}"


@dataclass(frozen=True, slots=True)
class Result(Generic[T]):
    """The outcome of one client call: ``data`` on success, ``error`` on failure.

    ``success`` is stored rather than derived because ``None`` can be valid data
    (``get_run_data`` of a key with no entry succeeds with ``data=None``).
    """

    success: bool
    data: T | None = None
    error: ApiErrorInfo | None = None
    warnings: tuple[str, ...] = ()
    """The server's ``Foreman-Warning`` headers, e.g. that no live worker serves a type."""

    def __post_init__(self) -> None:
        if self.success == (self.error is not None):
            raise ValueError("a Result has an error exactly when it is not a success")
        if not self.success and self.data is not None:
            raise ValueError("a failed Result carries no data")

    @classmethod
    def ok(cls, data: T, warnings: tuple[str, ...] = ()) -> Result[T]:
        """A successful result carrying ``data`` (and the server's warnings, if any)."""
        return cls(True, data, None, warnings)

    @classmethod
    def fail(cls, error: ApiErrorInfo) -> Result[T]:
        """A failed result carrying ``error``."""
        return cls(False, None, error)

    def unwrap(self) -> T:
        """Return the data, or raise :class:`ApiError` if the call failed."""
        if self.error is not None:
            raise self.error.to_exception()
        return self.data  # type: ignore[return-value]  # T may itself admit None
