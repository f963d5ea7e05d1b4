"""The RQ worker that ``foreman-worker`` runs, and how it recovers jobs of dead workers.

:class:`ForemanWorker` is an RQ ``SimpleWorker``: jobs run in the worker process itself
(no fork per job), with one reused API client, which is what keeps per-task overhead low.
The runner enforces handler timeouts itself (SIGALRM on the main thread, ``wait_for`` for
``async def``), so RQ's own job timeout is switched off (:class:`NoDeathPenalty`).

**Lost workers and lost jobs** are found from the database, not from Redis. The runner
claims each task with a lease that it renews through the API (:mod:`foreman_worker.lease`);
a background loop runs the :class:`~foreman_worker.reconciler.Reconciler` every
``FOREMAN_WORKER_REAP_INTERVAL`` (2 s; one worker per organisation acts per interval), which
recovers tasks whose lease expired and puts back on its queue every task Redis has lost.
Another loop keeps this worker's entry in the API's worker registry fresh
(:mod:`foreman_worker.presence`). RQ's own started-job registry still gets a heartbeat, so
RQ's maintenance leaves running jobs alone.

**The API and Redis work side by side.** A job id names its task, so the task's claim is
sent as soon as the id is off the queue, before RQ reads the job (``on_pop``:
:func:`~foreman_worker.runner.claim_popped_job`; for other job ids, before RQ writes its
start-of-job records: ``before_job``, :func:`~foreman_worker.runner.send_claim_ahead`),
and a completion is sent before RQ's end-of-job records, its answer read afterwards
(``after_job``: :func:`~foreman_worker.runner.settle`, with the lease held and no new job
taken until it is recorded). A worker killed between the two leaves its task running under
its lease: it is recovered and run again, as when killed during the handler.

**Delayed jobs** (retries after a backoff) sit in RQ's ``ScheduledJobRegistry``. Instead of
RQ's scheduler process (forked per worker, orphaned when the worker is SIGKILLed, and
holding a 61 s lock that stalls retries after such a kill), a scheduler thread in every
worker moves due jobs to their queue once a second, one worker per queue at a time under a
short lock.

A SIGKILLed worker's task is therefore back on a queue within lease + reap interval (about
12 s) and runs on a live worker, or fails as ``WorkerLost`` when out of retries.

**Redis outages** are waited out. RQ's loop quits on the first Redis error outside its
dequeue (a heartbeat, the bookkeeping around a job); every Redis step of this worker's loop
instead logs one line, waits with capped backoff until Redis answers PING
(:func:`wait_for_redis`) and carries on. The job in hand runs once: a Redis error before it
starts delays it, one after it only costs RQ bookkeeping (the outcome is already recorded
through the API, the source of truth). The background threads skip their turn while Redis
is away.

**Shutdown.** The first SIGTERM/SIGINT stops the taking of jobs; the running task may finish
within ``FOREMAN_WORKER_SHUTDOWN_GRACE`` (recorded in :mod:`foreman_worker.shutdown`, which
also bounds the API client's retries). When the grace runs out, or on a second signal, the
worker exits at once with one log line and :data:`~foreman_worker.shutdown.FORCED_EXIT_STATUS`,
leaving the task to be recovered.
"""

from __future__ import annotations

import logging
import math
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from functools import partial
from types import FrameType
from typing import Any, Final, TypeVar

import redis
from redis import Redis
from redis.client import Pipeline
from rq import Queue, SimpleWorker
from rq.exceptions import StopRequested
from rq.executions import Execution
from rq.job import Job, JobStatus
from rq.results import Result
from rq.scheduler import RQScheduler
from rq.timeouts import BaseDeathPenalty
from rq.utils import now
from rq.worker import WorkerStatus

from foreman_worker import rq_writes, shutdown
from foreman_worker.enqueue import RUN_TASK, text
from foreman_worker.presence import Presence
from foreman_worker.reconciler import Reconciler
from foreman_worker.settings import WorkerSettings
from foreman_worker.timeouts import HandlerStuckError

log = logging.getLogger("foreman_worker.worker")

PRESENCE_INTERVAL = 5.0
"""Seconds between two registrations of a worker with the API (its heartbeat there)."""
SCHEDULER_LOCK_PREFIX = "foreman:scheduler:"
SCHEDULER_INTERVAL = 1.0
SCHEDULER_LOCK_SECONDS = 10
WORKER_TTL = 20
"""RQ blocks on the queues for WORKER_TTL - 15 s at a time: short, so stop requests and
maintenance are handled promptly by an idle worker."""
MAINTENANCE_INTERVAL = 60
LOOP_CHECK_INTERVAL = 1.0
"""RQ's loop sends the worker's heartbeat three times per job and reads the suspension flag
once per job; here each goes to Redis at most once per this many seconds (the worker's key
lives WORKER_TTL + 60 s; ``rq suspend`` takes effect within this interval)."""
REDIS_WAIT_MAX = 1.0
"""Longest pause between two PINGs while the worker waits for Redis to come back."""
DUPLICATE_SIGNAL_SECONDS = 1.0
"""A second stop signal this soon after the first is the same request delivered twice (a
terminal's Ctrl+C reaching a process group and a process manager's SIGTERM), not a demand
to exit at once."""

REDIS_ERRORS: Final = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)
"""Redis cannot be reached (or is still loading its data): wait for it."""
REDIS_REFUSALS: Final = (redis.exceptions.AuthenticationError, redis.exceptions.AuthorizationError)
"""ConnectionErrors that waiting does not cure."""

T = TypeVar("T")


def wait_for_redis(
    connection: Redis,
    message: str,
    *,
    stop: Callable[[], bool] | None = None,
    max_wait: float = REDIS_WAIT_MAX,
) -> bool:
    """Block until ``connection`` answers PING again: log ``message`` once, then retry with
    backoff from 0.1 s up to ``max_wait``; log once more when Redis is back.

    Returns True once Redis answers, False as soon as ``stop()`` is true (checked before
    each PING). A refused password or permission is raised: waiting would not help.
    """
    log.warning("%s; waiting for it", message)
    started = time.monotonic()
    delay = min(0.1, max_wait)
    while True:
        if stop is not None and stop():
            return False
        try:
            connection.ping()
        except REDIS_REFUSALS:
            raise
        except REDIS_ERRORS:
            time.sleep(delay)
            delay = min(delay * 2, max_wait)
            continue
        log.info("Redis answers again (after %.1fs)", time.monotonic() - started)
        return True


def is_plain_foreman_job(job: Job) -> bool:
    """A job as :func:`~foreman_worker.enqueue.put_on_queue` makes them: it runs the
    Foreman runner, keeps no result, and has no success callback, repeats, group or rate
    limit (RQ features whose records or calls the short end-of-job path would not write)."""
    return (
        job.func_name == RUN_TASK
        and job.result_ttl == 0
        and job._success_callback_name is None
        and not job.webhooks
        and not job.repeats_left
        and not job.group_id
        and not job.has_rate_limit
    )


def queue_class_telling(
    before_pop: Callable[[], None], after_pop: Callable[[str], None]
) -> type[Queue]:
    """An RQ ``Queue`` class that calls ``before_pop()`` as a worker starts to wait for a
    job id (it may raise ``StopRequested``) and ``after_pop(job_id)`` as soon as it has
    taken one off a queue, before RQ reads the job (one more round trip to Redis)."""

    def told(popped: Any) -> Any:
        if popped is not None:
            after_pop(text(popped[1]))
        return popped

    class TellingQueue(Queue):
        @classmethod
        def lpop(
            cls, queue_keys: Sequence[str], timeout: int | None, connection: Redis | None = None
        ) -> Any:
            before_pop()
            return told(super().lpop(queue_keys, timeout, connection=connection))

        @classmethod
        def lmove(cls, connection: Redis, queue_key: str, timeout: int | None) -> Any:
            before_pop()
            return told(super().lmove(connection, queue_key, timeout))

    return TellingQueue


class NoDeathPenalty(BaseDeathPenalty):
    """RQ's job timeout, switched off: the runner enforces each handler's own timeout."""

    def setup_death_penalty(self) -> None:
        return None

    def cancel_death_penalty(self) -> None:
        return None


class ForemanWorker(SimpleWorker):
    """An RQ SimpleWorker that survives Redis outages, stops within a grace, and runs the
    reconciler and its registration with the API beside the jobs."""

    death_penalty_class = NoDeathPenalty
    max_connection_wait_time = REDIS_WAIT_MAX  # RQ's own wait inside its dequeue

    def __init__(
        self,
        queues: Sequence[str],
        *,
        connection: Redis,
        settings: WorkerSettings,
        reconciler: Reconciler | None = None,
        presence: Presence | None = None,
        before_job: Callable[[Job], None] | None = None,
        after_job: Callable[[], None] | None = None,
        on_pop: Callable[[str], None] | None = None,
        **kwargs: Any,
    ) -> None:
        kwargs["queue_class"] = queue_class_telling(self._before_pop, self._after_pop)
        kwargs.setdefault("worker_ttl", WORKER_TTL)
        kwargs.setdefault("maintenance_interval", MAINTENANCE_INTERVAL)
        heartbeat = max(1, int(settings.worker_heartbeat_interval))
        kwargs.setdefault("job_monitoring_interval", heartbeat)
        kwargs.setdefault("default_result_ttl", 0)
        kwargs.setdefault("log_job_description", False)
        super().__init__(list(queues), connection=connection, **kwargs)
        self.settings = settings
        self.reconciler = reconciler
        self.presence = presence
        self.before_job = before_job
        self.after_job = after_job
        self.on_pop = on_pop
        self._popped: str | None = None
        """The id of the job this worker took off a queue and has not finished yet."""
        self._active: tuple[Job, Any] | None = None
        self._active_lock = threading.Lock()
        self._stop_threads = threading.Event()
        self._threads: list[threading.Thread] = []
        self._scheduler = RQScheduler(self.queue_names(), connection=connection)
        self._registered = False
        self._beaten = self._suspension_checked = -math.inf
        self._watchdog: threading.Timer | None = None

    def _set_ip_address(self, connection: Redis) -> None:
        # RQ parses CLIENT INFO; some Redis-compatible servers (fakeredis' TCP server, used by
        # the demo when no Redis runs) answer in a shape redis-py cannot parse. The address is
        # informational only, so such a server (or a Redis that just went away) must not stop
        # the worker from starting.
        try:
            super()._set_ip_address(connection)
        except (ValueError, *REDIS_ERRORS):
            self.ip_address = "unknown"

    # ---- Redis outages -------------------------------------------------------------------

    def _with_redis(self, doing: str, step: Callable[[], T]) -> T:
        """Run one Redis step of the loop; on an outage wait for Redis and run it again.

        A stop request ends the wait with StopRequested, which ends RQ's loop.
        """
        while True:
            try:
                return step()
            except REDIS_REFUSALS:
                raise
            except REDIS_ERRORS as exc:
                message = f"worker {self.name}: Redis unavailable while {doing} ({exc})"
                if shutdown.requested() or not wait_for_redis(
                    self.connection, message, stop=shutdown.requested
                ):
                    log.info("worker %s: stopping while Redis is unavailable", self.name)
                    raise StopRequested from exc

    def _bookkeeping(self, doing: str, step: Callable[[], object], job: Job | None = None) -> None:
        """RQ's records after a job ran: waited for through a Redis outage, skipped when
        the worker is stopping or ``job`` is gone from Redis (restarted without its data).

        They never fail the job or stop the worker: the task's outcome is in the API.
        """
        try:
            if job is not None and not self._with_redis(doing, partial(self._known, job)):
                log.info(
                    "worker %s: job %s is gone from Redis (restarted or flushed); "
                    "RQ has nothing to record",
                    self.name,
                    job.id,
                )
                self.executions.clear()
                return
            self._with_redis(doing, step)
        except StopRequested:
            log.info("worker %s: RQ's records of the last job were not updated", self.name)
        except Exception:
            log.exception("worker %s: RQ's records of the last job were not updated", self.name)

    def _known(self, job: Job) -> bool:
        return bool(self.connection.hexists(job.key, "status"))

    def bootstrap(self, *args: Any, **kwargs: Any) -> None:
        self._with_redis("starting", partial(super().bootstrap, *args, **kwargs))

    def register_birth(self) -> None:
        if self._registered:  # an attempt cut short by Redis may have registered us already
            self.connection.delete(self.key)
        self._registered = True
        super().register_birth()  # type: ignore[no-untyped-call]

    def check_for_suspension(self, burst: bool) -> None:
        if time.monotonic() - self._suspension_checked < LOOP_CHECK_INTERVAL:
            return
        self._with_redis("checking for suspension", partial(super().check_for_suspension, burst))
        self._suspension_checked = time.monotonic()

    def set_state(self, state: str, pipeline: Any = None) -> None:
        if pipeline is None and state == self._state:  # e.g. idle after a job, idle again
            return
        super().set_state(state, pipeline)

    def run_maintenance_tasks(self) -> None:
        self._with_redis("cleaning registries", super().run_maintenance_tasks)

    def _before_pop(self) -> None:
        self._popped = None
        if self._stop_requested:  # asked to stop while a popped job turned out to be gone
            raise StopRequested

    def _after_pop(self, job_id: str) -> None:
        # From here the job is in hand: a stop request lets it run (its task may already
        # be claimed, by ``on_pop``) instead of abandoning it.
        self._popped = job_id
        if self.on_pop is not None:
            try:
                self.on_pop(job_id)
            except Exception:  # only a head start: the job itself does it again
                log.exception("worker %s: after taking job %s", self.name, job_id)

    def dequeue_job_and_maintain_ttl(
        self, timeout: int | None, max_idle_time: int | None = None
    ) -> tuple[Job, Queue] | None:
        dequeue = super().dequeue_job_and_maintain_ttl
        return self._with_redis("waiting for a job", partial(dequeue, timeout, max_idle_time))

    def heartbeat(self, timeout: int | None = None, pipeline: Any = None) -> None:
        if pipeline is not None:  # only queued on the pipeline: its owner sends it
            super().heartbeat(timeout, pipeline)
            return
        if timeout is None and time.monotonic() - self._beaten < LOOP_CHECK_INTERVAL:
            return
        self._with_redis("sending its heartbeat", partial(self._beat, timeout))

    def _beat(self, timeout: int | None) -> None:
        """RQ's heartbeat in one round trip (RQ sends its three commands one by one)."""
        with self.connection.pipeline(transaction=False) as pipeline:
            super().heartbeat(timeout, pipeline)
            pipeline.execute()
        self._beaten = time.monotonic()

    def perform_job(self, job: Job, queue: Queue, execution: Execution) -> bool:
        """RQ's ``perform_job``, with Redis outages waited out before and after the job.

        RQ's own turns a Redis error in the bookkeeping around the job into a failure of
        the job, or quits. Here the job runs exactly once; RQ's records wait for Redis
        (:meth:`_bookkeeping`).
        """
        job.started_at = now()  # RQ's start-of-job records were written by _prepare
        try:
            return_value = job.perform()
        except HandlerStuckError as exc:
            # Its thread cannot be stopped: only leaving the process ends it. The task's
            # lease then runs out and the reconciler hands it on.
            shutdown.exit_now(f"worker {self.name}: {exc}; exiting{self._leaving()}")
        except BaseException:
            failure = partial(self._finalize_failure, job, queue, execution, sys.exc_info())
            self._bookkeeping("recording a failed job", failure, job)
            return False
        if is_plain_foreman_job(job):
            finish = partial(self._finish_plain_job, job, queue, execution)
            self._bookkeeping("recording a finished job", finish)
            return True
        success = partial(self._finalize_success, job, queue, execution, return_value)
        self._bookkeeping("recording a finished job", success, job)
        return True

    def _finish_plain_job(self, job: Job, queue: Queue, execution: Execution) -> None:
        """RQ's end-of-job records of a Foreman job, in one atomic script and no reads.

        RQ's own success handling takes about a dozen round trips for a job with no result
        to keep: a heartbeat on the job it is about to delete, a WATCH on dependents, and
        reads of the job's status and executions (twice) to learn which keys to delete. A
        Foreman job has none of that to find out: no result (``result_ttl=0``), no
        dependents or callbacks on success, one execution (this one), which is in the
        started registry. The runner has already recorded the task's outcome through the
        API. Deleting keys that a Redis restart already removed does no harm, so this needs
        no check that the job still exists either.
        """
        job.ended_at = ended = now()
        took = ended - (job.started_at or ended)
        job._status = JobStatus.FINISHED

        def write(pipeline: Pipeline) -> None:
            self.set_state(WorkerStatus.IDLE, pipeline=pipeline)  # not a round trip of its own
            self.increment_successful_job_count(pipeline=pipeline)
            self.increment_total_working_time(took, pipeline)
            pipeline.delete(execution.key)
            job.started_job_registry.remove_execution(execution, pipeline=pipeline)
            pipeline.srem(execution.worker_executions_key, execution.composite_key)
            pipeline.delete(
                job.execution_registry.key,
                job.key,
                job.dependents_key,
                job.dependencies_key,
                Result.get_key(job.id),  # type: ignore[no-untyped-call]
            )

        rq_writes.write_atomically(self.connection, write)
        self.executions.pop(execution.id, None)
        self.log.debug(  # the runner logs what happened to the task
            "Worker %s: %s: job %s: RQ's records cleared after %.3fs",
            self.name,
            queue.name,
            job.id,
            took.total_seconds(),
        )

    def handle_exception(self, job: Job, *exc_info: Any) -> None:
        error = exc_info[1] if len(exc_info) > 1 else None
        if isinstance(error, REDIS_ERRORS):  # one line, not a traceback, for an outage
            log.warning(
                "worker %s: job %s stopped on a Redis error (%s); the database still holds "
                "its task, which will be put back on a queue",
                self.name,
                job.id,
                error,
            )
            return
        super().handle_exception(job, *exc_info)

    def _pubsub_exception_handler(self, exc: Exception, pubsub: Any, pubsub_thread: Any) -> None:
        if isinstance(exc, redis.exceptions.ConnectionError):  # the main loop logs outages
            log.debug("worker %s: pubsub: %s", self.name, exc)
            time.sleep(REDIS_WAIT_MAX)
            return
        super()._pubsub_exception_handler(exc, pubsub, pubsub_thread)

    # ---- shutdown ------------------------------------------------------------------------

    def request_stop(self, signum: int, frame: FrameType | None) -> None:
        """First SIGTERM/SIGINT: take no new job; let the running one finish within the grace."""
        grace = self.settings.worker_shutdown_grace
        shutdown.request(grace)
        self._shutdown_requested_date = now()
        signal.signal(signal.SIGINT, self.request_force_stop)
        signal.signal(signal.SIGTERM, self.request_force_stop)
        self._watchdog = threading.Timer(grace, self._grace_expired)
        self._watchdog.daemon = True
        self._watchdog.start()
        name = signal.Signals(signum).name
        self._stop_requested = True  # RQ's loop checks it between jobs
        if self.get_state() != WorkerStatus.BUSY and self._popped is None:
            log.info("worker %s: %s received; exiting", self.name, name)
            raise StopRequested
        log.info(
            "worker %s: %s received; finishing %s first (at most %gs), then exiting; "
            "signal again to exit at once",
            self.name,
            name,
            self._task_in_hand() or "the current job",
            grace,
        )

    def request_force_stop(self, signum: int, frame: FrameType | None) -> None:
        """A second signal: exit now, leaving the task in hand to be recovered."""
        first = self._shutdown_requested_date
        if first is not None and (now() - first).total_seconds() < DUPLICATE_SIGNAL_SECONDS:
            return
        name = signal.Signals(signum).name
        shutdown.exit_now(f"worker {self.name}: second {name}; exiting now{self._leaving()}")

    def _leave_if_grace_expired(self) -> None:
        """The job's outcome may have been given up on because the grace ran out: leave as
        the grace watchdog would (it may not have run yet), not through RQ's normal stop."""
        if shutdown.expired():
            self._grace_expired()

    def _grace_expired(self) -> None:
        grace = self.settings.worker_shutdown_grace
        shutdown.exit_now(
            f"worker {self.name}: shutdown grace of {grace:g}s ran out; exiting now"
            f"{self._leaving()}"
        )

    def _task_in_hand(self) -> str | None:
        with self._active_lock:
            active = self._active
        if active is None:
            return None
        job = active[0]
        return f"task {job.args[0]}" if job.args else f"job {job.id}"

    def _leaving(self) -> str:
        task = self._task_in_hand()
        return f", leaving {task} unfinished (it will be recovered)" if task else ""

    # ---- lease ---------------------------------------------------------------------------

    def get_heartbeat_ttl(self, job: Job, working_time: float = 0.0) -> int:
        """The lease of a running job: renewed by the heartbeat thread, short when not."""
        return math.ceil(self.settings.worker_lease)

    def execute_job(self, job: Job, queue: Queue) -> None:
        if self.before_job is not None:
            try:
                self.before_job(job)
            except Exception:  # only a head start: the job itself does it again
                log.exception("worker %s: before starting job %s", self.name, job.id)
        execution = self._with_redis("starting a job", partial(self._prepare, job))
        with self._active_lock:
            self._active = (job, execution)
        try:
            self.perform_job(job, queue, execution)
            self._leave_if_grace_expired()
            if self.after_job is not None:
                self.after_job()  # settles the completion: its retries stop at the grace
                self._leave_if_grace_expired()
        finally:
            self._popped = None
            with self._active_lock:
                self._active = None
        self._bookkeeping("finishing a job", partial(self.set_state, WorkerStatus.IDLE))

    def _prepare(self, job: Job) -> Execution:
        """RQ's two start-of-job transactions (``prepare_execution`` and
        ``prepare_job_execution``) as one: the same records, one round trip and one reply
        (:mod:`foreman_worker.rq_writes`)."""
        self.executions.clear()  # one job at a time: drop what an interrupted try left
        ttl = self.get_heartbeat_ttl(job)

        def write(pipeline: Pipeline) -> Execution:
            execution = Execution.create(job, ttl, pipeline=pipeline, worker_name=self.name)
            self.set_state(WorkerStatus.BUSY, pipeline=pipeline)
            self.heartbeat(ttl, pipeline=pipeline)
            job.heartbeat(now(), ttl, pipeline=pipeline)
            job.prepare_for_execution(self.name, pipeline=pipeline)
            pipeline.persist(job.key)
            if len(self.queues) == 1:  # RQ dequeues a single queue through its intermediate list
                pipeline.lrem(
                    Queue(job.origin, connection=self.connection).intermediate_queue_key, 1, job.id
                )
            return execution

        execution = rq_writes.write_atomically(self.connection, write)
        self.executions[execution.id] = execution
        return execution

    def renew_lease(self) -> None:
        """Renew the running job's lease (called by the heartbeat thread)."""
        with self._active_lock:
            active = self._active
        if active is not None:
            job, execution = active
            self.maintain_heartbeats(job, execution)

    # ---- delayed jobs --------------------------------------------------------------------

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
        """RQ's work loop, with the heartbeat, scheduler, reconciler and presence threads.

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
        loops: list[tuple[str, float, Callable[[], object]]] = [
            ("foreman-heartbeat", self.settings.worker_heartbeat_interval, self.renew_lease),
            ("foreman-scheduler", SCHEDULER_INTERVAL, self.schedule),
        ]
        if self.reconciler is not None:
            reconcile = self.reconciler.run_once
            loops.append(("foreman-reconciler", self.settings.worker_reap_interval, reconcile))
        if self.presence is not None:
            loops.append(("foreman-presence", PRESENCE_INTERVAL, self.presence.beat))
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
            except REDIS_ERRORS as exc:  # the main loop reports outages; skip this turn
                log.debug("worker %s: %s: %s", self.name, threading.current_thread().name, exc)
            except Exception:
                log.exception("worker %s: %s failed", self.name, threading.current_thread().name)

    def teardown(self) -> None:
        self.stop_threads()
        if self.presence is not None:
            self.presence.leave()
        try:
            super().teardown()  # type: ignore[no-untyped-call]
        except REDIS_ERRORS as exc:
            log.warning(
                "worker %s: Redis unavailable at exit, not deregistered (%s)", self.name, exc
            )
