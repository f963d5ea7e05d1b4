"""The RQ worker that ``foreman-worker`` runs, and how it recovers jobs of dead workers.

:class:`ForemanWorker` is an RQ ``SimpleWorker``: jobs run in the worker process itself
(no fork per job), with one reused API client, which is what keeps per-task overhead low.
The runner enforces handler timeouts itself (SIGALRM on the main thread, ``wait_for`` for
``async def``), so RQ's own job timeout is switched off (:class:`NoDeathPenalty`).

**Abandoned jobs.** RQ records each running job in the queue's ``StartedJobRegistry`` with
an expiry score; a job whose score is in the past is *abandoned* and
``StartedJobRegistry.cleanup()`` hands it to the job's failure callback
(:func:`foreman_worker.runner.on_job_failure`, which maps ``job.args[0]`` back to the task).
Plain RQ sets that expiry to the job timeout + 60 s and SimpleWorker never renews it, so a
killed worker's job waits minutes. Here:

* the expiry is a short *lease* (``FOREMAN_WORKER_LEASE``, 10 s) — see
  :meth:`ForemanWorker.get_heartbeat_ttl`;
* a heartbeat thread renews the lease of the running job every
  ``FOREMAN_WORKER_HEARTBEAT_INTERVAL`` (2 s) with RQ's own ``maintain_heartbeats``;
* a reaper thread in every worker runs ``StartedJobRegistry.cleanup()`` for its queues every
  ``FOREMAN_WORKER_REAP_INTERVAL`` (2 s), at most one worker per queue per interval
  (a Redis ``SET NX`` lock).

**Delayed jobs** (retries after a backoff) sit in RQ's ``ScheduledJobRegistry``. Instead of
RQ's scheduler process (forked per worker, orphaned when the worker is SIGKILLed, and
holding a 61 s lock that stalls retries after such a kill), a scheduler thread in every
worker moves due jobs to their queue once a second, one worker per queue at a time under a
short lock.

A SIGKILLed worker's task is therefore back on a queue within lease + reap interval (about
12 s) and runs on a live worker, or fails as ``WorkerLost`` when out of retries.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Sequence
from typing import Any

from redis import Redis
from rq import Queue, SimpleWorker
from rq.job import Job
from rq.registry import StartedJobRegistry
from rq.scheduler import RQScheduler
from rq.timeouts import BaseDeathPenalty
from rq.worker import WorkerStatus

from foreman_worker.settings import WorkerSettings

log = logging.getLogger("foreman_worker.worker")

REAPER_LOCK_PREFIX = "foreman:reaper:"
SCHEDULER_LOCK_PREFIX = "foreman:scheduler:"
SCHEDULER_INTERVAL = 1.0
SCHEDULER_LOCK_SECONDS = 10
WORKER_TTL = 20
"""RQ blocks on the queues for WORKER_TTL - 15 s at a time: short, so stop requests and
maintenance are handled promptly by an idle worker."""
MAINTENANCE_INTERVAL = 60


class NoDeathPenalty(BaseDeathPenalty):
    """RQ's job timeout, switched off: the runner enforces each handler's own timeout."""

    def setup_death_penalty(self) -> None:
        return None

    def cancel_death_penalty(self) -> None:
        return None


class ForemanWorker(SimpleWorker):
    """An RQ SimpleWorker with a renewed short lease on the running job and a reaper."""

    death_penalty_class = NoDeathPenalty

    def __init__(
        self,
        queues: Sequence[str],
        *,
        connection: Redis,
        settings: WorkerSettings,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("worker_ttl", WORKER_TTL)
        kwargs.setdefault("maintenance_interval", MAINTENANCE_INTERVAL)
        heartbeat = max(1, int(settings.worker_heartbeat_interval))
        kwargs.setdefault("job_monitoring_interval", heartbeat)
        kwargs.setdefault("default_result_ttl", 0)
        kwargs.setdefault("log_job_description", False)
        super().__init__(list(queues), connection=connection, **kwargs)
        self.settings = settings
        self._active: tuple[Job, Any] | None = None
        self._active_lock = threading.Lock()
        self._stop_threads = threading.Event()
        self._threads: list[threading.Thread] = []
        self._scheduler = RQScheduler(self.queue_names(), connection=connection)

    def _set_ip_address(self, connection: Redis) -> None:
        # RQ parses CLIENT INFO; some Redis-compatible servers (fakeredis' TCP server, used by
        # the demo when no Redis runs) answer in a shape redis-py cannot parse. The address is
        # informational only, so such a server must not stop the worker from starting.
        try:
            super()._set_ip_address(connection)
        except ValueError:
            self.ip_address = "unknown"

    # ---- lease ---------------------------------------------------------------------------

    def get_heartbeat_ttl(self, job: Job, working_time: float = 0.0) -> int:
        """The lease of a running job: renewed by the heartbeat thread, short when not."""
        return math.ceil(self.settings.worker_lease)

    def execute_job(self, job: Job, queue: Queue) -> None:
        execution = self.prepare_execution(job)
        with self._active_lock:
            self._active = (job, execution)
        try:
            self.perform_job(job, queue, execution)
        finally:
            with self._active_lock:
                self._active = None
        self.set_state(WorkerStatus.IDLE)

    def renew_lease(self) -> None:
        """Renew the running job's lease (called by the heartbeat thread)."""
        with self._active_lock:
            active = self._active
        if active is not None:
            job, execution = active
            self.maintain_heartbeats(job, execution)

    # ---- reaper --------------------------------------------------------------------------

    def reap(self) -> int:
        """Hand this worker's queues' abandoned jobs to their failure callback.

        Returns the number of queues cleaned (0 when other workers held the locks).
        """
        cleaned = 0
        lock_seconds = max(1, int(self.settings.worker_reap_interval))
        for name in self.queue_names():
            lock = f"{REAPER_LOCK_PREFIX}{name}"
            if not self.connection.set(lock, self.name, nx=True, ex=lock_seconds):
                continue
            registry = StartedJobRegistry(
                name,
                connection=self.connection,
                job_class=self.job_class,
                serializer=self.serializer,
                death_penalty_class=NoDeathPenalty,
            )
            registry.cleanup()
            cleaned += 1
        return cleaned

    def schedule(self) -> int:
        """Move due delayed jobs of this worker's queues onto the queues.

        Returns the number of queues handled (0 when other workers held the locks).
        """
        locked = []
        for name in self.queue_names():
            lock = f"{SCHEDULER_LOCK_PREFIX}{name}"
            if self.connection.set(lock, self.name, nx=True, ex=SCHEDULER_LOCK_SECONDS):
                locked.append(name)
        if not locked:
            return 0
        try:
            self._scheduler.prepare_registries(locked)
            self._scheduler.enqueue_scheduled_jobs()  # type: ignore[no-untyped-call]
        finally:
            for name in locked:
                lock = f"{SCHEDULER_LOCK_PREFIX}{name}"
                if self.connection.get(lock) == self.name.encode():
                    self.connection.delete(lock)
        return len(locked)

    # ---- threads -------------------------------------------------------------------------

    def work(self, *args: Any, **kwargs: Any) -> bool:
        """RQ's work loop, with the heartbeat, reaper and scheduler threads around it.

        RQ's own scheduler (``with_scheduler``) is not used: see the module docstring.
        """
        kwargs["with_scheduler"] = False
        self.start_threads()
        try:
            return bool(super().work(*args, **kwargs))
        finally:
            self.stop_threads()

    def start_threads(self) -> None:
        if self._threads:
            return
        self._stop_threads.clear()
        loops = [
            ("foreman-heartbeat", self.settings.worker_heartbeat_interval, self.renew_lease),
            ("foreman-reaper", self.settings.worker_reap_interval, self.reap),
            ("foreman-scheduler", SCHEDULER_INTERVAL, self.schedule),
        ]
        for name, interval, step in loops:
            thread = threading.Thread(
                target=self._loop, args=(interval, step), name=name, daemon=True
            )
            thread.start()
            self._threads.append(thread)

    def stop_threads(self) -> None:
        self._stop_threads.set()
        for thread in self._threads:
            thread.join(timeout=5)
        self._threads.clear()

    def _loop(self, interval: float, step: Any) -> None:
        while not self._stop_threads.wait(interval):
            try:
                step()
            except Exception:
                log.exception("worker %s: %s failed", self.name, threading.current_thread().name)

    def teardown(self) -> None:
        self.stop_threads()
        super().teardown()  # type: ignore[no-untyped-call]
