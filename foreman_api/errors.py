"""HTTP errors as exceptions, and the one mapping of the domain's refusals to them.

The domain's refusals (:mod:`foreman_api.domain.errors`) get their status here, in
:func:`as_api_error`: ``Invalid`` 400, ``NotFound`` 404 (also for another organisation's
ids), ``Conflict`` 409. What only HTTP knows is raised as an :class:`ApiError` directly:

ApiError                 base: status_code, code, message, details
├── Unauthorized         401 unauthorized (no, unknown, expired or revoked key)
├── Forbidden            403 forbidden (names the permission required)
├── PayloadTooLarge      413 payload_too_large
├── RateLimited          429 rate_limited (carries retry_after)
├── DatabaseUnavailable  503 database_unavailable (nothing written; Retry-After)
└── DatabaseOutcomeUnknown   504 database_outcome_unknown (lost during COMMIT)
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any, Final

from foreman_api.domain.errors import Conflict, DomainError, Invalid, NotFound


class ApiError(DomainError):
    """A refusal only HTTP knows, with its status and response headers."""

    status_code = 500
    code = "internal_error"

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        details: list[dict[str, Any]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message, code=code, details=details)
        self.headers = headers or {}


class Unauthorized(ApiError):
    status_code = 401
    code = "unauthorized"


class Forbidden(ApiError):
    status_code = 403
    code = "forbidden"


class PayloadTooLarge(ApiError):
    status_code = 413
    code = "payload_too_large"


class RateLimited(ApiError):
    status_code = 429
    code = "rate_limited"


class DatabaseUnavailable(ApiError):
    """The database could not be reached (or was too busy); nothing was written."""

    status_code = 503
    code = "database_unavailable"


class DatabaseOutcomeUnknown(ApiError):
    """The database connection was lost while a COMMIT was in flight: it may have landed.

    Like a gateway timeout, repeating the request is safe for reads and for updates whose
    repetition is harmless, not for creates without an idempotency key.
    """

    status_code = 504
    code = "database_outcome_unknown"


def error_body(message: str, code: str, details: list[dict[str, Any]] | None = None) -> bytes:
    """The JSON body of every error response: ``{"error", "code", "details"}``."""
    return json.dumps({"error": message, "code": code, "details": details or []}).encode()


_STATUS: Final[Mapping[type[DomainError], int]] = {Invalid: 400, NotFound: 404, Conflict: 409}


def as_api_error(exc: DomainError) -> ApiError:
    """The HTTP error of a refusal: a domain error gets the status of its kind here (the
    one place that knows it); an :class:`ApiError` is one already."""
    if isinstance(exc, ApiError):
        return exc
    status = next((_STATUS[kind] for kind in type(exc).__mro__ if kind in _STATUS), 400)
    error = ApiError(exc.message, code=exc.code, details=exc.details)
    error.status_code = status
    return error


def invalid_request(errors: Iterable[Mapping[str, Any]]) -> Invalid:
    """The ``400`` for pydantic/FastAPI validation errors: each field named in ``details``
    and the first three in the message."""
    details = [
        {"field": _field_path(tuple(err.get("loc", ()))), "message": err.get("msg", "")}
        for err in errors
    ]
    summary = "; ".join(
        f"{d['field']}: {d['message']}" if d["field"] else d["message"] for d in details[:3]
    )
    return Invalid(f"invalid request: {summary}", details=details)


def _field_path(location: tuple[Any, ...]) -> str:
    parts = [str(p) for p in location if p not in ("body", "query", "path")]
    return ".".join(parts) or str(location[0] if location else "body")
