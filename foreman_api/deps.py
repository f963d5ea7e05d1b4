"""FastAPI dependencies: the per-process services, authentication, rate limits, permissions.

Routes declare what they need with the ``Annotated`` aliases at the bottom, e.g.
``caller: CanReadRuns``; the alias authenticates, rate-limits and checks the permission.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated

import redis
import sqlalchemy as sa
from fastapi import Depends, Request, Security
from fastapi.concurrency import run_in_threadpool
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from foreman_api.auth import Authenticator, Principal
from foreman_api.errors import RateLimited, Unauthorized
from foreman_api.ratelimit import Decision, RateLimiter
from foreman_api.schemas import Permission
from foreman_api.settings import Settings

log = logging.getLogger("foreman_api")

RATE_LIMIT_HEADERS_STATE = "rate_limit_headers"


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


async def get_engine(request: Request) -> sa.Engine:
    return get_services(request).engine


Engine = Annotated[sa.Engine, Depends(get_engine)]


def _presented_key(request: Request) -> str | None:
    """The key from ``Authorization: Bearer <key>`` or ``x-api-key``; None when neither.

    An ``Authorization`` header that is not ``Bearer <key>`` (and no ``x-api-key`` to fall
    back on) is a ``401 malformed_authorization``.
    """
    authorization = request.headers.get("authorization")
    if authorization:
        scheme, _, token = authorization.strip().partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
    api_key = request.headers.get("x-api-key", "").strip()
    if api_key:
        return api_key
    if authorization is not None:
        raise Unauthorized(
            "malformed Authorization header: expected 'Bearer <key>'",
            code="malformed_authorization",
        )
    return None


async def _count(
    request: Request, services: Services, bucket: str, principal: Principal | None
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
        log.warning("rate limiter unavailable; request %s allowed", request.url.path)
        return None


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
    """Resolve the caller's key and count the request against its rate limit.

    async so that the common case (key cached, limiter in memory) runs on the event loop
    without a hop to a worker thread; the database lookup and a Redis limiter, which block,
    run in the thread pool.
    """
    services = get_services(request)
    authenticator = services.authenticator
    try:
        presented = _presented_key(request)
        principal = authenticator.resolve_cached(presented)
        if principal is None:
            principal = await run_in_threadpool(authenticator.authenticate, presented)
    except Unauthorized as exc:
        client = request.client.host if request.client else "unknown"
        failures = await _count(request, services, f"authfail:{client}", None)
        if failures is not None and not failures.allowed:
            raise RateLimited(
                "too many failed authentications from this address; try again later",
                headers={"Retry-After": str(failures.reset_seconds)},
            ) from exc
        exc.headers.setdefault("WWW-Authenticate", 'Bearer realm="foreman"')
        raise
    decision = await _count(request, services, f"key:{principal.key_id}", principal)
    if decision is not None:
        setattr(request.state, RATE_LIMIT_HEADERS_STATE, decision.headers())
        if not decision.allowed:
            raise RateLimited(
                f"rate limit of {decision.limit} requests exceeded; retry in "
                f"{decision.reset_seconds} s"
            )
    return principal


def require(permission: Permission) -> Callable[[Principal], Awaitable[Principal]]:
    """A dependency that lets the request through only with ``permission``."""

    # async: a pure check, so FastAPI runs it inline instead of in a worker thread.
    async def check(principal: Annotated[Principal, Depends(authenticate)]) -> Principal:
        principal.require(permission)
        return principal

    check.__name__ = f"require_{permission.name.lower()}"
    return check


CanCreateRuns = Annotated[Principal, Depends(require(Permission.RUNS_CREATE))]
CanReadRuns = Annotated[Principal, Depends(require(Permission.RUNS_READ))]
CanUpdateRuns = Annotated[Principal, Depends(require(Permission.RUNS_UPDATE))]
CanCreateTasks = Annotated[Principal, Depends(require(Permission.TASKS_CREATE))]
CanReadTasks = Annotated[Principal, Depends(require(Permission.TASKS_READ))]
CanUpdateTasks = Annotated[Principal, Depends(require(Permission.TASKS_UPDATE))]
CanReadRunData = Annotated[Principal, Depends(require(Permission.RUNDATA_READ))]
CanWriteRunData = Annotated[Principal, Depends(require(Permission.RUNDATA_WRITE))]
CanDeleteRunData = Annotated[Principal, Depends(require(Permission.RUNDATA_DELETE))]
