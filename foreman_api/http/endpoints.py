"""Declaring routes: ``@endpoints.get(path, permission, ...)`` over an async handler.

One declaration serves the route (:mod:`.dispatch`) and documents it (:mod:`.openapi`)::

    tasks = Endpoints(tags=["tasks"])

    @tasks.get("/tasks/{taskId}", Permission.TASKS_READ, path=TaskPath, response=Task,
               summary="Get a task")
    async def get_task(call: Call) -> Reply:
        ...

Path, query and body models are pydantic models validated before the handler runs; a
failure is a ``400 invalid_request`` naming the field, as everywhere in the API.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from foreman_api.http.call import Call, Reply
from foreman_api.schemas import Permission

Handler = Callable[[Call], Awaitable[Reply]]
Declare = Callable[[Handler], Handler]


@dataclass(frozen=True, slots=True)
class Endpoint:
    method: str
    path: str
    """The full path template, ``/api/v1/tasks/{taskId}``."""
    handler: Handler
    permission: Permission
    path_model: type[BaseModel] | None = None
    query_model: type[BaseModel] | None = None
    body_model: type[BaseModel] | None = None
    body_optional: bool = False
    """No body (or an empty one) is the body model's defaults."""
    response_model: Any = None
    status: int = 200
    summary: str = ""
    tags: tuple[str, ...] = ()
    responses: dict[int | str, dict[str, Any]] = field(default_factory=dict)
    """Extra documented responses (e.g. a 200 beside the usual 201)."""


class Endpoints:
    """The routes of one module; mounted under a prefix by :func:`~.dispatch.FastPath`."""

    def __init__(self, *, tags: list[str]) -> None:
        self.tags = tuple(tags)
        self.declared: list[Endpoint] = []

    def route(
        self,
        method: str,
        path: str,
        permission: Permission,
        *,
        path_model: type[BaseModel] | None = None,
        query: type[BaseModel] | None = None,
        body: type[BaseModel] | None = None,
        body_optional: bool = False,
        response: Any = None,
        status: int = 200,
        summary: str = "",
        responses: dict[int | str, dict[str, Any]] | None = None,
    ) -> Declare:
        def declare(handler: Handler) -> Handler:
            self.declared.append(
                Endpoint(
                    method=method,
                    path=path,
                    handler=handler,
                    permission=permission,
                    path_model=path_model,
                    query_model=query,
                    body_model=body,
                    body_optional=body_optional,
                    response_model=response,
                    status=status,
                    summary=summary,
                    tags=self.tags,
                    responses=responses or {},
                )
            )
            return handler

        return declare

    def get(self, path: str, permission: Permission, **options: Any) -> Declare:
        return self.route("GET", path, permission, **options)

    def post(self, path: str, permission: Permission, **options: Any) -> Declare:
        return self.route("POST", path, permission, **options)

    def put(self, path: str, permission: Permission, **options: Any) -> Declare:
        return self.route("PUT", path, permission, **options)

    def patch(self, path: str, permission: Permission, **options: Any) -> Declare:
        return self.route("PATCH", path, permission, **options)

    def delete(self, path: str, permission: Permission, **options: Any) -> Declare:
        return self.route("DELETE", path, permission, **options)
