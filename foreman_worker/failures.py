"""Why an attempt failed: the :class:`Failure` the runner records as ``errorData``, made
from a handler's exception or from its input or output not matching its annotations."""

from __future__ import annotations

import dataclasses
import traceback as tb_module
from collections.abc import Callable
from dataclasses import dataclass, field

from pydantic import JsonValue, ValidationError

from foreman_worker import validation
from foreman_worker.registry import Backoff

TRACEBACK_LIMIT = 8 * 1024
"""errorData.traceback keeps the last 8 KiB."""


@dataclass(frozen=True, slots=True)
class Failure:
    """Why an attempt failed, and whether another attempt may help."""

    type: str
    message: str
    retryable: bool
    traceback: str | None = None
    delay: float | None = None
    extra: dict[str, JsonValue] = field(default_factory=dict)

    @classmethod
    def from_exception(cls, exc: BaseException, *, retryable: bool = True) -> Failure:
        text = "".join(tb_module.format_exception(exc))
        return cls(
            type=type(exc).__name__,
            message=str(exc) or type(exc).__name__,
            retryable=retryable,
            traceback=text[-TRACEBACK_LIMIT:],
        )

    def with_delay(self, delay: float | None) -> Failure:
        """The same failure, retried after ``delay`` seconds (None: the handler's backoff)."""
        return dataclasses.replace(self, delay=delay)

    def error_data(self, attempt: int) -> dict[str, JsonValue]:
        return {
            "type": self.type,
            "message": self.message,
            "traceback": self.traceback,
            "attempt": attempt,
            **self.extra,
        }


def backoff_delay(backoff: Backoff, retry_number: int, rand: Callable[[], float]) -> float:
    """Wait before retry ``retry_number``: uniform in [ceiling/2, ceiling] (jitter)."""
    ceiling = backoff.ceiling(retry_number)
    return ceiling / 2 + rand() * ceiling / 2


def invalid(type_: str, what: str, exc: ValidationError) -> Failure:
    """A failure naming each field that did not validate, in the message and as a list;
    never retried (the same value fails the same way every time)."""
    errors: list[JsonValue] = [
        {"field": error["field"], "message": error["message"]}
        for error in validation.field_errors(exc)
    ]
    return Failure(
        type_, f"{what}: {validation.summary(exc)}", retryable=False, extra={"errors": errors}
    )
