"""The application factory: wires settings, storage, auth, rate limits, routes and errors."""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import replace
from typing import Any, cast

import redis
import sqlalchemy as sa
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from foreman_api import __version__
from foreman_api.auth import Authenticator
from foreman_api.deps import Services
from foreman_api.domain.errors import DomainError
from foreman_api.errors import as_api_error, error_body, invalid_request
from foreman_api.heap import frozen_after_startup
from foreman_api.http.dispatch import FastPath
from foreman_api.http.endpoints import Endpoint
from foreman_api.http.openapi import document
from foreman_api.metrics import exposition
from foreman_api.outages import database_outage, watch_commits
from foreman_api.ratelimit import MemoryRateLimiter, RateLimiter, RedisRateLimiter
from foreman_api.routes import health, run_data, runs, tasks, workers
from foreman_api.schemas import ErrorBody
from foreman_api.settings import Settings, get_settings
from foreman_api.storage.engine import create_engine
from foreman_api.storage.migrate import pending_revision
from foreman_api.ui import install as install_pages

log = logging.getLogger("foreman_api")

API_PREFIX = "/api/v1"
ROUTE_MODULES = (runs, tasks, run_data, workers)

_ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": description}
    for status, description in {
        400: "Invalid input",
        401: "Missing, invalid, expired or revoked API key",
        403: "The key lacks the permission this route requires",
        404: "Unknown id, or an id of another organisation",
        409: "Illegal state transition",
        413: "Request body too large",
        429: "Rate limited",
        503: "The database is unavailable; nothing was written, retry after Retry-After",
        504: "The database was lost while saving; the change may or may not have been saved",
    }.items()
}


class UnmigratedDatabase(RuntimeError):
    """The database schema is behind this version of Foreman."""


def _error_response(
    status: int,
    message: str,
    code: str,
    details: list[dict[str, Any]] | None = None,
    headers: Mapping[str, str] | None = None,
) -> Response:
    return Response(
        error_body(message, code, details),
        status_code=status,
        headers=headers,
        media_type="application/json",
    )


def _allowed_methods(app: FastAPI, path: str) -> list[str]:
    """Every documented method of the route(s) whose template matches ``path``."""
    patterns: list[tuple[re.Pattern[str], list[str]]] | None = getattr(
        app.state, "allowed_methods", None
    )
    if patterns is None:
        patterns = [
            (
                re.compile("^" + re.sub(r"\\{[^/]+?\\}", "[^/]+", re.escape(template)) + "$"),
                [method.upper() for method in operations],
            )
            for template, operations in app.openapi().get("paths", {}).items()
        ]
        app.state.allowed_methods = patterns
    return sorted({m for pattern, methods in patterns if pattern.match(path) for m in methods})


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(DomainError)  # an ApiError too
    async def api_error(_request: Request, refused: Exception) -> Response:
        exc = as_api_error(cast(DomainError, refused))
        return _error_response(exc.status_code, exc.message, exc.code, exc.details, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_request: Request, exc: RequestValidationError) -> Response:
        invalid = invalid_request(exc.errors())
        return _error_response(400, invalid.message, invalid.code, invalid.details)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        message = "no such route" if exc.status_code == 404 else str(exc.detail)
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            # Starlette names only the methods of the first route that matched the path.
            allowed = _allowed_methods(app, request.url.path)
            if allowed:
                headers["Allow"] = ", ".join(allowed)
                message = f"method {request.method} not allowed; use {', '.join(allowed)}"
        return _error_response(exc.status_code, message, code, headers=headers)

    @app.exception_handler(RecursionError)
    async def too_deep(_request: Request, _exc: RecursionError) -> Response:
        return _error_response(400, "JSON body is nested too deeply", "invalid_request")

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
        return _error_response(500, "internal server error", "internal_error")

    @app.exception_handler(sa.exc.SQLAlchemyError)
    async def database_error(request: Request, exc: sa.exc.SQLAlchemyError) -> Response:
        outage = database_outage(exc)
        if outage is None:
            return await internal_error(request, exc)
        cause = getattr(exc, "orig", None) or exc
        detail = (str(cause).strip().splitlines() or [""])[0]
        log.warning(
            "%s %s: %s (%s: %s)",
            request.method,
            request.url.path,
            outage.code,
            type(cause).__name__,
            detail,
        )
        return _error_response(
            outage.status_code, outage.message, outage.code, headers=outage.headers
        )


def _rate_limiter(settings: Settings) -> tuple[RateLimiter, redis.Redis | None]:
    if not settings.redis_url:
        return MemoryRateLimiter(), None
    client = redis.Redis.from_url(
        settings.redis_url, socket_timeout=2.0, socket_connect_timeout=2.0
    )
    return RedisRateLimiter(client, namespace=settings.rate_limit_namespace), client


def create_app(settings: Settings | None = None, *, engine: sa.Engine | None = None) -> FastPath:
    """Build the API. Refuses (UnmigratedDatabase) a database that needs ``foreman-api migrate``.

    The declared endpoints (:mod:`foreman_api.http`) are served by :class:`FastPath`, which
    hands every other request (``/docs``, ``/openapi.json``, routes still on FastAPI) to
    the FastAPI app it wraps.
    """
    settings = settings or get_settings()
    engine = engine or create_engine(settings.database_url)
    watch_commits(engine)
    if pending_revision(engine) is not None:
        raise UnmigratedDatabase(
            "the database schema is not up to date: run `foreman-api migrate` "
            f"(database: {engine.url.render_as_string(hide_password=True)})"
        )
    limiter, redis_client = _rate_limiter(settings)
    app = FastAPI(
        title="Foreman API",
        version=__version__,
        description="Runs, tasks and run data for workflow orchestration.",
        responses=_ERROR_RESPONSES,
        docs_url=None,  # served offline by foreman_api.ui.docs
        redoc_url=None,
    )
    app.state.services = Services(
        settings=settings,
        engine=engine,
        authenticator=Authenticator(engine, cache_seconds=settings.key_cache_seconds),
        limiter=limiter,
        redis=redis_client,
    )
    _install_error_handlers(app)
    app.router.lifespan_context = frozen_after_startup(app.router.lifespan_context)
    app.include_router(health.router)
    exposition.document(app)
    declared: list[Endpoint] = []
    for module in ROUTE_MODULES:
        declared += [replace(e, path=API_PREFIX + e.path) for e in module.endpoints.declared]
    document(app, declared)
    served = FastPath(app, app.state.services, declared)
    install_pages(app, database=served.database)  # /docs, /ui and /static
    return served
