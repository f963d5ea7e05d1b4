"""The handler run by the workers of ``bench/chaos.py`` (``--app bench.chaos_app``).

One task type, ``chaos.work``, whose input says how long to sleep and whether to fail:

* ``{"sleep": s}`` — sleep ``s`` seconds, then return ``{"jobId": <RQ job id>, …}``;
* ``{"sleep": s, "fail": "first"}`` — fail the first attempt (retried), succeed afterwards;
* ``{"sleep": s, "fail": "always"}`` — fail every attempt (ends ``failed``).

The returned ``jobId`` is the id of the RQ job that ran *this* attempt. The harness checks
it against the task's ``queueJobId`` (the claim that stands at the end): a completed task
whose output names another job had its outcome recorded by a stale attempt.

Each attempt also appends a line to ``$CHAOS_NOTES_DIR/<pid>.log`` when the handler starts
(``S``) and ends (``E``), so the harness knows which jobs a worker process ran and whether
it is busy right now, without asking Redis or the API (either may be the thing under fault).
"""

from __future__ import annotations

import os
import time
from typing import Any

from rq import get_current_job

from bench.chaos import MAX_RETRIES, NOTES_ENV, QUEUE, TASK_TYPE
from foreman_worker import Backoff, TaskContext, task


def _note(kind: str, job_id: str, ctx: TaskContext, sleep: float) -> None:
    """Append one ``kind job task pid ppid time sleep`` line to this process's notes file."""
    directory = os.environ.get(NOTES_ENV)
    if not directory:
        return
    line = f"{kind} {job_id} {ctx.task_id} {os.getpid()} {os.getppid()} {time.time():.3f} {sleep}\n"
    with open(os.path.join(directory, f"{os.getpid()}.log"), "a") as notes:
        notes.write(line)


@task(TASK_TYPE, queue=QUEUE, max_retries=MAX_RETRIES, timeout=60, backoff=Backoff(0.2, 2, 2))
def work(ctx: TaskContext, data: dict[str, Any]) -> dict[str, Any]:
    """Sleep, maybe fail, and say which job ran this attempt."""
    job = get_current_job()
    job_id = job.id if job is not None else ""
    sleep = float(data.get("sleep", 0))
    _note("S", job_id, ctx, sleep)
    try:
        time.sleep(sleep)
        fail = data.get("fail")
        if fail == "always" or (fail == "first" and ctx.attempt == 1):
            raise RuntimeError(f"chaos: attempt {ctx.attempt} fails on purpose ({fail})")
        return {"jobId": job_id, "pid": os.getpid(), "attempt": ctx.attempt}
    finally:
        _note("E", job_id, ctx, sleep)
