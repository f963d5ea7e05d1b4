"""Signing in to the dashboard, and who is looking (:class:`Viewer`).

A browser signs in by posting an API key to ``/ui/signin``. The key is checked as every
API request checks it (:func:`foreman_api.deps.authorise`: failed attempts are limited per
client address), then a session is stored in the database
(:mod:`foreman_api.storage.sessions`) and the browser gets only a random token in an
``HttpOnly``, ``SameSite=Strict`` cookie that expires with the session
(``FOREMAN_UI_SESSION_HOURS``). The key itself never reaches a URL, the page or the
browser's storage. Every API process reads the same sessions table, so no secret has to be
shared between processes, and signing out or revoking the key ends the session at once.

Every action is a ``POST`` that must carry the session's CSRF token and, when the browser
says where it comes from (``Origin``, ``Sec-Fetch-Site``), come from this site.
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated
from urllib.parse import parse_qs

from fastapi import APIRouter, Depends
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from foreman_api.auth import Principal, live_principal
from foreman_api.clock import utcnow
from foreman_api.db import Database
from foreman_api.deps import authorise, get_services
from foreman_api.errors import ApiError, Forbidden, PayloadTooLarge, Unauthorized
from foreman_api.schemas import Permission
from foreman_api.storage import sessions
from foreman_api.ui.cookies import set_strict
from foreman_api.ui.render import PageRoute, SignInRequired, page

COOKIE = "foreman_session"
SIGNIN_COOKIE = "foreman_signin"
"""The sign-in form's own CSRF token (double submit: the cookie and the form agree)."""
MAX_FORM_BYTES = 1_048_576

router = APIRouter(prefix="/ui", route_class=PageRoute, include_in_schema=False)


@dataclass(frozen=True, slots=True)
class Viewer:
    """The signed-in key behind a dashboard request."""

    principal: Principal
    csrf_token: str
    db: Database

    @property
    def org_id(self) -> str:
        return self.principal.org_id

    def can(self, permission: Permission) -> bool:
        """Whether the key has ``permission`` (the page shows the action's button)."""
        return self.principal.allows(permission)


async def database(request: Request) -> Database:
    """The event loop's database: the one the API's endpoints use."""
    db: Database = await request.app.state.ui_database()
    return db


async def signed_in(request: Request) -> Viewer:
    """The request's viewer; :class:`SignInRequired` without a live session."""
    token = request.cookies.get(COOKIE)
    if not token:
        raise SignInRequired
    db = await database(request)
    found = await sessions.find_session(db, token=token)
    if found is None:
        raise SignInRequired
    try:
        principal = live_principal(found.key, utcnow())
    except Unauthorized:
        raise SignInRequired from None
    viewer = Viewer(principal=principal, csrf_token=found.csrf_token, db=db)
    request.state.viewer = viewer
    return viewer


SignedIn = Annotated[Viewer, Depends(signed_in)]


async def read_form(request: Request) -> dict[str, list[str]]:
    """The request's URL-encoded form (the only kind the dashboard's forms send)."""
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise PayloadTooLarge(f"a form is at most {MAX_FORM_BYTES} bytes")
    return parse_qs(body.decode("utf-8", errors="replace"), keep_blank_values=True)


def first(form: dict[str, list[str]], name: str, default: str = "") -> str:
    """The form's first value of ``name``."""
    return (form.get(name) or [default])[0]


def _same_site(request: Request) -> bool:
    """False when the browser says the request comes from another site."""
    if request.headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none"):
        return False
    origin = request.headers.get("origin")
    return origin is None or origin == f"{request.url.scheme}://{request.headers.get('host')}"


async def action_form(
    request: Request, viewer: Viewer, permission: Permission
) -> dict[str, list[str]]:
    """The form of an action, once it passed the checks: same site, the session's CSRF
    token, and ``permission`` (``403`` otherwise)."""
    form = await read_form(request)
    token = first(form, "csrf_token")
    if not _same_site(request) or not hmac.compare_digest(token, viewer.csrf_token):
        raise Forbidden("this form has expired or comes from elsewhere: reload the page")
    viewer.principal.require(permission)
    return form


def _next_page(target: str) -> str:
    """Where to go after signing in: a dashboard path, never another site."""
    if target.startswith("/ui") and not target.startswith("//") and "\\" not in target:
        return target
    return "/ui"


def _signin_form(request: Request, *, error: str = "", status: int = 200) -> Response:
    token = request.cookies.get(SIGNIN_COOKIE) or secrets.token_urlsafe(32)
    context = {
        "request": request,
        "viewer": None,
        "csrf_token": token,
        "next": _next_page(request.query_params.get("next", "/ui")),
        "error": error,
    }
    response = page("signin.html", context, status=status)
    set_strict(response, request, SIGNIN_COOKIE, token, max_age=3600, path="/ui/signin")
    return response


@router.get("/signin")
async def signin_page(request: Request) -> Response:
    """The sign-in form."""
    return _signin_form(request)


@router.post("/signin")
async def signin(request: Request) -> Response:
    """Check the key and open a session; back to the sign-in form with the reason if not."""
    form = await read_form(request)
    expected = request.cookies.get(SIGNIN_COOKIE, "")
    if not expected or not hmac.compare_digest(first(form, "csrf_token"), expected):
        return _signin_form(request, error="The form expired: please try again.", status=403)
    services = get_services(request)
    client = request.client.host if request.client else "unknown"
    key = first(form, "api_key").strip()
    try:
        principal, _ = await authorise(
            services, {"authorization": f"Bearer {key}"}, client, request.url.path
        )
    except ApiError as exc:
        return _signin_form(request, error=exc.message, status=exc.status_code)
    lifetime = timedelta(hours=services.settings.ui_session_hours)
    token = await sessions.open_session(
        await database(request), key_id=principal.key_id, lifetime=lifetime
    )
    response = RedirectResponse(_next_page(first(form, "next", "/ui")), status_code=303)
    max_age = int(lifetime.total_seconds())
    set_strict(response, request, COOKIE, token, max_age=max_age, path="/ui")
    response.delete_cookie(SIGNIN_COOKIE, path="/ui/signin")
    return response


@router.post("/signout")
async def signout(request: Request, viewer: SignedIn) -> Response:
    """End the session (here and on every API process) and forget the cookie."""
    form = await read_form(request)
    if not hmac.compare_digest(first(form, "csrf_token"), viewer.csrf_token):
        raise Forbidden("this form has expired: reload the page")
    await sessions.close_session(viewer.db, token=request.cookies.get(COOKIE, ""))
    response = RedirectResponse("/ui/signin", status_code=303)
    response.delete_cookie(COOKIE, path="/ui")
    return response
