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
import threading
import time
import traceback as tb_module
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from functools import partial
from types import TracebackType
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, JsonValue, TypeAdapter, ValidationError
from pydantic_core import PydanticSerializationError
from redis import Redis, RedisError
from rq import get_current_job
from rq.job import Job

from foreman_api.schemas import Json, Task, TaskStatus
from foreman_worker import _calls, shutdown, validation
from foreman_worker._retry import RetryPolicy
from foreman_worker.context import TaskContext
from foreman_worker.enqueue import (
    RUN_TASK,
    default_connection,
    default_namespace,
    enqueue,
    put_on_queue,
)
from foreman_worker.errors import Fail, ForemanError, Retry
from foreman_worker.lease import LeaseKeeper
from foreman_worker.queues import Namespace
from foreman_worker.registry import Backoff, Registry, TaskHandler, registry
from foreman_worker.result import ApiErrorInfo, Result
from foreman_worker.settings import load_settings
from foreman_worker.timeouts import call_with_timeout

if TYPE_CHECKING:
    from foreman_worker.client import ForemanClient

log = logging.getLogger("foreman_worker.runner")

TRACEBACK_LIMIT = 8 * 1024
"""errorData.traceback keeps the last 8 KiB."""
DEFER_DELAY = 30.0
"""Seconds before a job whose claim could not reach the API is tried again."""
FINAL_WRITE_DEADLINE = 600.0
"""How long the runner keeps trying to record an outcome (the handler already ran)."""
NOT_DUE_MARGIN = 0.05
"""Seconds added to a not-yet-due retry's wait, so the next claim does not come early."""
RETRY_NOT_DUE = "retry_not_due"
_JSON = TypeAdapter(Json)
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


@dataclass(frozen=True, slots=True)
class Failure:
    """Why an attempt failed, and whether another attempt may help."""

    type: str
    message: str
    retryable: bool
    traceback: str | None = None
    delay: float | None = None
    extra: dict[str, JsonValue] = field(default_factory=dict)

    @classmethod
    def from_exception(cls, exc: BaseException, *, retryable: bool = True) -> Failure:
        text = "".join(tb_module.format_exception(exc))
        return cls(
            type=type(exc).__name__,
            message=str(exc) or type(exc).__name__,
            retryable=retryable,
            traceback=text[-TRACEBACK_LIMIT:],
        )

    def error_data(self, attempt: int) -> dict[str, JsonValue]:
        return {
            "type": self.type,
            "message": self.message,
            "traceback": self.traceback,
            "attempt": attempt,
            **self.extra,
        }


def backoff_delay(backoff: Backoff, retry_number: int, rand: Callable[[], float]) -> float:
    """Wait before retry ``retry_number``: uniform in [ceiling/2, ceiling] (jitter)."""
    ceiling = backoff.ceiling(retry_number)
    return ceiling / 2 + rand() * ceiling / 2


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


def configure(runtime: Runtime | None) -> None:
    """Install (or with None, forget) the process's runtime. ``foreman-worker`` calls this."""
    global _runtime
    _runtime = runtime


def runner_client(*, retry: RetryPolicy | None = None, timeout: float = 10.0) -> ForemanClient:
    """A client from the environment, by default with the runner's patient retry policy."""
    from foreman_worker.client import ForemanClient

    settings = load_settings()
    key = settings.api_key.get_secret_value() if settings.api_key else None
    patient = RetryPolicy.patient(120.0, initial_wait=0.2, max_wait=5.0)
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


# ---- RQ entry points --------------------------------------------------------------------


def run_task(task_id: str) -> str:
    """The RQ job function (enqueued by import path). Returns the outcome's name."""
    job = get_current_job()
    job_id = job.id if job is not None else f"direct-{uuid.uuid4().hex}"
    origin = job.origin if job is not None else ""
    return Runner(get_runtime()).run(task_id, job_id=job_id, rq_queue=origin).value


def send_claim_ahead(job: Job) -> None:
    """Send the claim of a Foreman job before RQ's start-of-job records (see
    :meth:`Runner.send_claim_ahead`); other jobs are left alone."""
    if job.func_name == RUN_TASK and len(job.args) == 1:
        Runner(get_runtime()).send_claim_ahead(str(job.args[0]), job_id=job.id)


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
        prepared = self._prepare_input(handler, task)
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
            return self._fail(attempt, _replace_delay(failure, exc.delay), handler)
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
        output = _output(handler, value)
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

    def _prepare_input(self, handler: TaskHandler, task: Task) -> object:
        """The handler's ``data``, or the ``InvalidInput`` failure (never retried: the same
        input fails the same way every time)."""
        try:
            return handler.types.prepare_input(task.input_data)
        except ValidationError as exc:
            check = handler.types.input
            if check is None:  # only a check raises ValidationError
                raise
            what = f"inputData is not a valid {check.type_name} (parameter {check.name!r})"
            return _invalid("InvalidInput", what, exc)

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
            log.info(
                "task %s attempt %d failed (%s: %s); retry in %.2fs",
                task.id,
                task.retry_count + 1,
                failure.type,
                failure.message,
                delay,
            )
            self._enqueue_retry(result.unwrap(), delay, attempt.job_id)
            return Outcome.RETRYING
        result = self._write(attempt, status=TaskStatus.FAILED, error_data=error_data)
        if not self._moved(attempt, result):
            return Outcome.DISCARDED
        log.info("task %s failed (%s: %s)", task.id, failure.type, failure.message)
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
        """PATCH an outcome, fenced by the job id, and keep trying: the handler already ran,
        its result matters. A stop whose grace runs out ends the trying (the lease then
        brings the task back)."""
        deadline = time.monotonic() + FINAL_WRITE_DEADLINE
        task_id = str(attempt.task.id)
        while True:
            result = self.client.update_task(task_id, queue_job_id=attempt.job_id, **fields)
            error = result.error
            transient = error is not None and (error.status is None or error.status >= 500)
            if error is None or not (transient or error.status == 429):
                return result
            if time.monotonic() > deadline or shutdown.expired():
                return result
            log.warning("recording task %s failed (%s); still trying", task_id, error)
            time.sleep(1.0)

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
        log.warning(
            "task %s: result of job %s discarded (%s: %s)",
            attempt.task.id,
            attempt.job_id,
            error.code,
            error.message,
        )
        return Outcome.DISCARDED


@dataclass(slots=True)
class Recording:
    """A completion sent to the API, its answer not read yet, and the lease it holds."""

    task_id: str
    finish: Callable[[], Outcome]
    lease: contextlib.ExitStack | None = None

    def settle(self) -> Outcome:
        with self.lease or contextlib.nullcontext():
            return self.finish()


@dataclass(frozen=True, slots=True)
class Attempt:
    """One claimed run of a task: the task as claimed and the job that holds the claim."""

    task: Task
    job_id: str


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


def _replace_delay(failure: Failure, delay: float | None) -> Failure:
    return Failure(
        failure.type, failure.message, failure.retryable, failure.traceback, delay, failure.extra
    )


def _invalid(type_: str, what: str, exc: ValidationError) -> Failure:
    """A failure naming each field that did not validate, in the message and as a list."""
    errors: list[JsonValue] = [
        {"field": error["field"], "message": error["message"]}
        for error in validation.field_errors(exc)
    ]
    return Failure(
        type_, f"{what}: {validation.summary(exc)}", retryable=False, extra={"errors": errors}
    )


def _output(handler: TaskHandler, value: object) -> JsonValue | Failure:
    """The output to record: checked against the return annotation, then as JSON.

    A mismatch is ``InvalidOutput`` and not retried: the handler already ran (its side
    effects are done) and returns the same kind of value for the same input.
    """
    check = handler.types.output
    if check is not None:
        try:
            value = check.to_json(value)
        except ValidationError as exc:
            what = f"the handler returned a value that is not a valid {check.type_name}"
            return _invalid("InvalidOutput", what, exc)
        except PydanticSerializationError as exc:
            return _non_json(value, str(exc))
    return _to_json(value)


def _to_json(value: object) -> JsonValue | Failure:
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json")
    try:
        return _JSON.validate_python(value)
    except ValidationError as exc:
        return _non_json(value, exc.errors(include_url=False)[0]["msg"])


def _non_json(value: object, reason: str) -> Failure:
    return Failure(
        "NonJsonOutput",
        f"the handler returned {type(value).__name__}, which is not a JSON value: {reason}",
        retryable=False,
    )
