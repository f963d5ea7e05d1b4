"""What the domain refuses, in its own terms: a kind (the class), a code, a message and
the fields concerned. Nothing here knows HTTP: :func:`foreman_api.errors.as_api_error`
gives each kind its status, once, for the API and the dashboard alike.

DomainError
├── Invalid     input that cannot be acted on (code invalid_request)
├── NotFound    nothing of that id in the caller's organisation (code not_found)
└── Conflict    the current state forbids it (code conflict, invalid_transition, …)
"""

from __future__ import annotations

from typing import Any


class DomainError(Exception):
    """A refusal: ``code`` names it for machines, ``message`` for people; ``details``
    lists the fields concerned (``{"field", "message"}``)."""

    code = "refused"

    def __init__(
        self, message: str, *, code: str | None = None, details: list[dict[str, Any]] | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.details = details or []


class Invalid(DomainError):
    code = "invalid_request"


class NotFound(DomainError):
    code = "not_found"


class Conflict(DomainError):
    code = "conflict"


def invalid_field(field: str, message: str) -> Invalid:
    """The refusal of one field's value, named in the message and the details."""
    return Invalid(f"{field}: {message}", details=[{"field": field, "message": message}])
