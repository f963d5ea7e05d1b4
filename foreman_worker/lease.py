"""Keeping a claim alive: the lease of the running task, renewed through the API.

A claim takes a lease in the database (``leaseSeconds``). While the handler runs, one
background thread per worker process renews it every ``FOREMAN_WORKER_HEARTBEAT_INTERVAL``
seconds; if the worker dies, hangs or is cut off, the lease runs out and the reconciler
moves the task on. A renewal answered ``409 stale_claim`` means the claim was lost (the task
was cancelled, or recovered while this process was paused): the attempt's result will be
refused, and the keeper says so once.

Tasks that finish within one interval cost nothing here: nothing is sent for them.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from foreman_worker.client import ForemanClient

log = logging.getLogger("foreman_worker.lease")


@dataclass
class _Held:
    task_id: str
    job_id: str
    renewed_at: float
    lost: bool = False


class LeaseKeeper:
    """Renews the lease of the task this process is running, from a daemon thread."""

    def __init__(self, client: ForemanClient, *, lease_seconds: float, interval: float) -> None:
        self.client = client
        self.lease_seconds = lease_seconds
        self.interval = interval
        self._held: _Held | None = None
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def current_task_id(self) -> str | None:
        """The task whose lease is being kept, if any."""
        held = self._held
        return held.task_id if held is not None else None

    @contextmanager
    def hold(self, task_id: str, job_id: str) -> Iterator[_Held]:
        """Keep the lease of ``task_id`` (claimed by ``job_id``) while the block runs."""
        self._start()
        held = _Held(task_id, job_id, time.monotonic())
        with self._lock:
            self._held = held
        try:
            yield held
        finally:
            with self._lock:
                self._held = None

    def _start(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        self._thread = threading.Thread(target=self._run, name="foreman-lease", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._wake.wait(self.interval / 2):
            held = self._held
            if held is None or held.lost:
                continue
            if time.monotonic() - held.renewed_at >= self.interval:
                self.renew(held)

    def renew(self, held: _Held) -> None:
        """Renew once now (the thread calls this every ``interval``)."""
        result = self.client.heartbeat_task(
            held.task_id, queue_job_id=held.job_id, lease_seconds=self.lease_seconds
        )
        if result.success:
            held.renewed_at = time.monotonic()
        elif self._held is not held:
            return  # the attempt ended meanwhile (its outcome was recorded): nothing to keep
        elif result.error is not None and result.error.status in (404, 409):
            held.lost = True
            log.warning(
                "task %s: job %s lost its claim (%s); its result will not be recorded",
                held.task_id,
                held.job_id,
                result.error.message,
            )
        else:
            log.warning("task %s: lease not renewed (%s); trying again", held.task_id, result.error)

    def stop(self, wait: float | None = None) -> None:
        """Stop renewing; with ``wait``, give a renewal in flight that long to finish (so
        nothing is sent once this returns, unless the wait ran out)."""
        self._wake.set()
        thread = self._thread
        if wait is not None and thread is not None and thread is not threading.current_thread():
            thread.join(wait)
