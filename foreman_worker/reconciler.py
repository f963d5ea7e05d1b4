"""The reconciler: make Redis agree with the database, a few seconds apart.

Every ``foreman-worker`` runs one in a background thread; a Redis lock lets one worker per
organisation act at a time (another takes over when it dies). Each pass:

1. asks the API to recover the tasks whose lease expired (their worker died, hung or was
   cut off): they come back ``retrying`` (or ``failed`` with no retries left);
2. pages through the tasks the database says should be waiting on a queue (``queued``, or
   ``retrying`` and due) and puts back, at the front of its queue, each one that has no
   waiting job in Redis — after a Redis restart or FLUSHALL, a crash between a database
   write and its enqueue, or a worker killed between taking a job and claiming it. A job
   that started in the last few seconds is not lost: its worker is claiming the task (the
   claim has not landed yet), and a second job would only be refused. The database was
   read before Redis, so a task that finished in between also looks lost: the tasks found
   lost are put back only if a second look at the database, after Redis, still lists them.

Checking a page costs two pipelined Redis round trips (markers, then their jobs); only the
lost tasks go through the atomic enqueue.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from redis import Redis
from rq import Queue
from rq.job import JobStatus
from rq.utils import now as rq_now
from rq.utils import utcparse

from foreman_api.schemas import TaskStatus
from foreman_worker.client import ForemanClient
from foreman_worker.enqueue import is_waiting_job, put_on_queue, text
from foreman_worker.queues import Namespace

log = logging.getLogger("foreman_worker.reconciler")

PAGE_SIZE = 500
STUCK_SECONDS = 5.0
"""A job taken from a queue but not started for this long was taken by a dead worker."""
SCAN_SECONDS = 10.0
"""By default, how often the waiting tasks are checked against Redis (a loss is noticed
within two intervals plus the grace below); ``FOREMAN_WORKER_SCAN_INTERVAL``."""
STARTING_SECONDS = 5.0
"""A job that started this recently may still be claiming its task: not lost yet."""
GRACE_SECONDS = 5.0
"""A task changed more recently than this may be between its database write and its
enqueue: it is left alone until the next pass."""


@dataclass(slots=True)
class _Look:
    """What one look at the database found: tasks recovered now, and tasks waiting."""

    moved: int
    """Tasks whose lease had expired, moved on now (retrying or failed)."""
    recovered: list[tuple[uuid.UUID, str]]
    """Those of them that are retrying: to be queued again."""
    waiting: list[tuple[uuid.UUID, str]]


@dataclass(frozen=True, slots=True)
class Pass:
    """What one reconciliation pass did."""

    recovered: int = 0
    requeued: int = 0
    checked: int = 0
    skipped: bool = False
    """Another worker of the organisation held the lock."""


class Reconciler:
    """Recovers lost tasks and re-queues tasks Redis lost, for one organisation."""

    def __init__(
        self,
        client: ForemanClient,
        connection: Redis,
        *,
        org_id: str,
        namespace: Namespace,
        holder: str,
        interval: float = 2.0,
        grace_seconds: float = GRACE_SECONDS,
        scan_interval: float | None = None,
    ) -> None:
        self.client = client
        self.connection = connection
        self.org_id = org_id
        self.namespace = namespace
        self.holder = holder
        self.interval = interval
        self.grace_seconds = grace_seconds
        self.scan_interval = SCAN_SECONDS if scan_interval is None else scan_interval
        self._intermediate: dict[str, float] = {}
        """Job ids seen in intermediate lists, with when they were first seen."""

    def run_once(self) -> Pass:
        """One pass, unless another worker of the organisation made one this interval.

        The lock is not released: it expires after ``interval``, so the organisation gets
        one pass per interval however many workers it runs.
        """
        lock = self.namespace.lock("reconciler", self.org_id)
        if not self.connection.set(lock, self.holder, nx=True, px=int(self.interval * 1000)):
            return Pass(skipped=True)
        # Lost workers are looked for on every pass; the (longer) scan of the waiting tasks
        # against Redis runs once per scan interval, so a large backlog costs little.
        scan_lock = self.namespace.lock("reconciler-scan", self.org_id)
        scan = bool(
            self.connection.set(scan_lock, self.holder, nx=True, px=int(self.scan_interval * 1000))
        )
        first = self._look(scan)
        if first is None:
            return Pass(skipped=True)
        self.unstick(
            {self.namespace.queue(self.org_id, q) for _, q in first.recovered + first.waiting}
        )
        # A recovered task's job is dead; a waiting task's may have just started.
        requeued = self.put_back(self.lost(first.recovered))
        lost = self.lost(first.waiting, starting=True)
        recovered = first.moved
        if lost:
            # The database was read before Redis: a task that finished in between (its job
            # done and gone) looks lost. Only what the database still says after Redis was
            # checked is put back.
            second = self._look(scan=True)
            still = {task_id for task_id, _ in second.waiting} if second else set()
            lost = [task for task in lost if uuid.UUID(task[0]) in still]
            if second is not None:
                requeued += self.put_back(self.lost(second.recovered))
                recovered += second.moved
        requeued += self.put_back(lost)
        if requeued or recovered:
            log.info("reconciled: %d recovered, %d put back on their queues", recovered, requeued)
        return Pass(
            recovered=recovered, requeued=requeued, checked=len(first.recovered + first.waiting)
        )

    def _look(self, scan: bool) -> _Look | None:
        """Ask the API to recover expired leases and (with ``scan``) list the waiting tasks;
        None when the API could not be reached."""
        look = _Look(0, [], [])
        after: uuid.UUID | None = None
        while True:
            result = self.client.reconcile_tasks(
                after=after, limit=PAGE_SIZE if scan else 1, grace_seconds=self.grace_seconds
            )
            if result.data is None:
                log.warning("reconciliation skipped this time: %s", result.error)
                return None
            page = result.data
            look.moved += len(page.recovered)
            for task in page.recovered:
                log.warning(
                    "task %s: its worker stopped renewing the lease; now %s", task.id, task.status
                )
            look.recovered += [
                (t.id, t.queue) for t in page.recovered if t.status is TaskStatus.RETRYING
            ]
            if not scan:
                return look
            look.waiting += [(t.id, t.queue) for t in page.waiting]
            if page.next is None:
                return look
            after = page.next

    def unstick(self, rq_queues: Iterable[str]) -> int:
        """Fail the jobs a worker took off a queue but died before starting.

        RQ moves a job to the queue's intermediate list when a worker takes it, and to the
        started registry when the job starts; a job seen in between on two passes at least
        :data:`STUCK_SECONDS` apart belongs to a dead worker. RQ's own clean-up of these
        waits over a minute; failing the job lets this pass put its task back at once.
        """
        now = time.monotonic()
        seen: dict[str, float] = {}
        failed = 0
        for name in rq_queues:
            queue = Queue(name, connection=self.connection)
            for job_id in queue.intermediate_queue.get_job_ids():
                first = self._intermediate.get(job_id, now)
                seen[job_id] = first
                if now - first < STUCK_SECONDS or job_id in queue.started_job_registry:
                    continue
                job = queue.fetch_job(job_id)
                if job is not None:
                    job.set_status(JobStatus.FAILED)
                queue.intermediate_queue.remove(job_id)
                failed += 1
                log.warning(
                    "job %s was taken from %s by a worker that died; failed it", job_id, name
                )
        self._intermediate = seen
        return failed

    def lost(
        self, tasks: Sequence[tuple[uuid.UUID, str]], *, starting: bool = False
    ) -> list[tuple[str, str]]:
        """The (task id, RQ queue) of each task that has no waiting job in Redis.

        With ``starting``, a job that started less than :data:`STARTING_SECONDS` ago also
        holds its task: its worker took it and is claiming the task right now.
        """
        if not tasks:
            return []
        targets = [(str(task_id), self.namespace.queue(self.org_id, q)) for task_id, q in tasks]
        waiting = self._waiting(targets, starting=starting)
        return [target for target, found in zip(targets, waiting, strict=True) if not found]

    def put_back(self, lost: Sequence[tuple[str, str]]) -> int:
        """Put each (task id, RQ queue) on the front of its queue; how many went."""
        put = 0
        for task_id, rq_queue in lost:
            job = put_on_queue(
                self.connection,
                task_id=task_id,
                rq_queue=rq_queue,
                marker=self.namespace.marker(task_id),
                at_front=True,
            )
            if job is not None:
                put += 1
                log.info(
                    "task %s was on no queue; put back on %s as job %s", task_id, rq_queue, job
                )
        return put

    def _waiting(self, targets: Iterable[tuple[str, str]], *, starting: bool) -> list[bool]:
        """For each (task id, RQ queue): does a job for it wait on that queue (or, with
        ``starting``, has one just started there)?"""
        targets = list(targets)
        with self.connection.pipeline(transaction=False) as pipe:
            for task_id, _ in targets:
                pipe.get(self.namespace.marker(task_id))
            markers = pipe.execute()
        with self.connection.pipeline(transaction=False) as pipe:
            for marker in markers:
                if marker is not None:
                    pipe.hmget(f"rq:job:{text(marker)}", ["status", "origin", "started_at"])
            jobs = iter(pipe.execute())
        waiting = []
        for (_, rq_queue), marker in zip(targets, markers, strict=True):
            if marker is None:
                waiting.append(False)
                continue
            status, origin, started_at = next(jobs)
            waiting.append(
                is_waiting_job(status, origin, rq_queue)
                or (starting and _just_started(status, origin, started_at, rq_queue))
            )
        return waiting


def _just_started(
    status: bytes | None, origin: bytes | None, started_at: bytes | None, rq_queue: str
) -> bool:
    """Whether a job hash says the job started on ``rq_queue`` under STARTING_SECONDS ago."""
    if status is None or origin is None or not started_at:
        return False
    if text(status) != JobStatus.STARTED.value or text(origin) != rq_queue:
        return False
    age = (rq_now() - utcparse(text(started_at))).total_seconds()
    return age < STARTING_SECONDS
