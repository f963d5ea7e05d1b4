"""API keys: generation, hashing, lookup and permission checks.

A key is ``fmn_<env>_<secret>`` with 43 characters of URL-safe randomness. Its SHA-256 hash
is stored (a key carries 256 bits of entropy, so a slow password hash would add nothing but
latency); lookup is by hash through a unique index, and the stored hash is compared in
constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa

from foreman_api.clock import as_utc, utcnow
from foreman_api.errors import Forbidden, Unauthorized
from foreman_api.schemas import Permission
from foreman_api.settings import RateLimit, parse_rate_limit
from foreman_api.storage import api_keys as key_storage

KEY_PREFIX = "fmn"
KEY_FORMAT = re.compile(rf"{KEY_PREFIX}_[a-z0-9]{{1,16}}_[A-Za-z0-9_-]{{32,128}}")
"""What a presented key must look like before it is worth a lookup."""
DISPLAY_PREFIX_LENGTH = 12
LAST_USED_RESOLUTION = timedelta(minutes=1)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


@dataclass(frozen=True, slots=True)
class NewKey:
    """A freshly generated key: ``secret`` is shown once and never stored."""

    secret: str
    prefix: str
    key_hash: str


def generate_key(env: str) -> NewKey:
    secret = f"{KEY_PREFIX}_{env}_{secrets.token_urlsafe(32)}"
    return NewKey(
        secret=secret,
        prefix=secret[: len(KEY_PREFIX) + len(env) + 2 + 6],
        key_hash=hash_key(secret),
    )


@dataclass(frozen=True, slots=True)
class Principal:
    """The caller behind a request: one API key of one organisation."""

    key_id: uuid.UUID
    org_id: str
    permissions: frozenset[str]
    rate_limit: RateLimit | None
    """The key's own limit, or None for the server default."""

    def allows(self, permission: Permission) -> bool:
        resource = permission.value.split(":", 1)[0]
        return bool({Permission.ALL.value, f"{resource}:*", permission.value} & self.permissions)

    def require(self, permission: Permission) -> None:
        if not self.allows(permission):
            raise Forbidden(
                f"this API key lacks the '{permission.value}' permission",
                details=[{"field": None, "message": f"required permission: {permission.value}"}],
            )


def validate_permissions(names: list[str]) -> list[str]:
    """Check permission names; raises ValueError naming the unknown one."""
    known = {p.value for p in Permission}
    for name in names:
        if name not in known:
            raise ValueError(f"unknown permission {name!r}; known: {', '.join(sorted(known))}")
    return sorted(set(names))


class Authenticator:
    """Resolves a presented key to a Principal.

    Lookups are cached for ``cache_seconds`` so a busy key costs no query per request; a
    revocation therefore takes effect within that time on every API process. ``last_used_at``
    is written at most once per minute per key and process.

    :meth:`authenticate` may query the database. :meth:`resolve_cached` never does any I/O,
    so the event loop can call it directly and hand the request to :meth:`authenticate` in a
    worker thread only when it answers None.
    """

    def __init__(self, engine: sa.Engine, *, cache_seconds: float = 2.0) -> None:
        self._engine = engine
        self._cache_seconds = cache_seconds
        # key hash -> (when looked up, record, its principal)
        self._cache: dict[str, tuple[float, key_storage.ApiKeyRecord | None, Principal | None]]
        self._cache = {}
        self._last_touched: dict[uuid.UUID, datetime] = {}
        self._lock = threading.Lock()

    def _cached(
        self, key_hash: str
    ) -> tuple[key_storage.ApiKeyRecord | None, Principal | None] | None:
        """The cached (record, principal) of a hash, or None when not cached or stale."""
        with self._lock:
            cached = self._cache.get(key_hash)
        if cached and time.monotonic() - cached[0] < self._cache_seconds:
            return cached[1], cached[2]
        return None

    def _lookup(self, key_hash: str) -> tuple[key_storage.ApiKeyRecord | None, Principal | None]:
        cached = self._cached(key_hash)
        if cached is not None:
            return cached
        now = time.monotonic()
        record = key_storage.find_by_hash(self._engine, key_hash)
        principal = _principal(record) if record is not None else None
        with self._lock:
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[key_hash] = (now, record, principal)
        return record, principal

    def resolve_cached(self, presented: str | None) -> Principal | None:
        """Authenticate without I/O, or None when that needs the database.

        None when the key's record is not cached (or is stale) or its ``last_used_at`` is
        due to be written; then call :meth:`authenticate`. Raises the same ``Unauthorized``
        errors as :meth:`authenticate` for what it can decide.
        """
        key_hash = _check_format(presented)
        cached = self._cached(key_hash)
        if cached is None:
            return None
        now = utcnow()
        principal = _check_record(*cached, key_hash, now)
        if self._touch_due(principal.key_id, now, claim=False):
            return None  # authenticate() writes last_used_at
        return principal

    def authenticate(self, presented: str | None) -> Principal:
        """Resolve ``presented`` (the key the request carried, None for none).

        Each failure has its own ``code``: ``missing_api_key``, ``malformed_api_key`` (not
        of the form ``fmn_<env>_<secret>``), ``invalid_api_key`` (unknown), ``key_revoked``,
        ``key_expired``.
        """
        key_hash = _check_format(presented)
        now = utcnow()
        principal = _check_record(*self._lookup(key_hash), key_hash, now)
        if self._touch_due(principal.key_id, now):
            key_storage.touch_last_used(self._engine, principal.key_id, now)
        return principal

    def _touch_due(self, key_id: uuid.UUID, now: datetime, *, claim: bool = True) -> bool:
        """Whether ``last_used_at`` should be written now; with ``claim``, the caller
        takes the write (so concurrent requests do not all write)."""
        with self._lock:
            last = self._last_touched.get(key_id)
            if last is not None and now - last < LAST_USED_RESOLUTION:
                return False
            if claim:
                self._last_touched[key_id] = now
        return True


def _check_format(presented: str | None) -> str:
    """The hash of a well-formed presented key; ``Unauthorized`` for a missing/malformed one."""
    if not presented:
        raise Unauthorized(
            "missing API key: send 'Authorization: Bearer <key>' or 'x-api-key: <key>'",
            code="missing_api_key",
        )
    if not KEY_FORMAT.fullmatch(presented):
        raise Unauthorized(
            "malformed API key: expected 'fmn_<env>_<secret>'", code="malformed_api_key"
        )
    return hash_key(presented)


def _check_record(
    record: key_storage.ApiKeyRecord | None,
    principal: Principal | None,
    key_hash: str,
    now: datetime,
) -> Principal:
    """The key's principal; ``Unauthorized`` unless ``record`` is the live key of ``key_hash``."""
    if record is None or principal is None or not hmac.compare_digest(record.key_hash, key_hash):
        raise Unauthorized("invalid API key", code="invalid_api_key")
    if record.revoked_at is not None:
        raise Unauthorized("this API key has been revoked", code="key_revoked")
    if record.expires_at is not None and as_utc(record.expires_at) <= now:
        raise Unauthorized("this API key has expired", code="key_expired")
    return principal


def live_principal(record: key_storage.ApiKeyRecord, now: datetime) -> Principal:
    """The principal of a stored key (a dashboard session's); ``Unauthorized`` when the key
    is revoked or expired, as :meth:`Authenticator.authenticate` would answer."""
    return _check_record(record, _principal(record), record.key_hash, now)


def _principal(record: key_storage.ApiKeyRecord) -> Principal:
    return Principal(
        key_id=record.id,
        org_id=record.org_id,
        permissions=frozenset(record.permissions),
        rate_limit=parse_rate_limit(record.rate_limit) if record.rate_limit else None,
    )


def issue_key(
    engine: sa.Engine,
    *,
    env: str,
    org_id: str,
    name: str,
    permissions: list[str],
    rate_limit: str | None = None,
    expires_at: datetime | None = None,
) -> tuple[str, key_storage.ApiKeyRecord]:
    """Create a key; returns the secret (shown once) and the stored record.

    Raises ValueError for unknown permissions or a malformed rate limit.
    """
    if not org_id.strip() or len(org_id) > 64:
        raise ValueError("organisation id must be 1-64 characters")
    if not name.strip() or len(name) > 255:
        raise ValueError("key name must be 1-255 characters")
    permissions = validate_permissions(permissions)
    if not permissions:
        raise ValueError("a key needs at least one permission")
    if rate_limit is not None:
        parse_rate_limit(rate_limit)
    new = generate_key(env)
    record = key_storage.insert_key(
        engine,
        org_id=org_id,
        name=name,
        prefix=new.prefix,
        key_hash=new.key_hash,
        permissions=permissions,
        rate_limit=rate_limit,
        expires_at=expires_at,
    )
    return new.secret, record
