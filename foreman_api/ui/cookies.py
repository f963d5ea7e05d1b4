"""The dashboard's cookies: ``HttpOnly``, ``SameSite=Strict``, ``Secure`` over HTTPS."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response


def set_strict(
    response: Response, request: Request, name: str, value: str, *, max_age: int, path: str
) -> None:
    """Set a cookie that scripts cannot read and other sites' requests do not carry."""
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path=path,
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
