"""Names in Redis: namespaced RQ queues, enqueue markers and locks.

Every Redis name carries the organisation a task belongs to, and an optional deployment
prefix (``FOREMAN_QUEUE_PREFIX``), so a worker only ever pops ids that its own key can
claim: two organisations, or two Foreman deployments, can share one Redis database.

    {prefix}foreman:{org}:{queue}          the RQ queue of a logical queue
    {prefix}foreman:enqueued:{task id}     the enqueue marker (names the waiting job)
    {prefix}foreman:reconciler:{org}       the reconciler's lock
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Namespace:
    """Where one deployment's keys live in Redis (``prefix`` is ``FOREMAN_QUEUE_PREFIX``)."""

    prefix: str = ""

    def queue(self, org_id: str, queue: str) -> str:
        """The RQ queue name of logical ``queue`` for organisation ``org_id``."""
        return f"{self.prefix}foreman:{org_id}:{queue}"

    def marker(self, task_id: str) -> str:
        """The key that names the job waiting for ``task_id`` (absent: none waits)."""
        return f"{self.prefix}foreman:enqueued:{task_id}"

    def lock(self, name: str, org_id: str) -> str:
        """A lock held by one worker of the organisation at a time."""
        return f"{self.prefix}foreman:{name}:{org_id}"
