"""The API's Prometheus instruments and the events that move them.

Counters and histograms count what this process did since it started: each task event is
recorded once, by the process whose statement made it, after its transaction committed.
Under ``foreman-api serve --workers N`` the values live in files of the directory named
by ``PROMETHEUS_MULTIPROC_DIR`` (``serve`` makes one), and a scrape of any process adds
them up (:mod:`foreman_api.metrics.exposition`). What is *now* true (tasks per status,
runs per status, live workers) is read from the database at scrape time instead.

Label values come from bounded sets (statuses, the route templates, HTTP methods) or
from what users name (task types, error types; the latter cut to
:data:`MAX_LABEL_LENGTH`).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any, Final

from prometheus_client import Counter, Histogram

from foreman_api.clock import as_utc
from foreman_api.db.base import Row
from foreman_api.schemas import TaskStatus

MAX_LABEL_LENGTH: Final = 100
TRIGGER_AUTOMATIC: Final = "automatic"
TRIGGER_MANUAL: Final = "manual"
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_ATTEMPT_ENDS = frozenset({TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.RETRYING})
_FAILURES = frozenset({TaskStatus.FAILED, TaskStatus.RETRYING})

TASKS_CREATED = Counter("foreman_tasks_created", "Tasks created, by type.", ["type"])
TASK_STATUS_CHANGES = Counter(
    "foreman_task_status_changes",
    "Moves of tasks into a status (creation counts as entering the first one).",
    ["type", "status"],
)
TASK_DURATION = Histogram(
    "foreman_task_duration_seconds",
    "How long attempts ran, from claim to the move that ended them, by type and outcome.",
    ["type", "outcome"],
    buckets=(0.005, 0.025, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600),
)
TASK_QUEUE_WAIT = Histogram(
    "foreman_task_queue_wait_seconds",
    "Time from queued to started of attempts that waited in line (first attempts and "
    "retries through the API; automatic retries wait out their backoff instead).",
    ["type"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)
TASK_RETRIES = Counter(
    "foreman_task_retries",
    "Tasks sent round again: automatic (a retry the worker or a lost lease scheduled) or "
    "manual (a retry or replay through the API).",
    ["type", "trigger"],
)
TASK_FAILURES = Counter(
    "foreman_task_failures",
    "Attempts that ended in an error (failed, or retrying), by type and errorData.type.",
    ["type", "error_type"],
)
HTTP_REQUESTS = Counter(
    "foreman_http_requests",
    "HTTP requests answered, by method, route template and status.",
    ["method", "route", "status"],
)
HTTP_DURATION = Histogram(
    "foreman_http_request_duration_seconds",
    "Time to answer an HTTP request, by method and route template.",
    ["method", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
RATE_LIMITED = Counter(
    "foreman_rate_limited_requests",
    "Requests refused with 429: over a key's limit (key) or too many failed "
    "authentications from one address (auth_failures).",
    ["limit"],
)

_http_children: dict[tuple[str, str, int], tuple[Any, Any]] = {}
_move_children_cache: dict[tuple[str, str], tuple[Any, Any]] = {}


def _label(value: Any) -> str:
    text = value if isinstance(value, str) else "unknown"
    return text[:MAX_LABEL_LENGTH]


def _seconds(start: datetime | None, end: datetime | None) -> float | None:
    if start is None or end is None:
        return None
    return max((as_utc(end) - as_utc(start)).total_seconds(), 0.0)


def task_created(row: Row) -> None:
    """A task was inserted (``row`` as returned)."""
    TASKS_CREATED.labels(row["type"]).inc()
    TASK_STATUS_CHANGES.labels(row["type"], row["status"]).inc()


def _move_children(kind: str, status: str) -> tuple[Any, Any]:
    """The status-change counter and the timing histogram (or None) of a move."""
    key = (kind, status)
    children = _move_children_cache.get(key)
    if children is None:
        timing = None
        if status == TaskStatus.RUNNING:
            timing = TASK_QUEUE_WAIT.labels(kind)
        elif status in _ATTEMPT_ENDS:
            timing = TASK_DURATION.labels(kind, status)
        children = (TASK_STATUS_CHANGES.labels(kind, status), timing)
        _move_children_cache[key] = children
    return children


def task_moved(row: Row) -> None:
    """A task moved to ``row["status"]`` (``row`` as the move returned it)."""
    kind, status = row["type"], row["status"]
    changes, timing = _move_children(kind, status)
    changes.inc()
    if status == TaskStatus.RUNNING:
        # retry_count is 0 only for a claim out of ``queued``; a claim of a due
        # ``retrying`` task keeps the queued_at of an earlier attempt.
        wait = _seconds(row["queued_at"], row["started_at"])
        if wait is not None and row["retry_count"] == 0:
            timing.observe(wait)
        return
    if timing is not None:
        ran = _seconds(row["started_at"], row["updated_at"])
        if ran is not None:
            timing.observe(ran)
    if status in _FAILURES:
        error = row["error_data"]
        error_type = error.get("type") if isinstance(error, dict) else None
        TASK_FAILURES.labels(kind, _label(error_type)).inc()
    if status == TaskStatus.RETRYING:
        TASK_RETRIES.labels(kind, TRIGGER_AUTOMATIC).inc()


def tasks_retried(rows: Iterable[Row]) -> None:
    """Failed or cancelled tasks went back to ``queued`` through the API."""
    for row in rows:
        TASK_STATUS_CHANGES.labels(row["type"], TaskStatus.QUEUED.value).inc()
        TASK_RETRIES.labels(row["type"], TRIGGER_MANUAL).inc()


def tasks_cancelled(types: Iterable[str]) -> None:
    """Unfinished tasks (one type per task) were cancelled with their run."""
    for kind in types:
        TASK_STATUS_CHANGES.labels(kind, TaskStatus.CANCELLED.value).inc()


def request_served(method: str, route: str, status: int, seconds: float) -> None:
    """An HTTP request was answered; ``route`` is its template (``/api/v1/tasks/{taskId}``)."""
    key = (method if method in _METHODS else "other", route, status)
    children = _http_children.get(key)
    if children is None:
        name = key[0]
        children = (
            HTTP_REQUESTS.labels(name, route, str(status)),
            HTTP_DURATION.labels(name, route),
        )
        _http_children[key] = children
    children[0].inc()
    children[1].observe(seconds)


def rate_limited(limit: str) -> None:
    """A request was refused with 429 (``limit``: ``key`` or ``auth_failures``)."""
    RATE_LIMITED.labels(limit).inc()
