"""Serve the declared endpoints as a bare ASGI app; hand everything else to FastAPI.

Per request: match the route (a dict lookup for fixed paths, a short scan of templates by
segment count otherwise), authenticate and rate-limit (:func:`foreman_api.deps.authorise`),
check the permission, read the body within the size limit, validate path, query and body
with the endpoint's models, await the handler, write the reply. No middleware stack, no
dependency solving, no thread hop. Errors render exactly as the FastAPI handlers render
them (:func:`foreman_api.errors.error_body`).

The :class:`~foreman_api.db.Database` is opened on the first request of each event loop
(one per process under uvicorn).
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import time
import types
import typing
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl

from pydantic import BaseModel, ValidationError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from foreman_api.db import Database, open_database
from foreman_api.deps import Services, authorise
from foreman_api.domain.errors import DomainError
from foreman_api.errors import (
    ApiError,
    PayloadTooLarge,
    as_api_error,
    error_body,
    invalid_request,
)
from foreman_api.http.call import Call, Reply
from foreman_api.http.endpoints import Endpoint
from foreman_api.metrics import exposition, instruments
from foreman_api.outages import database_outage

log = logging.getLogger("foreman_api")

_JSON = (b"content-type", b"application/json")
_UNMATCHED = "unmatched"


class _Route:
    __slots__ = ("endpoint", "names", "segments")

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        self.segments = endpoint.path.strip("/").split("/")
        self.names = {i: part[1:-1] for i, part in enumerate(self.segments) if part.startswith("{")}

    def match(self, parts: list[str]) -> dict[str, str] | None:
        if len(parts) != len(self.segments):
            return None
        params: dict[str, str] = {}
        for i, (part, template) in enumerate(zip(parts, self.segments, strict=True)):
            name = self.names.get(i)
            if name is None:
                if part != template:
                    return None
            elif part:
                params[name] = part
            else:
                return None
        return params


class FastPath:
    """The API's ASGI app: declared endpoints here, anything else to ``fallback``."""

    def __init__(self, fallback: ASGIApp, services: Services, endpoints: list[Endpoint]) -> None:
        self.fallback = fallback
        self.services = services
        self._fixed: dict[tuple[str, str], Endpoint] = {}
        self._templates: dict[str, list[_Route]] = {}
        for endpoint in endpoints:
            if "{" in endpoint.path:
                self._templates.setdefault(endpoint.method, []).append(_Route(endpoint))
            else:
                self._fixed[(endpoint.method, endpoint.path.rstrip("/"))] = endpoint
        self._fixed_methods: dict[str, list[str]] = {}
        for method, path in sorted(self._fixed):
            self._fixed_methods.setdefault(path, []).append(method)
        self._databases: dict[asyncio.AbstractEventLoop, Database] = {}
        self._opening: dict[asyncio.AbstractEventLoop, asyncio.Lock] = {}
        self._metrics = services.settings.metrics_enabled

    def __getattr__(self, name: str) -> Any:
        # ``app.state``, ``app.openapi()``… are the FastAPI app's.
        return getattr(self.fallback, name)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            started = time.perf_counter()
            method, path = scope["method"], scope["path"]
            route, status = await self._answer(method, path, scope, receive, send)
            if self._metrics:
                instruments.request_served(method, route, status, time.perf_counter() - started)
            return
        if scope["type"] == "lifespan":
            await self.fallback(scope, receive, self._closing_at_shutdown(send))
            return
        await self.fallback(scope, receive, send)

    async def _answer(
        self, method: str, path: str, scope: Scope, receive: Receive, send: Send
    ) -> tuple[str, int]:
        """Answer an HTTP request; the route template it matched and the status sent."""
        found = self._find(method, path)
        if found is not None:
            endpoint, params = found
            return endpoint.path, await self._serve(endpoint, params, scope, receive, send)
        allowed = self._fixed_methods.get(path)
        if allowed is not None:  # e.g. PATCH /tasks/retry: not /tasks/{taskId}
            methods = ", ".join(allowed)
            message = f"method {method} not allowed; use {methods}"
            body = error_body(message, "method_not_allowed")
            await _send(send, Reply(body, 405, {"Allow": methods}), {})
            return path, 405
        if self._metrics and path == exposition.METRICS_PATH and method in ("GET", "HEAD"):
            return path, await self._scrape(scope, send)
        status = 500  # unless the app sends a response
        fallback_send = send

        async def noting_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await fallback_send(message)

        await self.fallback(scope, receive, noting_status)
        # Starlette's router leaves the route it matched in the scope (a template).
        return getattr(scope.get("route"), "path", _UNMATCHED), status

    async def _scrape(self, scope: Scope, send: Send) -> int:
        """``GET /metrics`` (see :mod:`foreman_api.metrics.exposition`)."""
        try:
            exposition.check_token(self.services.settings.metrics_token, _headers(scope))
            body = await exposition.render(await self.database())
            result = Reply(body, content_type=exposition.CONTENT_TYPE)
        except DomainError as exc:  # an ApiError too
            result = _error_reply(as_api_error(exc))
        except Exception as exc:
            result = _unexpected(exc, scope)
        await _send(send, result, {}, head=scope["method"] == "HEAD")
        return result.status

    def _closing_at_shutdown(self, send: Send) -> Send:
        async def closing(message: Message) -> None:
            if message["type"] == "lifespan.shutdown.complete":
                database = self._databases.pop(asyncio.get_running_loop(), None)
                if database is not None:
                    await database.close()
            await send(message)

        return closing

    def _find(self, method: str, path: str) -> tuple[Endpoint, dict[str, str]] | None:
        if method == "HEAD":
            method = "GET"  # answered as GET, without the body (see _send)
        endpoint = self._fixed.get((method, path))
        if endpoint is not None:
            return endpoint, {}
        if path in self._fixed_methods:
            return None  # a literal path (``/tasks/retry``) is not a template's parameter
        routes = self._templates.get(method)
        if routes:
            parts = path.strip("/").split("/")
            for route in routes:
                params = route.match(parts)
                if params is not None:
                    return route.endpoint, params
        return None

    async def database(self) -> Database:
        """This event loop's database (opened on first use)."""
        loop = asyncio.get_running_loop()
        database = self._databases.get(loop)
        if database is not None:
            return database
        async with self._opening.setdefault(loop, asyncio.Lock()):
            database = self._databases.get(loop)
            if database is None:
                # A loop that has ended (a test client's, between requests) left its
                # connections behind: close them without it.
                for ended in [other for other in self._databases if other.is_closed()]:
                    self._databases.pop(ended).terminate()
                    self._opening.pop(ended, None)
                settings = self.services.settings
                database = await open_database(
                    settings.database_url, sqlite_lock_timeout=settings.sqlite_lock_timeout
                )
                self._databases[loop] = database
        return database

    async def _serve(
        self,
        endpoint: Endpoint,
        params: dict[str, str],
        scope: Scope,
        receive: Receive,
        send: Send,
    ) -> int:
        """Answer with ``endpoint``; the status sent."""
        limit_headers: dict[str, str] = {}
        try:
            headers = _headers(scope)
            client = scope.get("client")
            principal, limit_headers = await authorise(
                self.services, headers, client[0] if client else "unknown", scope["path"]
            )
            principal.require(endpoint.permission)
            call = Call(principal=principal, db=await self.database(), services=self.services)
            if endpoint.path_model is not None:
                call.path = _validate(endpoint.path_model, params)
            if endpoint.query_model is not None:
                query = _query(endpoint.query_model, scope["query_string"])
                call.query = _validate(endpoint.query_model, query)
            if endpoint.body_model is not None:
                body = await self._read_body(headers, receive)
                parsed = _parse_json(headers, body)
                if parsed is None and not body and endpoint.body_optional:
                    parsed = {}
                call.body = _validate(endpoint.body_model, parsed)
            result = await endpoint.handler(call)
        except DomainError as exc:  # an ApiError too
            result = _error_reply(as_api_error(exc))
        except Exception as exc:
            result = _unexpected(exc, scope)
        await _send(send, result, limit_headers, head=scope["method"] == "HEAD")
        return result.status

    async def _read_body(self, headers: Mapping[str, str], receive: Receive) -> bytes:
        limit = self.services.settings.max_body_bytes
        too_large = PayloadTooLarge(f"request body is larger than the limit of {limit} bytes")
        declared = headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise too_large
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise too_large
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks)


def _headers(scope: Scope) -> dict[str, str]:
    return {name.decode("latin-1"): value.decode("latin-1") for name, value in scope["headers"]}


def _query(model: type[BaseModel], query_string: bytes) -> dict[str, Any]:
    """The query string as a dict, as FastAPI reads it: a repeated parameter's last value,
    or all its values (a list) for a field of ``model`` that takes a list."""
    pairs = parse_qsl(query_string.decode("latin-1"), keep_blank_values=True)
    lists = _list_fields(model)
    if not lists:
        return dict(pairs)
    query: dict[str, Any] = {}
    for name, value in pairs:
        if name in lists:
            query.setdefault(name, []).append(value)
        else:
            query[name] = value
    return query


@functools.cache
def _list_fields(model: type[BaseModel]) -> frozenset[str]:
    """The query names (aliases) of the fields of ``model`` that take a list."""
    return frozenset(
        field.alias or name
        for name, field in model.model_fields.items()
        if _takes_list(field.annotation)
    )


def _takes_list(annotation: Any) -> bool:
    """``list[...]``, also inside a union (``list[str] | None``)."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(_takes_list(arg) for arg in typing.get_args(annotation))
    return origin is list


def _validate(model: type[BaseModel], data: Any) -> BaseModel:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise invalid_request(exc.errors(include_url=False)) from None
    except RecursionError:
        raise invalid_request([{"loc": (), "msg": "JSON body is nested too deeply"}]) from None


def _parse_json(headers: Mapping[str, str], body: bytes) -> Any:
    """The body as JSON, as FastAPI reads it: JSON when the content type is JSON or absent."""
    content_type = headers.get("content-type")
    if content_type is not None:
        media = content_type.split(";", 1)[0].strip().lower()
        kind, _, subtype = media.partition("/")
        if kind != "application" or not (subtype == "json" or subtype.endswith("+json")):
            raise invalid_request(
                [{"loc": ("body",), "msg": "expected a JSON body (Content-Type: application/json)"}]
            )
    if not body:
        return None
    try:
        return json.loads(body)
    except RecursionError:
        raise invalid_request(
            [{"loc": ("body",), "msg": "JSON body is nested too deeply"}]
        ) from None
    except ValueError as exc:  # JSONDecodeError, bad UTF-8, integer too long
        raise invalid_request([{"loc": ("body",), "msg": f"JSON decode error: {exc}"}]) from None


def _unexpected(exc: Exception, scope: Scope) -> Reply:
    """The reply to an exception that is not an :class:`ApiError`: a database outage's
    ``503``/``504`` (driver errors of the request path, SQLAlchemy's from the key lookup),
    else a logged ``500``."""
    outage = database_outage(exc)
    if outage is None:
        log.exception("unhandled error on %s %s", scope["method"], scope["path"])
        return Reply(error_body("internal server error", "internal_error"), 500)
    log.warning("%s %s: %s (%s)", scope["method"], scope["path"], outage.code, exc)
    return _error_reply(outage)


def _error_reply(exc: ApiError) -> Reply:
    return Reply(error_body(exc.message, exc.code, exc.details), exc.status_code, exc.headers)


async def _send(
    send: Send, reply: Reply, limit_headers: Mapping[str, str], *, head: bool = False
) -> None:
    kind = reply.content_type
    raw = [
        _JSON if kind is None else (b"content-type", kind.encode()),
        (b"content-length", str(len(reply.body)).encode()),
    ]
    for name, value in reply.headers.items():
        raw.append((name.lower().encode("latin-1"), value.encode("latin-1")))
    for name, value in limit_headers.items():
        if name not in reply.headers:
            raw.append((name.lower().encode("latin-1"), value.encode("latin-1")))
    await send({"type": "http.response.start", "status": reply.status, "headers": raw})
    await send({"type": "http.response.body", "body": b"" if head else reply.body})
