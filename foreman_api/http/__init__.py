"""The API's request path: routes declared once, served without a framework in between.

:mod:`.endpoints` declares a route (method, path, permission, body/query/path models,
response model) and its handler; :mod:`.dispatch` serves the declared routes as a bare ASGI
app in front of FastAPI (which still serves ``/docs``, ``/openapi.json`` and routes not yet
declared this way); :mod:`.openapi` documents the declared routes in FastAPI's OpenAPI
document, from the same declarations.
"""
