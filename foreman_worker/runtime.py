"""The runner's process-wide state: the API client, the Redis connection, the handlers,
the lease keeper and the completion waiting to be read, built once per worker process."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from redis import Redis

from foreman_worker._retry import RetryPolicy
from foreman_worker.enqueue import default_connection, default_namespace
from foreman_worker.lease import LeaseKeeper
from foreman_worker.queues import Namespace
from foreman_worker.registry import Registry, registry
from foreman_worker.settings import load_settings

if TYPE_CHECKING:
    from foreman_worker.client import ForemanClient
    from foreman_worker.runner import Outcome

PATIENCE = 600.0
"""How long the runner's client keeps retrying a call through an API outage or restart
(an outcome to record: the handler already ran); a stopping worker's grace cuts it short."""


@dataclass
class Runtime:
    """What the runner needs in a worker process; built once and reused for every job."""

    client: ForemanClient
    connection: Redis
    registry: Registry = field(default_factory=lambda: registry)
    namespace: Namespace = field(default_factory=default_namespace)
    lease_seconds: float = 10.0
    heartbeat_interval: float = 2.0
    heartbeat_client: ForemanClient | None = None
    """Renews leases; short retries, so a renewal never outlives the lease it renews."""
    worker_id: str | None = None
    """The worker's name, sent with each claim for the task's attempt history."""
    settle_after_job: bool = False
    """Read a completion's answer after RQ's end-of-job records (:func:`settle`), not
    before: set by ``foreman-worker``, whose worker calls :func:`settle` after each job."""
    unsettled: Recording | None = field(default=None, init=False, repr=False)
    _lease: LeaseKeeper | None = field(default=None, init=False, repr=False)

    @property
    def lease(self) -> LeaseKeeper:
        if self._lease is None:
            self._lease = LeaseKeeper(
                self.heartbeat_client or self.client,
                lease_seconds=self.lease_seconds,
                interval=self.heartbeat_interval,
            )
        return self._lease


_runtime: Runtime | None = None
_runtime_lock = threading.Lock()


def configure(runtime: Runtime | None) -> Runtime | None:
    """Install (or with None, forget) the process's runtime; the one it replaces.
    ``foreman-worker`` calls this."""
    global _runtime
    with _runtime_lock:
        previous, _runtime = _runtime, runtime
    return previous


def installed() -> Runtime | None:
    """The runtime installed now, if any (none is built)."""
    return _runtime


def runner_client(*, retry: RetryPolicy | None = None, timeout: float = 10.0) -> ForemanClient:
    """A client from the environment, by default with the runner's patient retry policy."""
    from foreman_worker.client import ForemanClient

    settings = load_settings()
    key = settings.api_key.get_secret_value() if settings.api_key else None
    patient = RetryPolicy.patient(PATIENCE, initial_wait=0.2, max_wait=5.0)
    return ForemanClient(settings.api_url, key, retry=retry or patient, timeout=timeout)


def runtime_from_settings(connection: Redis, registry: Registry = registry) -> Runtime:
    """The runtime ``foreman-worker`` (and plain ``rq worker``) runs jobs with."""
    settings = load_settings()
    interval = settings.worker_heartbeat_interval
    return Runtime(
        client=runner_client(),
        connection=connection,
        registry=registry,
        namespace=Namespace(settings.queue_prefix),
        lease_seconds=settings.worker_lease,
        heartbeat_interval=interval,
        heartbeat_client=runner_client(retry=RetryPolicy(attempts=2), timeout=interval),
    )


def get_runtime() -> Runtime:
    """The installed runtime, or one built from the environment (e.g. under plain ``rq worker``)."""
    global _runtime
    with _runtime_lock:
        if _runtime is None:
            _runtime = runtime_from_settings(default_connection())
        return _runtime


@dataclass(slots=True)
class Recording:
    """A completion sent to the API, its answer not read yet, and the lease it holds."""

    task_id: str
    finish: Callable[[], Outcome]
    lease: contextlib.ExitStack | None = None

    def settle(self) -> Outcome:
        with self.lease or contextlib.nullcontext():
            return self.finish()
