"""This worker's entry in the API's worker registry.

On start a ``foreman-worker`` registers (``PUT /workers/{id}``): its queues and its
handlers with their ``@task`` options. The API answers with the key's organisation, which
names the worker's Redis queues, and applies the handlers' queue and ``max_retries`` to
tasks of those types whoever submits them. The worker repeats the registration every few
seconds with the task it is running (its heartbeat: ``GET /workers`` lists live workers)
and deregisters when it stops cleanly.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable, Sequence

from foreman_api.schemas import Worker
from foreman_worker.client import ForemanClient
from foreman_worker.errors import ApiError
from foreman_worker.registry import Registry

log = logging.getLogger("foreman_worker.presence")


class Presence:
    """Registers one worker process with the API and keeps its entry fresh."""

    def __init__(
        self,
        client: ForemanClient,
        *,
        worker_id: str,
        queues: Sequence[str],
        registry: Registry,
        current_task: Callable[[], str | None] = lambda: None,
    ) -> None:
        self.client = client
        self.worker_id = worker_id
        self.queues = list(queues)
        self.registry = registry
        self.current_task = current_task

    def register(self) -> Worker:
        """Register (or refresh) this worker; raises ApiError if the API refuses."""
        handlers = [
            {
                "type": h.type,
                "queue": h.queue,
                "max_retries": h.max_retries,
                "timeout": h.timeout,
            }
            for h in self.registry
        ]
        return self.client.register_worker(
            self.worker_id,
            queues=self.queues,
            handlers=handlers,
            hostname=socket.gethostname()[:255],
            pid=os.getpid(),
            current_task_id=self.current_task(),
        ).unwrap()

    def beat(self) -> None:
        """Refresh the registration; a failure is only logged (the next beat tries again)."""
        try:
            self.register()
        except ApiError as exc:
            log.warning("worker %s: registration not refreshed (%s)", self.worker_id, exc)

    def leave(self) -> None:
        """Deregister; a failure is only logged (the entry ages out by itself)."""
        result = self.client.delete_worker(self.worker_id)
        if not result.success:
            log.info("worker %s not deregistered: %s", self.worker_id, result.error)
