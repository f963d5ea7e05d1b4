"""SQL for what is true now across every organisation: tasks per type and status, runs
per status, live workers (read at each ``/metrics`` scrape)."""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa

from foreman_api.clock import utcnow
from foreman_api.db import Database
from foreman_api.storage.tables import runs, tasks, workers
from foreman_api.storage.workers import live_since

_TASKS = sa.select(tasks.c.type, tasks.c.status, sa.func.count().label("n")).group_by(
    tasks.c.type, tasks.c.status
)
_RUNS = sa.select(runs.c.status, sa.func.count().label("n")).group_by(runs.c.status)
_LIVE_WORKERS = (
    sa.select(sa.func.count())
    .select_from(workers)
    .where(workers.c.last_seen_at >= sa.bindparam("p_since", type_=workers.c.last_seen_at.type))
)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Counts at one moment: ``tasks[(type, status)]``, ``runs[status]``, live workers."""

    tasks: dict[tuple[str, str], int]
    runs: dict[str, int]
    live_workers: int


async def snapshot(db: Database) -> Snapshot:
    """Count tasks, runs and live workers (three grouped reads)."""
    task_rows = await db.all(_TASKS)
    run_rows = await db.all(_RUNS)
    live = await db.scalar(_LIVE_WORKERS, {"p_since": live_since(utcnow())})
    return Snapshot(
        tasks={(row["type"], row["status"]): int(row["n"]) for row in task_rows},
        runs={row["status"]: int(row["n"]) for row in run_rows},
        live_workers=int(live or 0),
    )
