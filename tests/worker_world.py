"""A worker's world for fast tests: the real API in process, fakeredis, the SDK's client.

The SDK's :class:`ForemanClient` talks to the app through the Starlette ``TestClient``'s
in-process transport (as in ``test_client.py``), so the runner, ``enqueue``/``submit``,
the lease keeper and the reconciler meet the real state machine: fencing, leases,
``retryAt``, idempotency keys, organisations. Redis is fakeredis; one world is one
organisation, and worlds of several organisations can share one Redis.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import fakeredis
from rq import Queue
from rq.registry import ScheduledJobRegistry

from foreman_api.schemas import Task, TaskStatus
from foreman_api.storage.tables import tasks as tasks_table
from foreman_worker.client import ForemanClient
from foreman_worker.enqueue import enqueue, submit
from foreman_worker.queues import Namespace
from foreman_worker.reconciler import Reconciler
from foreman_worker.registry import Registry
from foreman_worker.runner import Outcome, Runner
from foreman_worker.runtime import Runtime
from foreman_worker.testing import InProcessClient

if TYPE_CHECKING:
    from tests.conftest import Api

TaskRef = Task | uuid.UUID | str


def task_id(task: TaskRef) -> str:
    return str(task.id) if isinstance(task, Task) else str(task)


def seconds_from_now(moment: datetime | None) -> float:
    assert moment is not None
    return (moment - datetime.now(UTC)).total_seconds()


@dataclass
class World:
    """One organisation's view: its API client, a run to put tasks in, its Redis names."""

    api: Api
    redis: fakeredis.FakeRedis
    client: ForemanClient
    org: str
    run_id: uuid.UUID
    namespace: Namespace = field(default_factory=Namespace)
    registry: Registry = field(default_factory=Registry)
    runtimes: list[Runtime] = field(default_factory=list)

    # ---- tasks, through the API -------------------------------------------------------------

    def task(self, type: str = "t", input_data: Any = None, **create: Any) -> Task:
        """A new task of this world's run, ``queued`` unless ``status`` says otherwise."""
        create.setdefault("status", TaskStatus.QUEUED)
        return self.client.create_task(self.run_id, type, input_data=input_data, **create).unwrap()

    def get(self, task: TaskRef) -> Task:
        return self.client.get_task(task_id(task)).unwrap()

    def claim(self, task: TaskRef, job: str = "job-0", lease: float = 30) -> Task:
        """Claim ``task`` for ``job``, with a lease, as a runner would."""
        claimed = self.client.update_task(
            task_id(task), status=TaskStatus.RUNNING, queue_job_id=job, lease_seconds=lease
        )
        return claimed.unwrap()

    def set_columns(self, task: TaskRef, **values: Any) -> None:
        """Write columns of the task's row directly (what time would otherwise do)."""
        with self.api.engine.begin() as conn:
            conn.execute(
                tasks_table.update()
                .where(tasks_table.c.id == uuid.UUID(task_id(task)))
                .values(**values)
            )

    def submit(self, type: str = "t", input_data: Any = None, **options: Any) -> Task:
        """``submit`` into this world's run, with its client and (unless given) its Redis."""
        options.setdefault("connection", self.redis)
        return submit(self.run_id, type, input_data, client=self.client, **options)

    def enqueue(self, task: TaskRef, **options: Any) -> str | None:
        """``enqueue`` with this world's Redis, namespace and (for a bare id) client."""
        return enqueue(
            task, connection=self.redis, namespace=self.namespace, client=self.client, **options
        )

    def expire_lease(self, task: TaskRef) -> None:
        """What a worker that stopped renewing its lease leads to, without the wait."""
        self.set_columns(task, lease_expires_at=datetime.now(UTC) - timedelta(seconds=1))

    # ---- Redis names ------------------------------------------------------------------------

    def rq_queue(self, name: str = "default") -> str:
        return self.namespace.queue(self.org, name)

    def queue(self, name: str = "default") -> Queue:
        return Queue(self.rq_queue(name), connection=self.redis)

    def scheduled(self, name: str = "default") -> ScheduledJobRegistry:
        return ScheduledJobRegistry(self.rq_queue(name), connection=self.redis)  # type: ignore[no-untyped-call]

    def marker(self, task: TaskRef) -> str | None:
        value = self.redis.get(self.namespace.marker(task_id(task)))
        return value.decode() if isinstance(value, bytes) else value

    def waiting_jobs(self, name: str = "default") -> list[str]:
        """Ids of the jobs on the queue and scheduled for it."""
        return self.queue(name).job_ids + self.scheduled(name).get_job_ids()

    # ---- the worker side --------------------------------------------------------------------

    def runtime(self, **options: Any) -> Runtime:
        runtime = Runtime(
            client=self.client,
            connection=self.redis,
            registry=self.registry,
            namespace=self.namespace,
            **options,
        )
        self.runtimes.append(runtime)
        return runtime

    def runner(self, rand: Callable[[], float] = lambda: 0.5, **runtime: Any) -> Runner:
        return Runner(self.runtime(**runtime), rand=rand)

    def run(self, task: TaskRef, job_id: str = "job-1", *, runner: Runner | None = None) -> Outcome:
        """One job of ``task`` taken from its queue (``default`` for an unknown id)."""
        name = task.queue if isinstance(task, Task) else "default"
        runner = runner if runner is not None else self.runner()
        return runner.run(task_id(task), job_id=job_id, rq_queue=self.rq_queue(name))

    def reconciler(self, holder: str = "worker-1", **options: Any) -> Reconciler:
        options.setdefault("grace_seconds", 0)
        return Reconciler(
            self.client,
            self.redis,
            org_id=self.org,
            namespace=self.namespace,
            holder=holder,
            **options,
        )

    def close(self) -> None:
        for runtime in self.runtimes:
            if runtime._lease is not None:
                # a renewal in flight must finish before the in-process app shuts down
                runtime._lease.stop(wait=10)
        self.client.close()


def connect(api: Api, org: str) -> ForemanClient:
    """The SDK's client with an all-permissions key of ``org``, reaching the app in process."""
    # TestClient is an httpx.Client: borrow its in-process transport to reach the app.
    return InProcessClient(
        api.client._transport, api.key("*", org=org), base_url="http://testserver"
    )


@contextmanager
def open_world(
    api: Api,
    *,
    org: str = "org-a",
    redis: fakeredis.FakeRedis | None = None,
) -> Iterator[World]:
    """``org``'s world, on a new fakeredis unless given one (another organisation's)."""
    client = connect(api, org)
    world = World(
        api=api,
        redis=redis if redis is not None else fakeredis.FakeRedis(),
        client=client,
        org=org,
        run_id=client.create_run({"test": True}).unwrap().id,
    )
    try:
        yield world
    finally:
        world.close()
