"""SQL for dashboard sessions (``ui_sessions``): open, find with the key behind, close.

A session row holds the SHA-256 of the browser's token (the cookie), the API key that
signed in, the session's CSRF token and its expiry. Finding a session also reads its key,
so a revoked or expired key ends its sessions at once.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass
from datetime import timedelta

import sqlalchemy as sa

from foreman_api.clock import utcnow
from foreman_api.db import Database
from foreman_api.storage.api_keys import ApiKeyRecord, record_from_row
from foreman_api.storage.tables import api_keys, ui_sessions
from foreman_api.storage.types import TIMESTAMP_TYPE

_NOW = sa.bindparam("p_now", type_=TIMESTAMP_TYPE)
_INSERT = ui_sessions.insert()
_DELETE_EXPIRED = ui_sessions.delete().where(ui_sessions.c.expires_at <= _NOW)
_DELETE = ui_sessions.delete().where(ui_sessions.c.token_hash == sa.bindparam("p_hash"))
_FIND = (
    sa.select(api_keys, ui_sessions.c.csrf_token)
    .select_from(ui_sessions.join(api_keys, api_keys.c.id == ui_sessions.c.key_id))
    .where(ui_sessions.c.token_hash == sa.bindparam("p_hash"), ui_sessions.c.expires_at > _NOW)
)


@dataclass(frozen=True, slots=True)
class OpenSession:
    """A live session: the key that signed in and the token forms must carry."""

    key: ApiKeyRecord
    csrf_token: str


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


async def open_session(db: Database, *, key_id: uuid.UUID, lifetime: timedelta) -> str:
    """Store a new session of ``key_id``; return its token (the cookie's value).

    Sessions that have expired are deleted on the way (an indexed range)."""
    now = utcnow()
    token = secrets.token_urlsafe(32)
    values = {
        "token_hash": _hash(token),
        "key_id": key_id,
        "csrf_token": secrets.token_urlsafe(32),
        "created_at": now,
        "expires_at": now + lifetime,
    }
    async with db.transaction(write=True) as tx:
        await tx.run(_DELETE_EXPIRED, {"p_now": now})
        await tx.run(_INSERT, values)
    return token


async def find_session(db: Database, *, token: str) -> OpenSession | None:
    """The unexpired session of ``token``, or None."""
    row = await db.one(_FIND, {"p_hash": _hash(token), "p_now": utcnow()})
    if row is None:
        return None
    return OpenSession(key=record_from_row(row), csrf_token=row["csrf_token"])


async def close_session(db: Database, *, token: str) -> None:
    """Delete the session of ``token`` (signing out); nothing if there is none."""
    await db.run(_DELETE, {"p_hash": _hash(token)})
