"""Client settings: constructor arguments resolved against the environment, checked once."""

from __future__ import annotations

import os
from typing import Any, Final

import httpx

from foreman_api import __version__
from foreman_worker._calls import API_PREFIX, Call
from foreman_worker._retry import RetryPolicy
from foreman_worker.errors import ConfigurationError

DEFAULT_API_URL: Final = "http://127.0.0.1:8000"


class ClientSettings:
    """Constructor arguments resolved against the environment and checked once."""

    def __init__(
        self, base_url: str | None, api_key: str | None, timeout: float, retry: RetryPolicy | None
    ) -> None:
        url = base_url if base_url is not None else os.environ.get("FOREMAN_API_URL", "")
        self.base_url = _check_url(url.strip() or DEFAULT_API_URL)
        key = api_key if api_key is not None else os.environ.get("FOREMAN_API_KEY", "")
        key = key.strip()
        if key and not all(" " < char < "\x7f" for char in key):
            raise ConfigurationError("the API key contains spaces or non-ASCII characters")
        self.auth = {"Authorization": f"Bearer {key}"} if key else {}
        if not (isinstance(timeout, int | float) and timeout > 0):
            raise ConfigurationError(f"timeout must be a number of seconds > 0, not {timeout!r}")
        self.timeout = float(timeout)
        self.retry = retry if retry is not None else RetryPolicy()
        self.retry_options = self.retry.tenacity_options()
        self.headers = {"User-Agent": f"foreman-worker/{__version__}", "Accept": "application/json"}

    def request_args(self, call: Call[Any]) -> dict[str, Any]:
        return {
            "params": call.params,
            "json": call.body,
            "headers": self.auth if call.authenticated else None,
        }


def _check_url(url: str) -> str:
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as exc:
        raise ConfigurationError(f"invalid Foreman API URL {url!r}: {exc}") from exc
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise ConfigurationError(f"the Foreman API URL must be http(s)://host[:port], not {url!r}")
    # Accept the URL with or without the API prefix: paths are built with it.
    url = url.rstrip("/")
    return url.removesuffix(API_PREFIX).rstrip("/") or url


class ClientBase:
    """What the sync and async clients share: their settings and the properties on them."""

    _settings: ClientSettings

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        timeout: float = 10.0,
        retry: RetryPolicy | None = None,
    ) -> None:
        self._settings = ClientSettings(base_url, api_key, timeout, retry)

    @property
    def base_url(self) -> str:
        """The API's root URL, without the ``/api/v1`` prefix."""
        return self._settings.base_url

    @property
    def retry(self) -> RetryPolicy:
        """The retry policy of every call."""
        return self._settings.retry

    def _http_options(self) -> dict[str, Any]:
        return {
            "base_url": self._settings.base_url,
            "timeout": self._settings.timeout,
            "headers": self._settings.headers,
        }
