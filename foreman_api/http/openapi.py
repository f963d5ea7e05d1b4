"""Document the declared endpoints in FastAPI's OpenAPI document.

For each :class:`~foreman_api.http.endpoints.Endpoint` a stand-in route is added to the
FastAPI app, with a signature built from the endpoint's models (path parameters, a query
model, a body model), the authentication dependency (the security schemes), its response
model, status and the handler's docstring. FastAPI turns that into the OpenAPI operation.
The stand-in never serves: :class:`~foreman_api.http.dispatch.FastPath` answers every
request that matches the endpoint before FastAPI sees it (FastAPI still answers ``405``
with ``Allow`` for the other methods of the path).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Path, Query

from foreman_api.deps import require
from foreman_api.http.endpoints import Endpoint


def document(app: FastAPI, endpoints: list[Endpoint]) -> None:
    """Add a documentation route for each endpoint to ``app``."""
    for endpoint in endpoints:
        app.add_api_route(
            endpoint.path,
            _stand_in(endpoint),
            methods=[endpoint.method],
            response_model=endpoint.response_model,
            status_code=endpoint.status,
            summary=endpoint.summary or None,
            tags=list(endpoint.tags),
            responses=endpoint.responses or None,
        )


def _stand_in(endpoint: Endpoint) -> Callable[..., Any]:
    parameters = [
        inspect.Parameter(
            "caller",
            inspect.Parameter.KEYWORD_ONLY,
            annotation=Annotated[Any, Depends(require(endpoint.permission))],
        )
    ]
    if endpoint.path_model is not None:
        for name, field in endpoint.path_model.model_fields.items():
            parameters.append(
                inspect.Parameter(
                    name,
                    inspect.Parameter.KEYWORD_ONLY,
                    # The field's constraints (lengths, patterns) belong in the document too.
                    annotation=Annotated[
                        field.annotation,
                        *field.metadata,
                        Path(alias=field.alias, description=field.description),
                    ],
                )
            )
    if endpoint.query_model is not None:
        parameters.append(
            inspect.Parameter(
                "query",
                inspect.Parameter.KEYWORD_ONLY,
                annotation=Annotated[endpoint.query_model, Query()],
            )
        )
    if endpoint.body_model is not None:
        optional = {"annotation": endpoint.body_model | None, "default": None}
        parameters.append(
            inspect.Parameter(
                "body",
                inspect.Parameter.KEYWORD_ONLY,
                **(optional if endpoint.body_optional else {"annotation": endpoint.body_model}),
            )
        )

    async def stand_in(**_: Any) -> None:
        raise RuntimeError(f"{endpoint.method} {endpoint.path} is served by FastPath")

    stand_in.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    stand_in.__name__ = endpoint.handler.__name__
    stand_in.__doc__ = endpoint.handler.__doc__
    return stand_in
