"""Pages as HTML responses: the Jinja2 environment, security headers, error pages, and the
route class that turns a refused request into a page (sign-in, "Not found", ...)."""

from __future__ import annotations

import time
from collections.abc import Callable, Coroutine, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from foreman_api.domain.errors import DomainError
from foreman_api.errors import as_api_error
from foreman_api.outages import database_outage
from foreman_api.ui import flash, format

if TYPE_CHECKING:
    from foreman_api.ui.session import Viewer

TEMPLATES = Path(__file__).parent / "templates"

SECURITY_HEADERS = {
    # Scripts, styles and everything else from this server only: no inline script or
    # style, so injected markup cannot run, and the page cannot be framed.
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
    "Vary": "HX-Request, Cookie",
}

environment = Environment(
    loader=FileSystemLoader(TEMPLATES),
    autoescape=select_autoescape(default=True),
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
    auto_reload=False,  # the templates ship with the package: no stat() per page
)
environment.filters.update(
    status=format.status_badge,
    ts=format.timestamp,
    age=format.age,
    duration=format.duration,
    json=format.json_html,
    short=format.short,
)
environment.globals.update(
    settled=format.settled, elapsed_ms=format.elapsed_ms, task_duration=format.task_duration
)


class SignInRequired(Exception):
    """The request has no live dashboard session."""


def page(
    template: str,
    context: Mapping[str, Any],
    *,
    status: int = 200,
    headers: Mapping[str, str] | None = None,
) -> HTMLResponse:
    """Render ``template`` with ``context`` as a response carrying the security headers."""
    html = environment.get_template(template).render(context)
    return HTMLResponse(html, status_code=status, headers={**SECURITY_HEADERS, **(headers or {})})


def base_context(request: Request, viewer: Viewer | None, **values: Any) -> dict[str, Any]:
    """What every page's layout needs, plus ``values``."""
    return {"request": request, "viewer": viewer, "flash": flash.take(request), **values}


def render(
    request: Request, template: str, fragments: Mapping[str, str], context: dict[str, Any]
) -> Response:
    """The whole page, or for htmx's polling only the live part it targets: ``fragments``
    maps an element id (htmx's ``HX-Target``) to the template of that element."""
    if is_htmx(request):
        fragment = fragments.get(request.headers.get("hx-target", ""))
        if fragment is not None:
            return page(fragment, context)
    return flash.forget(request, page(template, context))


def here(request: Request) -> str:
    """This page's address (path and query), which its live parts poll."""
    return request.url.path + (f"?{request.url.query}" if request.url.query else "")


def is_htmx(request: Request) -> bool:
    """A request htmx made (it wants a fragment, not the whole page)."""
    return request.headers.get("hx-request") == "true"


def error_page(
    request: Request,
    status: int,
    title: str,
    message: str,
    headers: Mapping[str, str] | None = None,
) -> HTMLResponse:
    """A page that says what went wrong (``title`` is its heading), with ``status``."""
    viewer = getattr(request.state, "viewer", None)
    context = {"request": request, "viewer": viewer, "title": title, "message": message}
    return page("error.html", context, status=status, headers=headers)


def sign_in_redirect(request: Request) -> Response:
    """To the sign-in form, coming back here afterwards (htmx: the whole page goes)."""
    target = f"/ui/signin?next={quote(here(request), safe='/')}"
    if is_htmx(request):
        return Response(status_code=200, headers={"HX-Redirect": target})
    return RedirectResponse(target, status_code=303)


Endpoint = Callable[[Request], Coroutine[Any, Any, Response]]


class PageRoute(APIRoute):
    """A dashboard route: a refusal renders as a page, never as the API's JSON error."""

    def get_route_handler(self) -> Endpoint:
        handler = super().get_route_handler()

        async def serve(request: Request) -> Response:
            started = time.perf_counter()
            response = await self._answer(handler, request)
            elapsed = (time.perf_counter() - started) * 1000
            response.headers["Server-Timing"] = f"app;dur={elapsed:.1f}"
            return response

        return serve

    @staticmethod
    async def _answer(handler: Endpoint, request: Request) -> Response:
        """The page, or the page that says why not."""
        try:
            return await _outages_as_errors(handler, request)
        except SignInRequired:
            return sign_in_redirect(request)
        except DomainError as refused:  # an ApiError too
            exc = as_api_error(refused)
            title = "Not found" if exc.status_code == 404 else _TITLES.get(exc.status_code)
            message = (
                "There is nothing here for your organisation."
                if exc.status_code == 404
                else exc.message
            )
            return error_page(request, exc.status_code, title or "Error", message, exc.headers)
        except RequestValidationError:
            return error_page(request, 400, "Bad request", "The address is not valid.")


async def _outages_as_errors(handler: Endpoint, request: Request) -> Response:
    """The handler's response; a database outage raised as the API's ``503``/``504``."""
    try:
        return await handler(request)
    except Exception as exc:
        outage = database_outage(exc)
        if outage is None:
            raise
        raise outage from exc


_TITLES = {
    400: "Bad request",
    401: "Signed out",
    403: "Forbidden",
    409: "Not possible now",
    429: "Too many requests",
    503: "Unavailable",
    504: "Unavailable",
}
