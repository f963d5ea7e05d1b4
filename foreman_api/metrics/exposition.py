"""``GET /metrics``: the Prometheus text of this API, whichever process is scraped.

The counters and histograms of :mod:`foreman_api.metrics.instruments` come from this
process's registry, or, when ``PROMETHEUS_MULTIPROC_DIR`` is set (``foreman-api serve
--workers N`` sets it), from the files every API process writes there, added up. The
gauges of what is true now (tasks per type and status, runs per status, live workers)
are read from the database at each scrape (:mod:`foreman_api.storage.stats`), so every
process answers the same.

``/metrics`` needs no API key: it shows counts and task type names across organisations,
no ids and no data. ``FOREMAN_METRICS_TOKEN`` makes it require ``Authorization: Bearer
<token>``; ``FOREMAN_METRICS_ENABLED=false`` turns it off.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterator, Mapping
from typing import Final

from fastapi import FastAPI
from fastapi.responses import PlainTextResponse, Response
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector

from foreman_api.db import Database
from foreman_api.errors import Unauthorized, error_body
from foreman_api.metrics import processes
from foreman_api.schemas import RunStatus, TaskStatus
from foreman_api.storage import stats

METRICS_PATH: Final = "/metrics"
CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"


def check_token(expected: str | None, headers: Mapping[str, str]) -> None:
    """``401`` unless no token is configured or the request presents it as a Bearer."""
    if expected is None:
        return
    scheme, _, presented = headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(presented.strip(), expected):
        raise Unauthorized(
            "/metrics needs 'Authorization: Bearer <FOREMAN_METRICS_TOKEN>'",
            code="metrics_token_required",
        )


async def render(db: Database) -> bytes:
    """The text exposition of every metric, counted across this server's processes."""
    now = await stats.snapshot(db)
    return generate_latest(_Scrape(_process_metrics(), now))


def _process_metrics() -> CollectorRegistry:
    path = processes.directory()
    if path is None:
        return REGISTRY
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=path)  # type: ignore[no-untyped-call]
    return registry


class _Scrape:
    """What one scrape shows: the processes' metrics, then the database's gauges."""

    def __init__(self, registry: CollectorRegistry, now: stats.Snapshot) -> None:
        self.registry = registry
        self.now = now

    def collect(self) -> Iterator[Metric]:
        yield from self.registry.collect()
        yield from _gauges(self.now)


def _gauges(now: stats.Snapshot) -> Iterator[Metric]:
    tasks = GaugeMetricFamily(
        "foreman_tasks",
        "Tasks in the database now, by type and status (every status of a type, zeros too).",
        labels=["type", "status"],
    )
    for kind in sorted({kind for kind, _ in now.tasks}):
        for status in TaskStatus:
            tasks.add_metric([kind, status.value], now.tasks.get((kind, status.value), 0))
    yield tasks
    runs = GaugeMetricFamily(
        "foreman_runs", "Runs in the database now, by status.", labels=["status"]
    )
    for run_status in RunStatus:
        runs.add_metric([run_status.value], now.runs.get(run_status.value, 0))
    yield runs
    yield GaugeMetricFamily(
        "foreman_workers_live",
        "Workers that registered or heartbeat within the last 30 s.",
        value=now.live_workers,
    )


def document(app: FastAPI) -> None:
    """Describe ``GET /metrics`` in the OpenAPI document. The route answers only while
    metrics are off (the ASGI app in front serves them when on): with a ``404``."""

    @app.get(
        METRICS_PATH,
        tags=["health"],
        summary="Prometheus metrics",
        response_class=PlainTextResponse,
        responses={
            200: {"content": {"text/plain": {}}, "description": "Prometheus text format"},
            401: {"description": "FOREMAN_METRICS_TOKEN is set and was not presented"},
            404: {"description": "Metrics are turned off (FOREMAN_METRICS_ENABLED=false)"},
        },
    )
    async def metrics() -> Response:
        """Counters and histograms of tasks and HTTP requests, summed over every API
        process of this server, and gauges of tasks, runs and live workers read from the
        database. No API key; ``Authorization: Bearer <FOREMAN_METRICS_TOKEN>`` when that
        setting is given. The list of metrics is in the README."""
        body = error_body("metrics are turned off (FOREMAN_METRICS_ENABLED=false)", "not_found")
        return Response(body, status_code=404, media_type="application/json")
