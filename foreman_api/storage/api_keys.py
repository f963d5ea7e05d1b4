"""SQL for API keys. Only a SHA-256 hash of a key is stored, with a short display prefix."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from foreman_api.clock import utcnow
from foreman_api.storage.engine import read_transaction, single_read, write_transaction
from foreman_api.storage.tables import api_keys


@dataclass(frozen=True, slots=True)
class ApiKeyRecord:
    id: uuid.UUID
    org_id: str
    name: str
    prefix: str
    key_hash: str
    permissions: tuple[str, ...]
    rate_limit: str | None
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None


def record_from_row(row: Mapping[Any, Any]) -> ApiKeyRecord:
    """An ``api_keys`` row (any mapping of its columns) as a record."""
    return ApiKeyRecord(
        id=row["id"],
        org_id=row["org_id"],
        name=row["name"],
        prefix=row["prefix"],
        key_hash=row["key_hash"],
        permissions=tuple(row["permissions"]),
        rate_limit=row["rate_limit"],
        created_at=row["created_at"],
        expires_at=row["expires_at"],
        revoked_at=row["revoked_at"],
        last_used_at=row["last_used_at"],
    )


def insert_key(
    engine: sa.Engine,
    *,
    org_id: str,
    name: str,
    prefix: str,
    key_hash: str,
    permissions: list[str],
    rate_limit: str | None,
    expires_at: datetime | None,
) -> ApiKeyRecord:
    values = {
        "id": uuid.uuid4(),
        "org_id": org_id,
        "name": name,
        "prefix": prefix,
        "key_hash": key_hash,
        "permissions": permissions,
        "rate_limit": rate_limit,
        "created_at": utcnow(),
        "expires_at": expires_at,
    }
    with write_transaction(engine) as conn:
        row = conn.execute(api_keys.insert().values(values).returning(api_keys)).mappings().one()
    return record_from_row(row)


def find_by_hash(engine: sa.Engine, key_hash: str) -> ApiKeyRecord | None:
    with single_read(engine) as conn:
        row = (
            conn.execute(sa.select(api_keys).where(api_keys.c.key_hash == key_hash))
            .mappings()
            .first()
        )
    return record_from_row(row) if row else None


def list_keys(engine: sa.Engine) -> list[ApiKeyRecord]:
    with read_transaction(engine) as conn:
        rows = conn.execute(sa.select(api_keys).order_by(api_keys.c.created_at)).mappings().all()
    return [record_from_row(row) for row in rows]


def revoke_key(engine: sa.Engine, key_id: uuid.UUID) -> bool:
    """Revoke a key; False when no such key (or already revoked)."""
    with write_transaction(engine) as conn:
        result = conn.execute(
            api_keys.update()
            .where(api_keys.c.id == key_id, api_keys.c.revoked_at.is_(None))
            .values(revoked_at=utcnow())
        )
    return result.rowcount == 1


def touch_last_used(engine: sa.Engine, key_id: uuid.UUID, when: datetime) -> None:
    with write_transaction(engine) as conn:
        conn.execute(api_keys.update().where(api_keys.c.id == key_id).values(last_used_at=when))
