"""Web pages served by ``foreman-api`` itself: the offline ``/docs`` and the ``/ui``
dashboard, with their static assets (vendored, never loaded from a CDN) under ``/static``.

The dashboard's routes live on the FastAPI app that :class:`~foreman_api.http.dispatch.FastPath`
falls back to, and read and change everything through the API's own storage functions
(:mod:`foreman_api.storage`) on the same per-event-loop database.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.staticfiles import StaticFiles
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from foreman_api.db import Database
from foreman_api.domain.errors import NotFound
from foreman_api.ui import docs, operations, runs, session, tasks
from foreman_api.ui.render import PageRoute

STATIC_DIR = Path(__file__).parent / "static"

_unknown = APIRouter(prefix="/ui", route_class=PageRoute, include_in_schema=False)


@_unknown.get("/{rest:path}")
async def unknown_page(request: Request, viewer: session.SignedIn, rest: str) -> Response:
    """Any other dashboard address (after signing in): "Not found" (``/ui/``: the runs)."""
    if not rest:
        return RedirectResponse("/ui", status_code=308)
    raise NotFound(f"no page {rest!r}")


def install(app: FastAPI, *, database: Callable[[], Awaitable[Database]]) -> None:
    """Mount the static assets and the pages on ``app``. ``database`` gives the event
    loop's :class:`~foreman_api.db.Database`, the one the API's endpoints use
    (:meth:`foreman_api.http.dispatch.FastPath.database`)."""
    app.state.ui_database = database
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    app.include_router(docs.router)
    for module in (session, runs, tasks, operations):
        app.include_router(module.router)
    app.include_router(_unknown)  # last: it takes every address the others did not
