"""Service configuration, read once from ``FOREMAN_*`` environment variables."""

from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_SQLITE_PATH = Path(".foreman") / "foreman.db"

_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_RATE_RE = re.compile(r"^\s*(\d+)\s*/\s*(\d*)\s*([smhd])\s*$")


@dataclass(frozen=True, slots=True)
class RateLimit:
    """``requests`` allowed per ``window_seconds``; ``None`` requests means unlimited."""

    requests: int | None
    window_seconds: int

    @property
    def unlimited(self) -> bool:
        return self.requests is None

    def __str__(self) -> str:
        if self.requests is None:
            return "unlimited"
        return f"{self.requests}/{self.window_seconds}s"


UNLIMITED = RateLimit(requests=None, window_seconds=1)


def parse_rate_limit(text: str) -> RateLimit:
    """Parse ``100/15m``, ``5000/1h``, ``10/s`` or ``unlimited``.

    Raises ValueError with a sentence a user can act on.
    """
    if text.strip().lower() == "unlimited":
        return UNLIMITED
    match = _RATE_RE.match(text)
    if not match:
        raise ValueError(
            f"invalid rate limit {text!r}: expected N/<duration> such as 100/15m, 5000/1h "
            "or 'unlimited'"
        )
    count, amount, unit = int(match[1]), int(match[2] or 1), match[3]
    if count < 1 or amount < 1:
        raise ValueError(f"invalid rate limit {text!r}: count and window must be positive")
    return RateLimit(requests=count, window_seconds=amount * _UNIT_SECONDS[unit])


class Settings(BaseSettings):
    """Everything the API service reads from its environment."""

    model_config = SettingsConfigDict(
        env_prefix="FOREMAN_", extra="ignore", use_attribute_docstrings=True
    )

    database_url: str = Field(default=f"sqlite:///{DEFAULT_SQLITE_PATH}")
    """Where runs and tasks live: ``sqlite:///path`` or ``postgresql://user:pass@host/db``."""
    redis_url: str | None = None
    """Redis for rate limits shared by several API processes (unset: kept in memory)."""
    rate_limit_namespace: str = Field(default="foreman:ratelimit", min_length=1)
    """Prefix of the rate-limit counters in Redis (one per deployment sharing a server)."""
    rate_limit: str = "100/15m"
    """Default per-key limit, ``N/<s,m,h,d>`` or ``unlimited`` (a key may set its own)."""
    env: str = "dev"
    """Names the keys this server issues: ``fmn_<env>_…``."""
    max_body_bytes: int = Field(default=1_048_576, ge=1024)
    """Larger request bodies get ``413``."""
    auth_failure_limit: str = "30/1m"
    """Failed authentications allowed per client address."""
    key_cache_seconds: float = Field(default=2.0, ge=0)
    """How long a key lookup is cached (a revocation takes effect within this)."""
    sqlite_lock_timeout: float = Field(default=30.0, gt=0)
    """SQLite: how long a write waits for another process's write lock before a 503."""
    metrics_enabled: bool = True
    """Serve Prometheus metrics at ``/metrics`` (and time HTTP requests for them)."""
    metrics_token: str | None = Field(default=None, min_length=16)
    """When set, ``/metrics`` requires ``Authorization: Bearer <token>``."""
    ui_session_hours: float = Field(default=8.0, gt=0, le=24 * 30)
    """How long a dashboard sign-in lasts (its session row and cookie expire then)."""

    @field_validator("env")
    @classmethod
    def _env_is_simple(cls, value: str) -> str:
        if not re.fullmatch(r"[a-z0-9]{1,16}", value):
            raise ValueError("FOREMAN_ENV must be 1-16 lowercase letters or digits")
        return value

    @field_validator("rate_limit", "auth_failure_limit")
    @classmethod
    def _rate_limit_parses(cls, value: str) -> str:
        parse_rate_limit(value)
        return value

    @property
    def default_rate_limit(self) -> RateLimit:
        return parse_rate_limit(self.rate_limit)

    @property
    def auth_failure_rate_limit(self) -> RateLimit:
        return parse_rate_limit(self.auth_failure_limit)


def environment_help(settings: type[BaseSettings]) -> str:
    """The environment variables of ``settings`` with their defaults and the first line of
    their docstrings, for a command's ``--help``."""
    prefix = str(settings.model_config.get("env_prefix", ""))
    lines = ["environment variables:"]
    for name, field in settings.model_fields.items():
        default = "unset" if field.default in (None, "") else repr(field.default)
        lines.append(f"  {prefix}{name.upper()} (default {default})")
        if field.description:
            first = " ".join(field.description.split()).split(". ")[0].rstrip(".")
            lines += textwrap.wrap(
                first.replace("``", ""), 88, initial_indent=" " * 6, subsequent_indent=" " * 6
            )
    return "\n".join(lines)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read from the environment on first use."""
    return Settings()
