"""Reading the outcome of a call: pure functions, no I/O.

A response or an httpx exception becomes an :class:`Attempt`: the :class:`Result` to hand
back and whether sending the call again may help. Nothing here raises for a failed call.
"""

from __future__ import annotations

import email.utils
import math
import time
from dataclasses import dataclass
from typing import Final, Generic, TypeVar

import httpx
from pydantic import ValidationError

from foreman_api.schemas import ErrorBody
from foreman_worker._calls import Call
from foreman_worker.result import INVALID_RESPONSE, NETWORK_ERROR, TIMEOUT, ApiErrorInfo, Result

T = TypeVar("T")

# Retried for any call: the request changed nothing, or changes nothing twice.
RETRY_STATUSES: Final = frozenset({429, 502, 503, 504})
# Retried for a call that creates something: the server says it did not process it.
CREATE_RETRY_STATUSES: Final = frozenset({429, 503})
WARNING_HEADER: Final = "Foreman-Warning"
# Failures that prove the request never reached the server.
_UNSENT_ERRORS: Final = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)

_STATUS_CODES: Final = {
    400: "invalid_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    409: "conflict",
    413: "payload_too_large",
    429: "rate_limited",
    500: "internal_error",
    502: "bad_gateway",
    503: "service_unavailable",
    504: "gateway_timeout",
}


@dataclass(frozen=True, slots=True)
class Attempt(Generic[T]):
    """The outcome of sending a call once, and whether sending it again may help."""

    result: Result[T]
    retryable: bool
    label: str


def attempt_from_response(call: Call[T], response: httpx.Response) -> Attempt[T]:
    """Read one response: parse a success, describe a failure, decide whether to retry."""
    status = response.status_code
    if 200 <= status < 300 or status in call.also_ok:
        try:
            warnings = tuple(response.headers.get_list(WARNING_HEADER))
            result = Result.ok(call.parse(response.content), warnings)
            return Attempt(result, False, call.label)
        except ValidationError as exc:
            if status in call.also_ok:
                pass  # not the expected body after all: read it as an error below
            else:
                message = f"unexpected response to {call.label}: {_first_error(exc)}"
                info = ApiErrorInfo(status, INVALID_RESPONSE, message)
                return Attempt(Result.fail(info), False, call.label)
    retry_on = CREATE_RETRY_STATUSES if call.creates else RETRY_STATUSES
    return Attempt(Result.fail(error_from_response(response)), status in retry_on, call.label)


def attempt_from_exception(call: Call[T], exc: httpx.HTTPError) -> Attempt[T]:
    """Translate an httpx exception; never let it escape the client."""
    if isinstance(exc, httpx.TimeoutException):
        code = TIMEOUT
    elif isinstance(exc, httpx.DecodingError):
        code = INVALID_RESPONSE
    else:
        code = NETWORK_ERROR
    detail = str(exc) or "no detail"
    info = ApiErrorInfo(None, code, f"{call.label}: {type(exc).__name__}: {detail}")
    if isinstance(exc, _UNSENT_ERRORS):
        retryable = True
    else:
        retryable = not call.creates and isinstance(exc, httpx.TransportError)
    return Attempt(Result.fail(info), retryable, call.label)


def error_from_response(response: httpx.Response) -> ApiErrorInfo:
    """The API's error body as an :class:`ApiErrorInfo`, or a fallback for foreign bodies."""
    status = response.status_code
    retry_after = parse_retry_after(response.headers.get("Retry-After"))
    try:
        body = ErrorBody.model_validate_json(response.content)
    except ValidationError:
        code = _STATUS_CODES.get(status, "http_error")
        snippet = response.text[:200].strip() if response.content else ""
        message = f"HTTP {status} {response.reason_phrase}".rstrip()
        if snippet:
            message = f"{message}: {snippet}"
        return ApiErrorInfo(status, code, message, retry_after=retry_after)
    return ApiErrorInfo(status, body.code, body.error, tuple(body.details), retry_after)


def parse_retry_after(value: str | None) -> float | None:
    """``Retry-After`` in seconds (delta-seconds or an HTTP date), None when absent or bad."""
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            moment = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = moment.timestamp() - time.time()
    if not math.isfinite(seconds):
        return None
    return max(seconds, 0.0)


def _first_error(exc: ValidationError) -> str:
    errors = exc.errors(include_url=False)
    if not errors:
        return str(exc)
    err = errors[0]
    where = ".".join(str(part) for part in err["loc"])
    return f"{where}: {err['msg']}" if where else err["msg"]
