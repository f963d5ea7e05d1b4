"""The RQ job function: claim a task, run its handler, record the outcome.

Per job (the job's only argument is the task ID)::

    release the enqueue marker → claim (PATCH running + queueJobId + leaseSeconds)
        ─409─▶ skip (finished, cancelled, held by another job; not due: scheduled again)
        → handler by type ─unknown─▶ failed
        → inputData validated into data's annotation ─invalid─▶ failed (InvalidInput)
        → handler(ctx[, data]) under its timeout, its lease renewed meanwhile
        → return value validated against the return annotation ─invalid─▶ failed (InvalidOutput)
        → completed + outputData ─non-JSON─▶ failed
        ╰─ exception ─▶ retrying (retryAt = now + backoff), queued again for then
                     ╰▶ failed                                 (no retries left, or final)

Every write after the claim carries the job id: the API records it only while this job
still holds the claim (fencing). A worker that was paused past its lease, or whose task was
cancelled, finds its write refused, discards the result and says so in one log line.
Every API call uses the client's patient retry policy, so an API restart costs time, not
results. Lost workers are not handled here: their leases expire in the database and the
reconciler (:mod:`foreman_worker.reconciler`) moves their tasks on.
"""

from __future__ import annotations

import contextlib
import logging
import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from functools import partial
from types import TracebackType
from typing import TYPE_CHECKING, Any

from pydantic import JsonValue
from redis import Redis, RedisError
from rq import get_current_job
from rq.job import Job

from foreman_api.schemas import Task, TaskStatus
from foreman_worker import _calls
from foreman_worker.context import TaskContext
from foreman_worker.enqueue import (
    RUN_TASK,
    enqueue,
    put_on_queue,
    task_of_job,
)
from foreman_worker.errors import Fail, ForemanError, Retry
from foreman_worker.failures import Failure, backoff_delay
from foreman_worker.handler_io import input_of, output_of
from foreman_worker.registry import Backoff, TaskHandler
from foreman_worker.result import ApiErrorInfo, Result
from foreman_worker.runtime import (
    Recording,
    Runtime,
    get_runtime,
)
from foreman_worker.timeouts import call_with_timeout

if TYPE_CHECKING:
    pass

log = logging.getLogger("foreman_worker.runner")

DEFER_DELAY = 30.0
"""Seconds before a job whose claim could not reach the API is tried again."""
NOT_DUE_MARGIN = 0.05
"""Seconds added to a not-yet-due retry's wait, so the next claim does not come early."""
RETRY_NOT_DUE = "retry_not_due"
_NON_RETRYABLE_API = frozenset({400, 401, 403, 404, 413})


class Outcome(StrEnum):
    """What one job did to its task."""

    COMPLETED = "completed"
    RETRYING = "retrying"
    FAILED = "failed"
    SKIPPED = "skipped"
    DISCARDED = "discarded"
    """The attempt ran but had lost its claim: its result was refused and dropped."""
    DEFERRED = "deferred"
    RECORDING = "recording"
    """The completion was sent; its answer is read after RQ's records (:func:`settle`)."""


# ---- RQ entry points --------------------------------------------------------------------


def run_task(task_id: str) -> str:
    """The RQ job function (enqueued by import path). Returns the outcome's name."""
    job = get_current_job()
    job_id = job.id if job is not None else f"direct-{uuid.uuid4().hex}"
    origin = job.origin if job is not None else ""
    return Runner(get_runtime()).run(task_id, job_id=job_id, rq_queue=origin).value


def send_claim_ahead(job: Job) -> None:
    """Send the claim of a Foreman job before RQ's start-of-job records (see
    :meth:`Runner.send_claim_ahead`; a claim already sent at the pop is not sent again);
    other jobs are left alone."""
    if job.func_name == RUN_TASK and len(job.args) == 1:
        Runner(get_runtime()).send_claim_ahead(str(job.args[0]), job_id=job.id)


def claim_popped_job(job_id: str) -> None:
    """Send the claim of the task a job names as soon as the worker has popped the job's id,
    before RQ reads the job (see :meth:`Runner.send_claim_ahead`); job ids not made by
    :func:`~foreman_worker.enqueue.new_job_id` are claimed by :func:`send_claim_ahead`."""
    task_id = task_of_job(job_id)
    if task_id is not None:
        Runner(get_runtime()).send_claim_ahead(task_id, job_id=job_id)


def settle() -> None:
    """Finish recording the last job's completion, sent before RQ's end-of-job records.

    The worker calls this after each job; until it returns, the lease is still held and
    the worker takes no other job. Never raises: a completion the API refused for good is
    logged, as a job function raising it would have been.
    """
    runtime = get_runtime()
    recording, runtime.unsettled = runtime.unsettled, None
    if recording is None:
        return
    try:
        recording.settle()
    except ForemanError as exc:  # e.g. the API stayed away past the shutdown grace
        log.error(
            "task %s: its completion was not recorded (%s); the lease will bring it back",
            recording.task_id,
            exc,
        )
    except Exception:
        log.exception("task %s: recording its completion failed", recording.task_id)


def on_job_failure(
    job: Job,
    connection: Redis,
    exc_type: type[BaseException] | None,
    exc_value: BaseException | None,
    traceback: TracebackType | None,
) -> None:
    """RQ failure callback. The runner never lets a handler's exception reach RQ, so a
    failed job is one RQ gave up on (abandoned, stuck): the task's lease in the database
    and the reconciler take care of the task, and there is nothing to do here."""
    if job.args:
        log.info("RQ gave up on job %s of task %s (%s)", job.id, job.args[0], exc_type)


# ---- the runner --------------------------------------------------------------------------


class Runner:
    """Runs one job at a time for one process; stateless between jobs."""

    def __init__(self, runtime: Runtime, *, rand: Callable[[], float] = random.random) -> None:
        self.runtime = runtime
        self.client = runtime.client
        self.connection = runtime.connection
        self.registry = runtime.registry
        self.namespace = runtime.namespace
        self.rand = rand

    def run(self, task_id: str, *, job_id: str, rq_queue: str = "") -> Outcome:
        # The enqueue marker is left to expire: a job that has started no longer counts as
        # waiting, so the task can be queued again (a retry, a re-run) without a round trip.
        claim = self.client.update_task(task_id, **self._claim(job_id))
        if not claim.success:
            return self._claim_failed(task_id, rq_queue, claim, job_id)
        attempt = Attempt(claim.unwrap(), job_id)
        # The lease is kept until the outcome is recorded: an outcome held back by an API
        # outage still belongs to this attempt when the API returns.
        with contextlib.ExitStack() as lease:
            lease.enter_context(self.runtime.lease.hold(task_id, job_id))
            outcome = self._attempt(attempt)
            unsettled = self.runtime.unsettled
            if outcome is Outcome.RECORDING and unsettled is not None:
                unsettled.lease = lease.pop_all()  # let go of by :func:`settle`
            return outcome

    def send_claim_ahead(self, task_id: str, *, job_id: str) -> None:
        """Send the claim of ``task_id`` now; :meth:`run` of that job reads its answer.

        The worker calls this before RQ's own start-of-job records, so the API works on the
        claim while Redis does. A claim that lands for a job that then never runs is like a
        worker dying after its claim: the lease runs out and the task is recovered.
        """
        self.client._send_ahead(_calls.update_task, task_id, **self._claim(job_id))

    def _claim(self, job_id: str) -> dict[str, Any]:
        claim: dict[str, Any] = {
            "status": TaskStatus.RUNNING,
            "queue_job_id": job_id,
            "lease_seconds": self.runtime.lease_seconds,
        }
        if self.runtime.worker_id is not None:
            claim["worker_id"] = self.runtime.worker_id
        return claim

    def _attempt(self, attempt: Attempt) -> Outcome:
        task = attempt.task
        handler = self.registry.get(task.type)
        if handler is None:
            failure = Failure(
                "UnknownTaskType",
                f"no handler is registered for task type {task.type!r} on this worker",
                retryable=False,
            )
            return self._fail(attempt, failure)
        prepared = input_of(handler, task)
        if isinstance(prepared, Failure):
            return self._fail(attempt, prepared)
        ctx = TaskContext(
            task, client=self.client, connection=self.connection, namespace=self.namespace
        )
        started = time.monotonic()
        try:
            value = self._call(handler, ctx, prepared)
        except Retry as exc:
            failure = Failure.from_exception(exc)
            return self._fail(attempt, failure.with_delay(exc.delay), handler)
        except Fail as exc:
            return self._fail(attempt, Failure.from_exception(exc, retryable=False), handler)
        except TimeoutError as exc:
            message = str(exc) or f"task exceeded its timeout of {handler.timeout:g}s"
            failure = Failure.from_exception(exc)
            failure = Failure("TimeoutError", message, True, failure.traceback)
            return self._fail(attempt, failure, handler)
        except Exception as exc:
            return self._fail(attempt, Failure.from_exception(exc), handler)
        except SystemExit as exc:  # sys.exit() in a handler must not end the worker
            return self._fail(attempt, Failure.from_exception(exc), handler)
        log.debug("task %s ran in %.3fs", task.id, time.monotonic() - started)
        output = output_of(handler, value)
        if isinstance(output, Failure):
            return self._fail(attempt, output, handler)
        return self._complete(attempt, output, handler)

    # ---- steps ---------------------------------------------------------------------------

    def _claim_failed(
        self, task_id: str, rq_queue: str, claim: Result[Task], job_id: str
    ) -> Outcome:
        error = _error_of(claim)
        if error.code == RETRY_NOT_DUE and rq_queue:
            delay = _seconds_until(error) + NOT_DUE_MARGIN
            log.info("task %s is not due for %.2fs yet; scheduled for then", task_id, delay)
            self._requeue(task_id, rq_queue, delay=delay, job_id=job_id)
            return Outcome.DEFERRED
        if error.status == 409:
            log.info("task %s skipped: %s", task_id, error.message)
            return Outcome.SKIPPED
        if error.status == 404:
            log.warning("task %s skipped: it does not exist (or not for this key)", task_id)
            return Outcome.SKIPPED
        if error.status in _NON_RETRYABLE_API:
            raise error.to_exception()
        log.error("claim of task %s failed (%s); trying again in %gs", task_id, error, DEFER_DELAY)
        if rq_queue:
            self._requeue(task_id, rq_queue, delay=DEFER_DELAY, job_id=job_id)
        return Outcome.DEFERRED

    def _requeue(self, task_id: str, rq_queue: str, *, delay: float, job_id: str) -> None:
        put_on_queue(
            self.connection,
            task_id=task_id,
            rq_queue=rq_queue,
            marker=self.namespace.marker(task_id),
            delay=delay,
            at_front=True,
            running_job=job_id,
        )

    def _call(self, handler: TaskHandler, ctx: TaskContext, data: object) -> object:
        """The handler under its timeout (:mod:`foreman_worker.timeouts`): when this returns
        or raises ``TimeoutError``, none of the handler's code is running any more."""
        args: tuple[object, ...] = (ctx, data) if handler.takes_input else (ctx,)
        if not handler.is_async:
            return call_with_timeout(handler.func, args, timeout=handler.timeout, is_async=False)

        async def attempt() -> object:
            try:
                return await handler.func(*args)
            finally:
                await ctx.aclose()  # the async client of the awaitable helpers, if made

        return call_with_timeout(attempt, (), timeout=handler.timeout, is_async=True)

    def _complete(self, attempt: Attempt, output: JsonValue, handler: TaskHandler) -> Outcome:
        if self.runtime.settle_after_job:
            # RQ's end-of-job records go to Redis while the API records the completion.
            # A worker killed in between leaves the task running under its lease: it is
            # recovered and run again, as if killed during the handler.
            task_id = str(attempt.task.id)
            self.client._send_ahead(
                _calls.update_task,
                task_id,
                queue_job_id=attempt.job_id,
                status=TaskStatus.COMPLETED,
                output_data=output,
            )
            finish = partial(self._record_completion, attempt, output, handler)
            self.runtime.unsettled = Recording(task_id, finish)
            return Outcome.RECORDING
        return self._record_completion(attempt, output, handler)

    def _record_completion(
        self, attempt: Attempt, output: JsonValue, handler: TaskHandler
    ) -> Outcome:
        result = self._write(attempt, status=TaskStatus.COMPLETED, output_data=output)
        if result.success:
            attempt.report("completed")
            return Outcome.COMPLETED
        error = _error_of(result)
        if error.status == 409:
            return self._refused(attempt, error)
        if error.status in (400, 413):
            failure = Failure(
                "OutputRejected", f"the API refused the output: {error.message}", retryable=False
            )
            return self._fail(attempt, failure, handler)
        raise error.to_exception()

    def _fail(
        self, attempt: Attempt, failure: Failure, handler: TaskHandler | None = None
    ) -> Outcome:
        task = attempt.task
        error_data = failure.error_data(task.retry_count + 1)
        if failure.retryable and task.retry_count < task.max_retries:
            delay = failure.delay
            if delay is None:
                backoff = handler.backoff if handler is not None else Backoff()
                delay = backoff_delay(backoff, task.retry_count + 1, self.rand)
            result = self._write(
                attempt, status=TaskStatus.RETRYING, error_data=error_data, retry_delay=delay
            )
            if not self._moved(attempt, result):
                return Outcome.DISCARDED
            attempt.report(
                "failed",
                f"{failure.type}: {failure.message}; retry {task.retry_count + 1} of "
                f"{task.max_retries} in {delay:.2f}s",
            )
            self._enqueue_retry(result.unwrap(), delay, attempt.job_id)
            return Outcome.RETRYING
        result = self._write(attempt, status=TaskStatus.FAILED, error_data=error_data)
        if not self._moved(attempt, result):
            return Outcome.DISCARDED
        why = "no retries left" if failure.retryable else "not retried"
        attempt.report("failed", f"{failure.type}: {failure.message}; {why}")
        return Outcome.FAILED

    def _enqueue_retry(self, task: Task, delay: float, job_id: str) -> None:
        """Schedule the retry at the front of its queue; if Redis is down, the reconciler
        queues it once it is due (the database says when)."""
        try:
            enqueue(
                task,
                connection=self.connection,
                namespace=self.namespace,
                delay=delay,
                at_front=True,
                running_job=job_id,
            )
        except RedisError as exc:
            log.warning("task %s: retry not scheduled (%s); the reconciler will", task.id, exc)

    # ---- helpers -------------------------------------------------------------------------

    def _write(self, attempt: Attempt, **fields: Any) -> Result[Task]:
        """PATCH an outcome, fenced by the job id. The client retries it through an API
        outage for :data:`~foreman_worker.runtime.PATIENCE` (the handler already ran, its
        result matters), or until a stopping worker's grace runs out; then the lease
        brings the task back."""
        return self.client.update_task(str(attempt.task.id), queue_job_id=attempt.job_id, **fields)

    def _moved(self, attempt: Attempt, result: Result[Task]) -> bool:
        """Did the PATCH land? A 409 means this attempt no longer owns the task."""
        if result.success:
            return True
        error = _error_of(result)
        if error.status == 409:
            self._refused(attempt, error)
            return False
        log.error("task %s could not be updated: %s", attempt.task.id, error)
        raise error.to_exception()

    def _refused(self, attempt: Attempt, error: ApiErrorInfo) -> Outcome:
        attempt.report(
            "ran",
            f"job {attempt.job_id} no longer holds the task, its result is discarded "
            f"({error.code}: {error.message})",
            logging.WARNING,
        )
        return Outcome.DISCARDED


@dataclass(frozen=True, slots=True)
class Attempt:
    """One claimed run of a task: the task as claimed and the job that holds the claim."""

    task: Task
    job_id: str
    claimed: float = field(default_factory=time.monotonic)

    def report(self, outcome: str, detail: str = "", level: int = logging.INFO) -> None:
        """One log line of the attempt's end: task, type, attempt number, outcome, time
        since the claim, and ``detail``."""
        task = self.task
        log.log(
            level,
            "task %s (%s) attempt %d %s after %.3fs%s",
            task.id,
            task.type,
            task.attempt_count,
            outcome,
            time.monotonic() - self.claimed,
            f": {detail}" if detail else "",
        )


def _seconds_until(error: ApiErrorInfo) -> float:
    """Seconds until the ``retryAt`` a ``409 retry_not_due`` names (0 if unreadable)."""
    for detail in error.details:
        if detail.field == "retryAt":
            with contextlib.suppress(ValueError):
                due = datetime.fromisoformat(detail.message.replace("Z", "+00:00"))
                return max((due - datetime.now(UTC)).total_seconds(), 0.0)
    return 0.0


def _error_of(result: Result[Any]) -> ApiErrorInfo:
    if result.error is None:
        raise RuntimeError("expected a failed Result")
    return result.error
