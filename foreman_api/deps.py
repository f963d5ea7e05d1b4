"""The per-process services, and authentication with rate limits (:func:`authorise`).

:func:`authorise` is what the request path (:mod:`foreman_api.http.dispatch`) calls; the
FastAPI dependencies :func:`authenticate` and :func:`require` declare the same in the
OpenAPI document (security schemes) for the documented endpoints.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Annotated

import redis
import sqlalchemy as sa
from fastapi import Depends, Request, Security
from fastapi.concurrency import run_in_threadpool
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from foreman_api.auth import Authenticator, Principal
from foreman_api.errors import RateLimited, Unauthorized
from foreman_api.metrics import instruments
from foreman_api.ratelimit import Decision, RateLimiter
from foreman_api.schemas import Permission
from foreman_api.settings import Settings

log = logging.getLogger("foreman_api")


@dataclass(slots=True)
class Services:
    """What one API process shares between requests."""

    settings: Settings
    engine: sa.Engine
    authenticator: Authenticator
    limiter: RateLimiter
    redis: redis.Redis | None


def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


def _presented_key(headers: Mapping[str, str]) -> str | None:
    """The key from ``Authorization: Bearer <key>`` or ``x-api-key``; None when neither.

    An ``Authorization`` header that is not ``Bearer <key>`` (and no ``x-api-key`` to fall
    back on) is a ``401 malformed_authorization``.
    """
    authorization = headers.get("authorization")
    if authorization:
        scheme, _, token = authorization.strip().partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
    api_key = headers.get("x-api-key", "").strip()
    if api_key:
        return api_key
    if authorization is not None:
        raise Unauthorized(
            "malformed Authorization header: expected 'Bearer <key>'",
            code="malformed_authorization",
        )
    return None


async def _count(
    services: Services, bucket: str, principal: Principal | None, path: str
) -> Decision | None:
    if principal is None:
        limit = services.settings.auth_failure_rate_limit
    else:
        limit = principal.rate_limit or services.settings.default_rate_limit
    try:
        if services.limiter.blocking:
            return await run_in_threadpool(services.limiter.hit, bucket, limit)
        return services.limiter.hit(bucket, limit)
    except redis.RedisError:
        # Rate limiting fails open: an unreachable Redis must not take the API down with it.
        # /health reports it as degraded.
        log.warning("rate limiter unavailable; request %s allowed", path)
        return None


async def authorise(
    services: Services, headers: Mapping[str, str], client: str, path: str
) -> tuple[Principal, dict[str, str]]:
    """The caller of a request, and the rate-limit headers its response carries.

    Resolves the presented key (``401`` with its own code for each failure; failures are
    themselves rate-limited per client address) and counts the request against the key's
    limit (``429`` with ``Retry-After`` beyond it). The common case (key cached, limiter in
    memory) does no I/O; the database lookup and a Redis limiter run in the thread pool.
    """
    authenticator = services.authenticator
    try:
        presented = _presented_key(headers)
        principal = authenticator.resolve_cached(presented)
        if principal is None:
            principal = await run_in_threadpool(authenticator.authenticate, presented)
    except Unauthorized as exc:
        failures = await _count(services, f"authfail:{client}", None, path)
        if failures is not None and not failures.allowed:
            instruments.rate_limited("auth_failures")
            raise RateLimited(
                "too many failed authentications from this address; try again later",
                headers={"Retry-After": str(failures.reset_seconds)},
            ) from exc
        exc.headers.setdefault("WWW-Authenticate", 'Bearer realm="foreman"')
        raise
    decision = await _count(services, f"key:{principal.key_id}", principal, path)
    if decision is None:
        return principal, {}
    if not decision.allowed:
        instruments.rate_limited("key")
        raise RateLimited(
            f"rate limit of {decision.limit} requests exceeded for this key; retry in "
            f"{decision.reset_seconds} s. A busier client (a worker spends two requests per "
            "task) needs a key with a higher limit: `foreman-api keys create … --rate-limit "
            "20000/1m` (or unlimited); FOREMAN_RATE_LIMIT sets the server default",
            headers=decision.headers(),
        )
    return principal, decision.headers()


# Declared for the OpenAPI document (either scheme authenticates a request); the header
# itself is parsed by _presented_key, so these never reject anything on their own.
bearer_scheme = HTTPBearer(
    scheme_name="bearer",
    bearerFormat="fmn_<env>_<secret>",
    description="`Authorization: Bearer <API key>`",
    auto_error=False,
)
api_key_scheme = APIKeyHeader(
    name="x-api-key",
    scheme_name="apiKey",
    description="`x-api-key: <API key>`, an alternative to the Bearer header",
    auto_error=False,
)


async def authenticate(
    request: Request,
    _bearer: Annotated[HTTPAuthorizationCredentials | None, Security(bearer_scheme)] = None,
    _api_key: Annotated[str | None, Security(api_key_scheme)] = None,
) -> Principal:
    """The request's caller (see :func:`authorise`); async, so it runs on the event loop."""
    client = request.client.host if request.client else "unknown"
    principal, _ = await authorise(get_services(request), request.headers, client, request.url.path)
    return principal


def require(permission: Permission) -> Callable[[Principal], Awaitable[Principal]]:
    """A dependency that lets the request through only with ``permission``."""

    # async: a pure check, so FastAPI runs it inline instead of in a worker thread.
    async def check(principal: Annotated[Principal, Depends(authenticate)]) -> Principal:
        principal.require(permission)
        return principal

    check.__name__ = f"require_{permission.name.lower()}"
    return check
