"""A one-time message shown by the page an action redirects to ("2 tasks queued again")."""

from __future__ import annotations

from urllib.parse import quote, unquote

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from foreman_api.ui.cookies import set_strict

COOKIE = "foreman_flash"


def done(request: Request, target: str, message: str) -> RedirectResponse:
    """Back to ``target`` (a ``303``), which shows ``message`` once."""
    response = RedirectResponse(target, status_code=303)
    set_strict(response, request, COOKIE, quote(message), max_age=60, path="/ui")
    return response


def take(request: Request) -> str:
    """The message waiting for this page, if any (see :func:`forget`)."""
    return unquote(request.cookies.get(COOKIE, ""))


def forget(request: Request, response: Response) -> Response:
    """Drop the message once a page has shown it."""
    if COOKIE in request.cookies:
        response.delete_cookie(COOKIE, path="/ui")
    return response
