"""``/docs``: Swagger UI on the API's OpenAPI document, from assets vendored in the package.

Nothing is fetched from the internet: the bundle, its stylesheet and the favicon are served
from ``/static`` (see :mod:`foreman_api.ui`), so the page works on a machine with no
network. FastAPI's own ``/docs`` and ``/redoc`` (both load from a CDN) are switched off.
"""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

router = APIRouter(include_in_schema=False)

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Foreman API - Swagger UI</title>
<link rel="icon" type="image/png" href="/static/favicon.png">
<link rel="stylesheet" href="/static/swagger-ui/swagger-ui.css">
</head>
<body>
<div id="swagger-ui"></div>
<script src="/static/swagger-ui/swagger-ui-bundle.js"></script>
<script src="/static/swagger-init.js"></script>
</body>
</html>
"""


@router.get("/docs")
async def swagger_ui() -> HTMLResponse:
    """The interactive API reference."""
    return HTMLResponse(PAGE)
