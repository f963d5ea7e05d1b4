"""The process's shutdown state: was a stop requested, and until when may it take?

A worker told to stop (SIGTERM, SIGINT) finishes its current task within a *grace*
(``FOREMAN_WORKER_SHUTDOWN_GRACE``). The worker records the request here with
:func:`request`; anything that waits — the API client's retries, a wait for Redis, a
runner loop — reads :func:`requested`, :func:`remaining` or :func:`expired` so that it
never waits past the deadline. When the grace runs out, or on a second signal, the worker
leaves through :func:`exit_now`: one log line, no traceback, exit status
:data:`FORCED_EXIT_STATUS`, the task left as it is for the database lease to recover.

The state is per process and starts empty; :func:`reset` empties it again (for tests).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
import time
from typing import Final, NoReturn

log = logging.getLogger("foreman_worker.shutdown")

FORCED_EXIT_STATUS: Final = 3
"""Exit status of a worker that stopped without finishing its task."""

_lock = threading.Lock()
_leaving = threading.Lock()  # held by the one thread that calls os._exit
_deadline: float | None = None  # time.monotonic() value; None while no stop was requested


def request(grace: float) -> bool:
    """Record a stop request with ``grace`` seconds to finish. True on the first request;
    later requests keep the first deadline."""
    global _deadline
    with _lock:
        if _deadline is not None:
            return False
        _deadline = time.monotonic() + max(grace, 0.0)
        return True


def requested() -> bool:
    """Has this process been asked to stop?"""
    return _deadline is not None


def deadline() -> float | None:
    """The ``time.monotonic()`` by which the process must be gone; None if not stopping."""
    return _deadline


def remaining() -> float | None:
    """Seconds left of the grace (0 once expired); None if not stopping."""
    end = _deadline
    return None if end is None else max(end - time.monotonic(), 0.0)


def expired() -> bool:
    """Has a requested stop's grace run out?"""
    end = _deadline
    return end is not None and time.monotonic() >= end


def reset() -> None:
    """Forget any stop request (tests)."""
    global _deadline
    with _lock:
        _deadline = None


def exit_now(message: str) -> NoReturn:
    """Leave the process at once: ``message`` as one warning line, then ``os._exit``.

    Nothing else runs (no ``finally`` blocks, no atexit hooks, no RQ bookkeeping): the
    task in hand is left as it is, and its lease in the database will bring it back.
    When two threads get here at once (the grace watchdog and the main loop noticing the
    same expiry), the first one leaves and the other waits for the process to end.
    """
    if not _leaving.acquire(blocking=False):
        threading.Event().wait()
    log.warning(message)
    with contextlib.suppress(Exception):  # leaving anyway: nothing to report a failure to
        for handler in logging.getLogger().handlers:
            handler.flush()
        sys.stdout.flush()
        sys.stderr.flush()
    os._exit(FORCED_EXIT_STATUS)
