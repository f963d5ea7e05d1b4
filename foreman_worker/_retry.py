"""Retry policy of the clients, and its translation into tenacity settings."""

from __future__ import annotations

import logging
import math
import random
from dataclasses import dataclass
from typing import Any

import tenacity

from foreman_worker import shutdown
from foreman_worker._responses import Attempt
from foreman_worker.errors import ConfigurationError

log = logging.getLogger("foreman_worker.client")


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how long a client retries a call that failed transiently.

    ``attempts`` counts every try, the first included (None: no limit by count, which then
    needs a ``deadline``). The wait before retry *n* is drawn from
    ``[b/2, b]`` with ``b = min(max_wait, initial_wait * 2**(n-1))`` (exponential backoff with
    jitter); after a ``429`` it is at least the server's ``Retry-After``, still capped by
    ``max_wait``. ``deadline`` bounds the seconds spent on one call, waits included: no
    retry starts after it.

    Whatever the policy, a process that is shutting down (:mod:`foreman_worker.shutdown`)
    does not wait past its grace: waits are cut to the time left, and once the grace has
    run out no retry starts.

    Which failures are retried is decided per call, see :class:`ForemanClient`.
    """

    attempts: int | None = 4
    initial_wait: float = 0.1
    max_wait: float = 10.0
    deadline: float | None = None

    def __post_init__(self) -> None:
        if self.attempts is not None and (not isinstance(self.attempts, int) or self.attempts < 1):
            raise ConfigurationError(f"attempts must be an int >= 1, got {self.attempts!r}")
        if self.attempts is None and self.deadline is None:
            raise ConfigurationError("a RetryPolicy needs attempts or a deadline (or both)")
        for name in ("initial_wait", "max_wait"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value >= 0):
                raise ConfigurationError(f"{name} must be a finite number >= 0, got {value!r}")
        if self.initial_wait > self.max_wait:
            raise ConfigurationError("initial_wait must not exceed max_wait")
        if self.deadline is not None and not (
            isinstance(self.deadline, int | float) and self.deadline > 0
        ):
            raise ConfigurationError(f"deadline must be a number > 0, got {self.deadline!r}")

    @classmethod
    def none(cls) -> RetryPolicy:
        """Try each call once."""
        return cls(attempts=1)

    @classmethod
    def patient(
        cls, deadline: float = 120.0, *, initial_wait: float = 0.5, max_wait: float = 10.0
    ) -> RetryPolicy:
        """Keep retrying for ``deadline`` seconds: long enough to outlast an API restart.

        Meant for the worker runner, whose status writes must not be lost.
        """
        return cls(attempts=None, initial_wait=initial_wait, max_wait=max_wait, deadline=deadline)

    def wait(self, retry_number: int, retry_after: float | None = None) -> float:
        """Seconds to wait before retry ``retry_number`` (1 for the first retry)."""
        ceiling = min(self.max_wait, self.initial_wait * 2.0 ** min(retry_number - 1, 64))
        delay = random.uniform(ceiling / 2, ceiling)
        if retry_after is not None:
            delay = max(delay, retry_after)
        return min(delay, self.max_wait)

    def tenacity_options(self) -> dict[str, Any]:
        """Keyword arguments for ``tenacity.Retrying`` / ``AsyncRetrying`` (without sleep).

        The retried function returns an :class:`Attempt`; nothing is raised.
        """
        stop: tenacity.stop.stop_base = _StopAtShutdownDeadline()
        if self.attempts is not None:
            stop = stop | tenacity.stop_after_attempt(self.attempts)
        if self.deadline is not None:
            stop = stop | tenacity.stop_after_delay(self.deadline)
        return {
            "stop": stop,
            "wait": self._tenacity_wait,
            "retry": tenacity.retry_if_result(_is_retryable),
            "before_sleep": _log_retry,
            "retry_error_callback": _last_attempt,
        }

    def _tenacity_wait(self, state: tenacity.RetryCallState) -> float:
        attempt = _attempt_of(state)
        error = attempt.result.error
        delay = self.wait(state.attempt_number, error.retry_after if error else None)
        if self.deadline is not None:
            remaining = self.deadline - (state.seconds_since_start or 0.0)
            delay = min(delay, max(remaining, 0.0))
        grace = shutdown.remaining()
        if grace is not None:
            delay = min(delay, grace)
        return delay


class _StopAtShutdownDeadline(tenacity.stop.stop_base):
    """Stop retrying once the process's shutdown grace has run out."""

    def __call__(self, retry_state: tenacity.RetryCallState) -> bool:
        return shutdown.expired()


def _attempt_of(state: tenacity.RetryCallState) -> Attempt[Any]:
    if state.outcome is None:  # tenacity sets it before any of our hooks run
        raise RuntimeError("retry hook called before the first attempt")
    attempt: Attempt[Any] = state.outcome.result()
    return attempt


def _is_retryable(attempt: Attempt[Any]) -> bool:
    return attempt.retryable


def _last_attempt(state: tenacity.RetryCallState) -> Attempt[Any]:
    return _attempt_of(state)


def _log_retry(state: tenacity.RetryCallState) -> None:
    attempt = _attempt_of(state)
    wait = state.next_action.sleep if state.next_action else 0.0
    log.warning(
        "%s failed (%s); retry %d in %.2fs",
        attempt.label,
        attempt.result.error,
        state.attempt_number,
        wait,
    )
