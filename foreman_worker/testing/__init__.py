"""Test your handlers in process: the real API, the real worker, fakeredis, a clock you move.

    from foreman_worker.testing import Foreman

    def test_order(foreman: Foreman) -> None:       # or: with Foreman() as foreman:
        task = foreman.submit("validate-order", {"order_id": "o-1", "amount_cents": 10})
        foreman.run_until_idle()
        assert foreman.task(task).status == "completed"

:class:`Foreman` starts the API application (``create_app``) on a throwaway SQLite file,
reached through an in-process transport (no socket, no server), and a fakeredis. Tasks go
through the SDK's own ``submit``; :meth:`Foreman.run_until_idle` runs them with
``ForemanWorker`` in burst mode, so the runner claims, runs, retries and records each one
exactly as ``foreman-worker`` does, children and retries included. Nothing here copies the
state machine or the runner: the harness only decides when to run jobs and what time it is.

**Time.** The API reads its time from :attr:`Foreman.clock`: the system clock plus an
offset that only the harness moves. A retry waits on the scheduled-job registry until the
task's ``retryAt``; when nothing else is left to run, ``run_until_idle`` moves the clock to
the next ``retryAt`` (time skipping) instead of waiting, so a 30 s backoff costs no wall
time. With ``skip_time=False`` it stops there instead, and :meth:`Foreman.advance` moves
the clock. Handler timeouts are enforced by the runner's real mechanism, in real time; to
test one without waiting for it, shorten it: ``foreman.timeouts["fetch"] = 0.05``.

The pytest fixture ``foreman`` (:mod:`foreman_worker.testing.pytest_plugin`, registered
as a pytest plugin when Foreman is installed) gives each test a fresh harness.

The harness needs the API's server stack (FastAPI, SQLAlchemy) and fakeredis; they are
imported when a :class:`Foreman` starts, not when this module is imported.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import signal
import tempfile
import uuid
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

import httpx
from pydantic import JsonValue

from foreman_api.schemas import Attempt, Run, RunData, Task, TaskStatus
from foreman_worker.client import ForemanClient
from foreman_worker.enqueue import submit as sdk_submit
from foreman_worker.queues import Namespace
from foreman_worker.registry import Registry
from foreman_worker.registry import registry as default_registry

if TYPE_CHECKING:
    from anyio.from_thread import BlockingPortal
    from redis import Redis

__all__ = ["Clock", "Foreman", "InProcessClient", "NotIdleError"]

TaskRef = Task | uuid.UUID | str
RunRef = Run | uuid.UUID | str
WORKER_ID = "foreman-testing"
"""The name the harness's worker registers with the API and claims tasks under."""
BASE_URL = "http://foreman.test"


class NotIdleError(AssertionError):
    """:meth:`Foreman.run_until_idle` ran its ``max_jobs`` and work was still left."""


class Clock:
    """The harness's time: the system clock plus an offset that only :meth:`advance` moves.

    Time keeps flowing (timestamps and durations stay real); advancing jumps ahead.
    """

    def __init__(self) -> None:
        self._offset = timedelta()

    def now(self) -> datetime:
        """The current time, aware UTC."""
        return datetime.now(UTC) + self._offset

    @property
    def offset(self) -> timedelta:
        """How far the clock has been moved ahead of the system clock."""
        return self._offset

    def advance(self, seconds: float) -> None:
        """Move the clock ``seconds`` ahead (never back)."""
        if seconds < 0:
            raise ValueError("the clock only moves forward")
        self._offset += timedelta(seconds=seconds)

    def advance_to(self, moment: datetime) -> None:
        """Move the clock to ``moment`` if that is ahead of now."""
        self.advance(max((moment - self.now()).total_seconds(), 0.0))


class _ApiTime:
    """The API's time while harnesses are open: one clock, installed when the first
    harness opens and put away when the last one closes (in whatever order)."""

    clock: Clock | None = None
    users = 0
    installed = contextlib.ExitStack()

    @classmethod
    @contextlib.contextmanager
    def shared(cls) -> Iterator[Clock]:
        from foreman_api.clock import reading

        if cls.clock is None:
            cls.clock = Clock()
            cls.installed.enter_context(reading(cls.clock.now))
        clock = cls.clock
        cls.users += 1
        try:
            yield clock
        finally:
            cls.users -= 1
            if cls.users == 0:
                cls.installed.close()
                cls.clock = None


class Foreman:
    """The API and a worker in this process; submit tasks, run them, inspect the results.

    ``registry``: the handlers to run (default: those ``@task`` registered). ``org``: the
    organisation of the harness's API key. ``skip_time``: whether :meth:`run_until_idle`
    moves the clock to the next due retry when nothing else is left (default True).
    Use it as a context manager, or call :meth:`close`. The API's time is process-wide:
    harnesses open at the same time share one :attr:`clock`.
    """

    def __init__(
        self,
        registry: Registry | None = None,
        *,
        org: str = "test",
        skip_time: bool = True,
    ) -> None:
        self.registry = registry if registry is not None else default_registry
        self.org = org
        self.skip_time = skip_time
        self.timeouts: dict[str, float] = {}
        """Per task type, a timeout (seconds) that replaces the handler's in this harness."""
        self.namespace = Namespace()
        self._closing = contextlib.ExitStack()
        try:
            self._start()
        except BaseException:
            self._closing.close()
            raise

    def _start(self) -> None:
        import fakeredis

        self.clock = self._closing.enter_context(_ApiTime.shared())
        """The API's time (shared with the other harnesses open at the same time)."""
        self._api = self._closing.enter_context(_InProcessApi.start())
        self.redis: Redis = fakeredis.FakeRedis()
        self._closing.callback(self.redis.close)
        self.client: ForemanClient = InProcessClient(_Transport(self._api), self._api.key(self.org))
        """The SDK's client, with an all-permissions key of :attr:`org`."""
        self._closing.callback(self.client.close)

    def close(self) -> None:
        """Stop the API and forget its database."""
        self._closing.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # ---- submitting ----------------------------------------------------------------------

    def create_run(
        self, input_data: JsonValue = None, *, metadata: Mapping[str, JsonValue] | None = None
    ) -> Run:
        """A new run (``POST /runs``)."""
        return self.client.create_run(input_data, metadata=metadata).unwrap()

    def submit(
        self,
        type: str,
        input_data: JsonValue = None,
        *,
        run: RunRef | None = None,
        **options: Any,
    ) -> Task:
        """Submit a task as :func:`foreman_worker.submit` does (create it ``queued``, enqueue
        its id); in ``run``, or in a new run whose input is ``input_data``. ``options`` are
        ``submit``'s: ``queue``, ``max_retries``, ``metadata``, ``parent_task_id``,
        ``idempotency_key``. It runs at the next :meth:`run_until_idle`."""
        self._register_handlers()
        run_id = _id(run) if run is not None else self.create_run(input_data).id
        return sdk_submit(
            run_id,
            type,
            input_data,
            client=self.client,
            connection=self.redis,
            namespace=self.namespace,
            **options,
        )

    # ---- running -------------------------------------------------------------------------

    def run_until_idle(self, *, max_jobs: int = 1000, skip_time: bool | None = None) -> int:
        """Run queued tasks, the children they spawn and their retries until none is left.

        Retries wait for their ``retryAt``: with ``skip_time`` (default: the harness's) the
        clock is moved to the next one when nothing else can run; without, they are left
        scheduled (move the clock with :meth:`advance` and call this again). Returns how
        many jobs ran; raises :class:`NotIdleError` when ``max_jobs`` ran and work is left.
        """
        skip = self.skip_time if skip_time is None else skip_time
        ran = 0
        self._register_handlers()
        while True:
            due = self._release_due_jobs()
            names = self._queues_with_jobs()
            if names:
                if ran >= max_jobs:
                    raise NotIdleError(f"{ran} jobs ran and tasks are still queued")
                ran += self._work(names, max_jobs - ran)
            elif due is not None and skip:
                self.clock.advance_to(due)  # nothing else can run: skip to the next retry
                self._register_handlers()  # stay a live worker after a long jump
            else:
                return ran

    def advance(self, seconds: float) -> None:
        """Move the clock ``seconds`` ahead: retries and leases due by then become due."""
        self.clock.advance(seconds)

    # ---- inspecting ----------------------------------------------------------------------

    def task(self, task: TaskRef) -> Task:
        """The task as the API has it now."""
        return self.client.get_task(_id(task)).unwrap()

    def tasks(
        self,
        run: RunRef | None = None,
        *,
        type: str | None = None,
        status: TaskStatus | str | None = None,
        parent: TaskRef | None = None,
    ) -> list[Task]:
        """Tasks (of ``run``, of a ``type``, in a ``status``, children of ``parent``),
        oldest first."""
        found: list[Task] = []
        while True:
            page = self.client.list_tasks(
                run_id=_id(run) if run is not None else None,
                parent_task_id=_id(parent) if parent is not None else None,
                status=status,
                type=type,
                limit=1000,
                offset=len(found),
                sort_by="createdAt",
                sort_order="asc",
            ).unwrap()
            found += page.data
            if len(found) >= page.pagination.total or not page.data:
                return found

    def children(self, task: TaskRef) -> list[Task]:
        """The tasks ``task`` spawned, oldest first."""
        return self.tasks(parent=task)

    def attempts(self, task: TaskRef) -> list[Attempt]:
        """Every attempt of ``task``, first first: worker, job, times, outcome, error."""
        return list(self.client.list_attempts(_id(task)).unwrap().data)

    def get_run(self, run: RunRef) -> Run:
        """The run as the API has it now (status, counters)."""
        return self.client.get_run(_id(run)).unwrap()

    def data(self, run: RunRef, key: str, default: JsonValue = None) -> JsonValue:
        """The latest value stored under ``key`` in ``run``, or ``default``."""
        entry = self.client.get_run_data(_id(run), key).unwrap()
        return default if entry is None else entry.value

    def data_entries(self, run: RunRef, key: str) -> list[RunData]:
        """Every entry stored under ``key`` in ``run``, newest first."""
        return self.client.get_all_run_data(_id(run), key).unwrap()

    # ---- the worker side -----------------------------------------------------------------

    def _handlers(self) -> Registry:
        """The registry the worker runs: the harness's, with :attr:`timeouts` applied."""
        if not self.timeouts:
            return self.registry
        view = Registry()
        for handler in self.registry:
            timeout = self.timeouts.get(handler.type, handler.timeout)
            view.add(dataclasses.replace(handler, timeout=timeout))
        return view

    def _register_handlers(self) -> None:
        """Register the worker with the API, as ``foreman-worker`` does: tasks of its types
        get the handlers' queue and ``max_retries`` whoever submits them."""
        from foreman_worker.presence import Presence

        handlers = self._handlers()
        Presence(
            self.client, worker_id=WORKER_ID, queues=handlers.queues(), registry=handlers
        ).register()

    def _release_due_jobs(self) -> datetime | None:
        """Move the scheduled jobs that are due by the clock onto their queues; return when
        the next one left is due (None: none left)."""
        from rq import Queue
        from rq.job import Job
        from rq.registry import ScheduledJobRegistry

        now = self.clock.now()
        later: list[datetime] = []
        for queue in Queue.all(connection=self.redis):
            scheduled = ScheduledJobRegistry(queue.name, connection=self.redis)  # type: ignore[no-untyped-call]
            for job_id in scheduled.get_job_ids():
                job = Job.fetch(job_id, connection=self.redis)
                due = self._due(job)
                if due is not None and due > now:
                    later.append(due)
                    continue
                with self.redis.pipeline() as pipe:
                    scheduled.remove(job, pipeline=pipe)
                    queue._enqueue_job(job, pipeline=pipe, at_front=bool(job.enqueue_at_front))
                    pipe.execute()
        return min(later, default=None)

    def _due(self, job: Any) -> datetime | None:
        """When the task of a scheduled job may run: a retry's ``retryAt``; else now."""
        if not job.args:
            return None
        task = self.client.get_task(str(job.args[0]))
        if not task.success or task.unwrap().status is not TaskStatus.RETRYING:
            return None  # gone, finished, cancelled: the runner acknowledges and skips it
        return task.unwrap().retry_at

    def _queues_with_jobs(self) -> list[str]:
        from rq import Queue

        return sorted(q.name for q in Queue.all(connection=self.redis) if q.count)

    def _work(self, queue_names: list[str], max_jobs: int) -> int:
        """Run the queued jobs with ``foreman-worker``'s worker and runner, in burst mode."""
        from foreman_worker.runtime import Runtime, configure
        from foreman_worker.settings import WorkerSettings
        from foreman_worker.worker import ForemanWorker

        runtime = Runtime(
            client=self.client,
            connection=self.redis,
            registry=self._handlers(),
            namespace=self.namespace,
            worker_id=WORKER_ID,
        )
        done: list[None] = []
        worker = ForemanWorker(
            queue_names,
            connection=self.redis,
            settings=WorkerSettings(),
            after_job=lambda: done.append(None),
            name=f"{WORKER_ID}-{uuid.uuid4().hex[:8]}",
        )
        handlers = _signal_handlers()
        previous = configure(runtime)
        try:
            worker.work(burst=True, max_jobs=max_jobs, logging_level="WARNING")
        finally:
            configure(previous)
            _restore_signal_handlers(handlers)
            if runtime._lease is not None:
                runtime._lease.stop(wait=10)
        return len(done)


def _id(ref: Task | Run | uuid.UUID | str) -> str:
    return str(ref.id) if isinstance(ref, Task | Run) else str(ref)


def _signal_handlers() -> dict[signal.Signals, Any]:
    return {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}


def _restore_signal_handlers(handlers: dict[signal.Signals, Any]) -> None:
    """The worker installs its stop handlers; the test process gets its own back."""
    for sig, handler in handlers.items():
        if handler is not None:
            signal.signal(sig, handler)


# ---- the API in process ------------------------------------------------------------------


class _InProcessApi:
    """``create_app`` on a throwaway SQLite file, served on an event loop in a thread.

    Requests reach it through :class:`_Transport` / :class:`_AsyncTransport`, which hand
    them to ``httpx.ASGITransport`` on that loop: the application's own code path, with no
    socket. (SQLite's ``:memory:`` cannot be shared by the app's connections, hence a file.)
    """

    def __init__(self, portal: BlockingPortal, app: Any, engine: Any, env: str) -> None:
        self.portal = portal
        self.app = app
        self.engine = engine
        self.env = env
        self._asgi = httpx.ASGITransport(app=app)
        self._keys = 0

    @classmethod
    @contextlib.contextmanager
    def start(cls) -> Iterator[_InProcessApi]:
        from anyio.from_thread import start_blocking_portal

        from foreman_api.app import create_app
        from foreman_api.settings import Settings
        from foreman_api.storage.engine import create_engine
        from foreman_api.storage.migrate import upgrade

        with contextlib.ExitStack() as stack:
            folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="foreman-")))
            url = f"sqlite:///{folder / 'foreman.db'}"
            engine = create_engine(url, pool_size=2)
            stack.callback(engine.dispose)
            upgrade(engine)
            # Explicit values: a FOREMAN_REDIS_URL in the environment must not be used.
            settings = Settings(database_url=url, redis_url=None, key_cache_seconds=0)
            app = create_app(settings, engine=engine)
            portal = stack.enter_context(start_blocking_portal())
            stack.enter_context(_lifespan(portal, app))
            yield cls(portal, app, engine, settings.env)

    def key(self, org: str) -> str:
        """A new all-permissions key of ``org``, without a rate limit."""
        from foreman_api.auth import issue_key

        self._keys += 1
        secret, _ = issue_key(
            self.engine,
            env=self.env,
            org_id=org,
            name=f"foreman-testing-{self._keys}",
            permissions=["*"],
            rate_limit="unlimited",
        )
        return secret

    def send(self, method: str, url: str, headers: Any, content: bytes) -> httpx.Response:
        """One request, answered by the app on its loop (callable from any other thread)."""
        status, reply_headers, body = self.portal.call(self._send, method, url, headers, content)
        return httpx.Response(status, headers=reply_headers, content=body)

    async def _send(
        self, method: str, url: str, headers: Any, content: bytes
    ) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        request = httpx.Request(method, url, headers=headers, content=content)
        response = await self._asgi.handle_async_request(request)
        body = await response.aread()
        return response.status_code, response.headers.raw, body


@contextlib.contextmanager
def _lifespan(portal: BlockingPortal, app: Any) -> Iterator[None]:
    """Run the app's ASGI lifespan: started on entry, shut down (databases closed) on exit."""
    inbox: asyncio.Queue[dict[str, str]] = portal.call(_new_queue)
    said: list[str] = []

    async def receive() -> dict[str, str]:
        return await inbox.get()

    async def send(message: Mapping[str, Any]) -> None:
        said.append(str(message["type"]))

    scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
    running = portal.start_task_soon(app, scope, receive, send)
    portal.call(inbox.put, {"type": "lifespan.startup"})
    portal.call(_until, lambda: any(s.startswith("lifespan.startup") for s in said))
    if "lifespan.startup.complete" not in said:
        raise RuntimeError(f"the API did not start: {said}")
    try:
        yield
    finally:
        portal.call(inbox.put, {"type": "lifespan.shutdown"})
        running.result(timeout=30)


async def _new_queue() -> asyncio.Queue[dict[str, str]]:
    return asyncio.Queue()


async def _until(done: Any) -> None:
    while not done():
        await asyncio.sleep(0.001)


class _Transport(httpx.BaseTransport):
    """A sync transport into :class:`_InProcessApi`."""

    def __init__(self, api: _InProcessApi) -> None:
        self.api = api

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        content = request.read()
        return self.api.send(request.method, str(request.url), request.headers.raw, content)


class _ThreadedTransport(httpx.AsyncBaseTransport):
    """An async transport that sends each request through a sync one, from a thread, so
    the caller's event loop is never blocked."""

    def __init__(self, transport: httpx.BaseTransport) -> None:
        self.transport = transport

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        content = await request.aread()
        plain = httpx.Request(request.method, request.url, headers=request.headers, content=content)
        return await asyncio.to_thread(self._send, plain)

    def _send(self, request: httpx.Request) -> httpx.Response:
        response = self.transport.handle_request(request)
        try:
            body = response.read()  # decoded: the content-encoding is dropped below
        finally:
            response.close()
        headers = [
            (name, value)
            for name, value in response.headers.raw
            if name.lower() not in (b"content-encoding", b"content-length")
        ]
        return httpx.Response(response.status_code, headers=headers, content=body)


class InProcessClient(ForemanClient):
    """The SDK's client over a sync transport to an API in this process (the harness's,
    or a Starlette ``TestClient``'s). The async clients made from it (an async handler's
    awaitable helpers) reach the same API through that transport, from a thread."""

    def __init__(
        self, transport: httpx.BaseTransport, api_key: str, *, base_url: str = BASE_URL
    ) -> None:
        super().__init__(base_url, api_key, transport=transport)
        self._sync_transport = transport

    def _async_transport(self) -> httpx.AsyncBaseTransport:
        return _ThreadedTransport(self._sync_transport)
