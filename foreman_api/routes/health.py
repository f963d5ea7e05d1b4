"""``GET /health``: liveness and dependencies, no key required."""

from __future__ import annotations

import redis
import sqlalchemy as sa
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from foreman_api import __version__
from foreman_api.deps import get_services
from foreman_api.schemas import Health

router = APIRouter(tags=["health"])


@router.get("/health", response_model=Health, responses={503: {"model": Health}})
def health(request: Request) -> JSONResponse:
    """``ok`` when the database (and Redis, if configured) answer; ``degraded`` otherwise."""
    services = get_services(request)
    database = "ok"
    try:
        with services.engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except sa.exc.SQLAlchemyError:
        database = "unavailable"
    redis_status = "not_configured"
    if services.redis is not None:
        try:
            services.redis.ping()
            redis_status = "ok"
        except redis.RedisError:
            redis_status = "unavailable"
    healthy = database == "ok" and redis_status != "unavailable"
    body = Health(
        status="ok" if healthy else "degraded",
        database=database,
        redis=redis_status,
        version=__version__,
    )
    return JSONResponse(body.model_dump(mode="json"), status_code=200 if healthy else 503)
