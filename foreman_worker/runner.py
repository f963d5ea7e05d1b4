"""The RQ job function: claim a task, run its handler, record the outcome.

Per job (the job's only argument is the task ID)::

    clear the enqueue marker → claim (PATCH running + queueJobId) ─409─▶ skip
        → handler by type ─unknown─▶ failed
        → input model ─invalid─▶ failed
        → handler(ctx[, data]) under its timeout
        → completed + outputData ─non-JSON─▶ failed
        ╰─ exception ─▶ retrying + re-enqueue after backoff   (retries left, retryable)
                     ╰▶ failed                                 (otherwise)

Every API call uses the client's patient retry policy, so an API restart costs time, not
results. :func:`on_job_failure` is the RQ failure callback: RQ calls it for a job whose
worker stopped renewing its lease (an *abandoned* job), and it moves the task on —
``retrying`` and re-enqueued at once, or ``failed`` with ``type: "WorkerLost"``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import random
import signal
import threading
import time
import traceback as tb_module
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from types import FrameType, TracebackType
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, JsonValue, TypeAdapter, ValidationError
from redis import Redis
from rq import get_current_job
from rq.exceptions import AbandonedJobError
from rq.job import Job

from foreman_api.schemas import TERMINAL_TASK_STATUSES, Json, Task, TaskStatus
from foreman_worker.context import TaskContext
from foreman_worker.enqueue import default_connection, enqueue, marker_key
from foreman_worker.errors import Fail, Retry
from foreman_worker.registry import DEFAULT_QUEUE, Backoff, Registry, TaskHandler, registry
from foreman_worker.result import ApiErrorInfo, Result

if TYPE_CHECKING:
    from foreman_worker.client import ForemanClient

log = logging.getLogger("foreman_worker.runner")

TRACEBACK_LIMIT = 8 * 1024
"""errorData.traceback keeps the last 8 KiB."""
DEFER_DELAY = 30.0
"""Seconds before a job whose claim could not reach the API is tried again."""
FINAL_WRITE_DEADLINE = 600.0
"""How long the runner keeps trying to record an outcome (the handler already ran)."""
_JSON = TypeAdapter(Json)
_NON_RETRYABLE_API = frozenset({400, 401, 403, 404, 413})


class Outcome(StrEnum):
    """What one job did to its task."""

    COMPLETED = "completed"
    RETRYING = "retrying"
    FAILED = "failed"
    SKIPPED = "skipped"
    DEFERRED = "deferred"


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


class _AlarmTimeout(BaseException):
    """Raised by SIGALRM inside a sync handler; a BaseException so ``except Exception``
    in user code cannot swallow it."""


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


_runtime: Runtime | None = None
_runtime_lock = threading.Lock()


def configure(runtime: Runtime | None) -> None:
    """Install (or with None, forget) the process's runtime. ``foreman-worker`` calls this."""
    global _runtime
    _runtime = runtime


def runner_client() -> ForemanClient:
    """A client from the environment with the runner's patient retry policy."""
    from foreman_worker.client import ForemanClient, RetryPolicy
    from foreman_worker.settings import load_settings

    settings = load_settings()
    key = settings.api_key.get_secret_value() if settings.api_key else None
    return ForemanClient(
        settings.api_url, key, retry=RetryPolicy.patient(120.0, initial_wait=0.2, max_wait=5.0)
    )


def get_runtime() -> Runtime:
    """The installed runtime, or one built from the environment (e.g. under plain ``rq worker``)."""
    global _runtime
    with _runtime_lock:
        if _runtime is None:
            _runtime = Runtime(client=runner_client(), connection=default_connection())
        return _runtime


# ---- RQ entry points --------------------------------------------------------------------


def run_task(task_id: str) -> str:
    """The RQ job function (enqueued by import path). Returns the outcome's name."""
    job = get_current_job()
    job_id = job.id if job is not None else f"direct-{uuid.uuid4().hex}"
    origin = job.origin if job is not None else DEFAULT_QUEUE
    return Runner(get_runtime()).run(task_id, job_id=job_id, queue=origin).value


def on_job_failure(
    job: Job,
    connection: Redis,
    exc_type: type[BaseException] | None,
    exc_value: BaseException | None,
    traceback: TracebackType | None,
) -> None:
    """RQ failure callback. Only abandoned jobs (worker lost) need anything from us: the
    runner itself never lets a handler's exception reach RQ."""
    if not (exc_type is AbandonedJobError or isinstance(exc_value, AbandonedJobError)):
        return
    if not job.args:
        return
    task_id = str(job.args[0])
    log.warning("job %s for task %s was abandoned by its worker", job.id, task_id)
    Runner(get_runtime()).recover_lost(task_id, job_id=job.id, queue=job.origin)


# ---- the runner --------------------------------------------------------------------------


class Runner:
    """Runs one job at a time for one process; stateless between jobs."""

    def __init__(self, runtime: Runtime, *, rand: Callable[[], float] = random.random) -> None:
        self.client = runtime.client
        self.connection = runtime.connection
        self.registry = runtime.registry
        self.rand = rand

    def run(self, task_id: str, *, job_id: str, queue: str = DEFAULT_QUEUE) -> Outcome:
        # From here on the task may be enqueued again (a retry, a re-run after a crash).
        self.connection.delete(marker_key(task_id))
        claim = self.client.update_task(task_id, status=TaskStatus.RUNNING, queue_job_id=job_id)
        if not claim.success:
            return self._claim_failed(task_id, queue, claim)
        task = claim.unwrap()
        handler = self.registry.get(task.type)
        if handler is None:
            failure = Failure(
                "UnknownTaskType",
                f"no handler is registered for task type {task.type!r} on this worker",
                retryable=False,
            )
            return self._fail(task, failure, queue)
        prepared = self._prepare_input(handler, task)
        if isinstance(prepared, Failure):
            return self._fail(task, prepared, queue)
        ctx = TaskContext(task, client=self.client, connection=self.connection)
        started = time.monotonic()
        try:
            value = self._call(handler, ctx, prepared)
        except Retry as exc:
            failure = Failure.from_exception(exc)
            return self._fail(task, _replace_delay(failure, exc.delay), handler.queue)
        except Fail as exc:
            return self._fail(task, Failure.from_exception(exc, retryable=False), handler.queue)
        except (_AlarmTimeout, TimeoutError) as exc:
            message = str(exc) or f"task exceeded its timeout of {handler.timeout:g}s"
            failure = Failure.from_exception(exc)
            failure = Failure("TimeoutError", message, True, failure.traceback)
            return self._fail(task, failure, handler.queue)
        except Exception as exc:
            return self._fail(task, Failure.from_exception(exc), handler.queue)
        except SystemExit as exc:  # sys.exit() in a handler must not end the worker
            return self._fail(task, Failure.from_exception(exc), handler.queue)
        log.debug("task %s ran in %.3fs", task_id, time.monotonic() - started)
        output = _to_json(value)
        if isinstance(output, Failure):
            return self._fail(task, output, handler.queue)
        return self._complete(task, output, handler.queue)

    # ---- steps ---------------------------------------------------------------------------

    def _claim_failed(self, task_id: str, queue: str, claim: Result[Task]) -> Outcome:
        error = _error_of(claim)
        if error.status == 409:
            log.info("task %s skipped: %s", task_id, error.message)
            return Outcome.SKIPPED
        if error.status == 404:
            log.warning("task %s skipped: it does not exist (or not for this key)", task_id)
            return Outcome.SKIPPED
        if error.status in _NON_RETRYABLE_API:
            raise error.to_exception()
        log.error("claim of task %s failed (%s); trying again in %gs", task_id, error, DEFER_DELAY)
        enqueue(task_id, queue=queue, connection=self.connection, delay=DEFER_DELAY)
        return Outcome.DEFERRED

    def _prepare_input(self, handler: TaskHandler, task: Task) -> object:
        if handler.input_model is None:
            return task.input_data
        try:
            return handler.input_model.model_validate(task.input_data)
        except ValidationError as exc:
            fields = [
                (".".join(str(p) for p in err["loc"]) or None, err["msg"])
                for err in exc.errors(include_url=False)
            ]
            errors: list[JsonValue] = [{"field": f, "message": m} for f, m in fields]
            summary = "; ".join(f"{f or '(input)'}: {m}" for f, m in fields)
            return Failure(
                "InvalidInput",
                f"invalid input for {handler.input_model.__name__}: {summary}",
                retryable=False,
                extra={"errors": errors},
            )

    def _call(self, handler: TaskHandler, ctx: TaskContext, data: object) -> object:
        args: tuple[object, ...] = (ctx, data) if handler.takes_input else (ctx,)
        if handler.is_async:
            return asyncio.run(_with_timeout(handler.func(*args), handler.timeout))
        if handler.timeout is None:
            return handler.func(*args)
        if threading.current_thread() is threading.main_thread():
            with _alarm(handler.timeout):
                return handler.func(*args)
        # Not on the main thread (no SIGALRM): wait for a helper thread up to the timeout.
        pool = concurrent.futures.ThreadPoolExecutor(max_workers=1)
        try:
            return pool.submit(handler.func, *args).result(timeout=handler.timeout)
        except concurrent.futures.TimeoutError:
            raise TimeoutError(f"task exceeded its timeout of {handler.timeout:g}s") from None
        finally:
            pool.shutdown(wait=False)

    def _complete(self, task: Task, output: JsonValue, queue: str) -> Outcome:
        result = self._write(
            str(task.id), status=TaskStatus.COMPLETED, output_data=output
        )
        if result.success:
            return Outcome.COMPLETED
        error = _error_of(result)
        if error.status == 409:
            log.info("task %s finished but was not recorded: %s", task.id, error.message)
            return Outcome.SKIPPED
        if error.status in (400, 413):
            failure = Failure(
                "OutputRejected", f"the API refused the output: {error.message}", retryable=False
            )
            return self._fail(task, failure, queue)
        raise error.to_exception()

    def _fail(self, task: Task, failure: Failure, queue: str) -> Outcome:
        task_id = str(task.id)
        error_data = failure.error_data(task.retry_count + 1)
        handler = self.registry.get(task.type)
        if failure.retryable and task.retry_count < task.max_retries:
            delay = failure.delay
            if delay is None:
                backoff = handler.backoff if handler is not None else Backoff()
                delay = backoff_delay(backoff, task.retry_count + 1, self.rand)
            result = self._write(task_id, status=TaskStatus.RETRYING, error_data=error_data)
            if self._moved_to(result, task_id, TaskStatus.RETRYING):
                log.info(
                    "task %s attempt %d failed (%s: %s); retry in %.2fs",
                    task_id, task.retry_count + 1, failure.type, failure.message, delay,
                )
                enqueue(task_id, queue=queue, connection=self.connection, delay=delay)
                return Outcome.RETRYING
            return Outcome.SKIPPED
        result = self._write(task_id, status=TaskStatus.FAILED, error_data=error_data)
        log.info("task %s failed (%s: %s)", task_id, failure.type, failure.message)
        return Outcome.FAILED if self._moved_to(result, task_id, TaskStatus.FAILED) else (
            Outcome.SKIPPED
        )

    def recover_lost(self, task_id: str, *, job_id: str, queue: str) -> Outcome:
        """Move on a task whose job was abandoned (its worker died or hung)."""
        found = self.client.get_task(task_id)
        if not found.success or found.data is None:
            log.error(
                "cannot recover task %s of abandoned job %s: %s", task_id, job_id, found.error
            )
            return Outcome.SKIPPED
        task = found.data
        if task.status in TERMINAL_TASK_STATUSES:
            return Outcome.SKIPPED
        handler = self.registry.get(task.type)
        target = handler.queue if handler is not None else queue
        if task.status == TaskStatus.RUNNING:
            if task.queue_job_id != job_id:
                return Outcome.SKIPPED  # another job holds it now
            failure = Failure(
                "WorkerLost",
                f"the worker running job {job_id} stopped (killed, crashed or hung)",
                retryable=True,
                delay=0.0,
            )
            return self._fail(task, failure, target)
        # pending / queued / retrying: the job died before claiming or before re-enqueueing
        enqueue(task_id, queue=target, connection=self.connection)
        return Outcome.RETRYING

    # ---- helpers -------------------------------------------------------------------------

    def _write(self, task_id: str, **fields: Any) -> Result[Task]:
        """PATCH an outcome, and keep trying: the handler already ran, its result matters."""
        deadline = time.monotonic() + FINAL_WRITE_DEADLINE
        while True:
            result = self.client.update_task(task_id, **fields)
            error = result.error
            transient = error is not None and (error.status is None or error.status >= 500)
            if error is None or not (transient or error.status == 429):
                return result
            if time.monotonic() > deadline:
                return result
            log.warning("recording task %s failed (%s); still trying", task_id, error)
            time.sleep(1.0)

    def _moved_to(self, result: Result[Task], task_id: str, status: TaskStatus) -> bool:
        """Did the PATCH land? A 409 after a lost response may mean an earlier try did."""
        if result.success:
            return True
        error = _error_of(result)
        if error.status == 409:
            current = self.client.get_task(task_id)
            if current.success and current.data is not None and current.data.status == status:
                return True
            log.info("task %s not moved to %s: %s", task_id, status, error.message)
            return False
        log.error("task %s could not be moved to %s: %s", task_id, status, error)
        raise error.to_exception()


def _error_of(result: Result[Any]) -> ApiErrorInfo:
    if result.error is None:
        raise RuntimeError("expected a failed Result")
    return result.error


def _replace_delay(failure: Failure, delay: float | None) -> Failure:
    return Failure(
        failure.type, failure.message, failure.retryable, failure.traceback, delay, failure.extra
    )


def _to_json(value: object) -> JsonValue | Failure:
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json")
    try:
        return _JSON.validate_python(value)
    except ValidationError as exc:
        return Failure(
            "NonJsonOutput",
            f"the handler returned {type(value).__name__}, which is not a JSON value: "
            f"{exc.errors(include_url=False)[0]['msg']}",
            retryable=False,
        )


async def _with_timeout(coro: Any, timeout: float | None) -> object:
    if timeout is None:
        return await coro
    try:
        return await asyncio.wait_for(coro, timeout)
    except TimeoutError:
        raise TimeoutError(f"task exceeded its timeout of {timeout:g}s") from None


@contextlib.contextmanager
def _alarm(seconds: float) -> Iterator[None]:
    def expire(signum: int, frame: FrameType | None) -> None:
        raise _AlarmTimeout(f"task exceeded its timeout of {seconds:g}s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)

