"""Worker configuration, read from the environment in one place.

``FOREMAN_API_URL``, ``FOREMAN_API_KEY`` and ``FOREMAN_REDIS_URL`` are the documented
settings (DESIGN §5). The ``FOREMAN_WORKER_*`` variables tune crash recovery and are
rarely needed; every duration is in seconds.
"""

from __future__ import annotations

from pydantic import Field, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from foreman_worker.errors import ConfigurationError

DEFAULT_API_URL = "http://127.0.0.1:8000"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


class WorkerSettings(BaseSettings):
    """Everything a worker process (or an enqueuing process) reads from its environment."""

    model_config = SettingsConfigDict(
        env_prefix="FOREMAN_", extra="ignore", frozen=True, use_attribute_docstrings=True
    )

    api_url: str = DEFAULT_API_URL
    """The Foreman API this worker records its tasks in."""
    api_key: SecretStr | None = None
    """An API key with tasks:read and tasks:update (and run data permissions if used)."""
    redis_url: str = DEFAULT_REDIS_URL
    """The Redis that carries the RQ queues."""
    queue_prefix: str = Field(default="", max_length=64, pattern=r"^[A-Za-z0-9_.:-]*$")
    """Deployment prefix of every Redis name: deployments that share a Redis database use
    different prefixes and never see each other's tasks."""

    worker_lease: float = Field(default=10.0, ge=3.0, le=600.0)
    """How long a running job stays owned without a heartbeat. A worker that dies is
    noticed at most ``worker_lease + worker_reap_interval`` seconds later."""
    worker_heartbeat_interval: float = Field(default=2.0, gt=0.0, le=60.0)
    """How often a busy worker renews its lease (a background thread does it)."""
    worker_reap_interval: float = Field(default=2.0, gt=0.0, le=60.0)
    """How often each worker looks for jobs whose worker stopped renewing its lease."""
    worker_scan_interval: float = Field(default=10.0, gt=0.0, le=600.0)
    """How often the reconciler checks the tasks that should wait on a queue against Redis
    (a job Redis lost is put back within about twice this)."""
    worker_shutdown_grace: float = Field(default=30.0, gt=0.0, le=86400.0)
    """After SIGTERM/SIGINT, how long the running task may take to finish. When it runs
    out (or on a second signal) the worker exits at once, leaving the task to be
    recovered; API retries and waits for Redis never outlast it."""

    @model_validator(mode="after")
    def _heartbeat_inside_lease(self) -> WorkerSettings:
        if self.worker_heartbeat_interval * 2 > self.worker_lease:
            raise ValueError(
                "FOREMAN_WORKER_HEARTBEAT_INTERVAL must be at most half of FOREMAN_WORKER_LEASE"
            )
        return self


def load_settings() -> WorkerSettings:
    """Read the settings from the environment, turning validation errors into one message."""
    try:
        return WorkerSettings()
    except ValidationError as exc:
        problems = "; ".join(
            f"FOREMAN_{'_'.join(str(p) for p in err['loc']).upper() or '?'}: {err['msg']}"
            for err in exc.errors()
        )
        raise ConfigurationError(f"invalid worker settings: {problems}") from exc
