"""Pure ASGI middleware: body size limit and rate-limit headers on every response."""

from __future__ import annotations

import contextlib

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from foreman_api.deps import RATE_LIMIT_HEADERS_STATE
from foreman_api.errors import error_body


class BodySizeLimit:
    """Refuse request bodies over ``max_bytes`` with ``413`` before any handler reads them.

    Checks ``Content-Length`` up front and counts streamed (chunked) bodies as they arrive.
    """

    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        message = f"request body is larger than the limit of {self.max_bytes} bytes"
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    too_large = int(value) > self.max_bytes
                except ValueError:
                    too_large = False
                if too_large:
                    await _send_error(send, 413, message, "payload_too_large")
                    return
        received = 0
        too_large = False

        async def limited_receive() -> Message:
            nonlocal received, too_large
            msg = await receive()
            if msg["type"] == "http.request":
                received += len(msg.get("body", b""))
                if received > self.max_bytes:
                    too_large = True
                    raise _BodyTooLarge
            return msg

        responded = False

        async def guarded_send(msg: Message) -> None:
            # Whatever the app answers once the body overflowed (FastAPI turns the error
            # raised from receive() into a 400) is replaced by the 413 below.
            nonlocal responded
            if too_large and not responded:
                return
            responded = responded or msg["type"] == "http.response.start"
            await send(msg)

        with contextlib.suppress(_BodyTooLarge):
            await self.app(scope, limited_receive, guarded_send)
        if too_large and not responded:
            await _send_error(send, 413, message, "payload_too_large")


class _BodyTooLarge(Exception):
    pass


async def _send_error(send: Send, status: int, message: str, code: str) -> None:
    body = error_body(message, code)
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class RateLimitHeaders:
    """Copy the rate-limit headers computed during authentication onto the response.

    Done here rather than in the dependency so that error responses (404, 409, 429…) carry
    them too.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(msg: Message) -> None:
            if msg["type"] == "http.response.start":
                extra = scope.get("state", {}).get(RATE_LIMIT_HEADERS_STATE)
                if extra:
                    names = {name.lower() for name, _ in msg.get("headers", [])}
                    msg["headers"] = list(msg.get("headers", [])) + [
                        (k.lower().encode(), v.encode())
                        for k, v in extra.items()
                        if k.lower().encode() not in names
                    ]
            await send(msg)

        await self.app(scope, receive, send_with_headers)
