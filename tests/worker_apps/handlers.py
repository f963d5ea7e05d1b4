"""Handlers for the integration tests; they record their runs in Redis (ctx.connection)."""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

from pydantic import BaseModel

from foreman_worker import Backoff, TaskContext, task

QUEUE = "itest"
FAST = Backoff(initial=0.2, factor=2, maximum=1)


def _record(ctx: TaskContext) -> int:
    """Count this run of the task and note which worker process ran it."""
    assert ctx.connection is not None
    ctx.connection.rpush(f"itest:pids:{ctx.task_id}", os.getpid())
    return int(ctx.connection.incr(f"itest:runs:{ctx.task_id}"))


@task("itest.noop", queue=QUEUE)
def noop(ctx: TaskContext, data: Any) -> Any:
    return {"echo": data}


@task("itest.counted", queue=QUEUE)
def counted(ctx: TaskContext, data: Any) -> Any:
    runs = _record(ctx)
    time.sleep(float((data or {}).get("sleep", 0)))
    return {"runs": runs, "pid": os.getpid()}


@task("itest.flaky", queue=QUEUE, backoff=FAST)
def flaky(ctx: TaskContext) -> Any:
    _record(ctx)
    if ctx.attempt <= 2:
        raise RuntimeError(f"attempt {ctx.attempt} fails")
    return {"attempt": ctx.attempt}


@task("itest.always-fails", queue=QUEUE, backoff=FAST)
def always_fails(ctx: TaskContext) -> None:
    _record(ctx)
    raise ValueError("never works")


@task("itest.slow", queue=QUEUE, timeout=0.5, backoff=FAST)
def slow(ctx: TaskContext) -> None:
    _record(ctx)
    time.sleep(5)


class Point(BaseModel):
    x: int
    y: int


@task("itest.typed", queue=QUEUE)
def typed(ctx: TaskContext, point: Point) -> Point:
    _record(ctx)
    return Point(x=point.y, y=point.x)


class Line(BaseModel):
    sku: str
    qty: int


@task("itest.lines", queue=QUEUE)
def lines(ctx: TaskContext, lines: list[Line]) -> dict[str, int]:
    """Typed input and output: inputData is a list of lines."""
    _record(ctx)
    return {"qty": sum(line.qty for line in lines)}


@task("itest.bad-output", queue=QUEUE)
def bad_output(ctx: TaskContext) -> dict[str, int]:
    _record(ctx)
    return {"qty": "several"}  # type: ignore[dict-item]  # does not match the annotation


@task("itest.non-json", queue=QUEUE)
def non_json(ctx: TaskContext) -> Any:
    _record(ctx)
    return {1, 2, 3}


@task("itest.async", queue=QUEUE)
async def async_handler(ctx: TaskContext, data: Any) -> Any:
    await asyncio.sleep(0.05)
    return {"async": True, "data": data}


DECLARED_QUEUE = "itest-declared"


@task("itest.declared", queue=DECLARED_QUEUE, max_retries=1, backoff=FAST)
def declared(ctx: TaskContext) -> None:
    """Fails every time: its declared options say how often it runs, and where."""
    _record(ctx)
    raise RuntimeError("declared to fail")
