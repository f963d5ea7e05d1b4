"""What a handler gets (:class:`Call`) and gives back (:class:`Reply`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from foreman_api.auth import Principal
from foreman_api.db import Database

if TYPE_CHECKING:
    from foreman_api.deps import Services


@dataclass(slots=True)
class Call:
    """One authenticated, validated request."""

    principal: Principal
    db: Database
    services: Services
    path: Any = None
    """The endpoint's path model, validated (None if it declares none)."""
    query: Any = None
    """The endpoint's query model, validated (None if it declares none)."""
    body: Any = None
    """The endpoint's body model, validated (None if it declares none)."""

    @property
    def org_id(self) -> str:
        return self.principal.org_id


@dataclass(slots=True)
class Reply:
    """A response: JSON bytes, a status and extra headers."""

    body: bytes
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str | None = None
    """None: JSON."""


def reply(model: BaseModel, status: int = 200) -> Reply:
    """Serialise a wire model (camelCase, ISO timestamps) once, without re-validation."""
    return Reply(model.__pydantic_serializer__.to_json(model, by_alias=True), status)
