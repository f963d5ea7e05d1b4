"""What the workers of ``bench/worker_bench.py`` import: the raw RQ job and the Foreman handler.

Both do nothing but note *when* they ran, cheaply: the first job a process runs pushes its
start time to ``bench:firsts`` (one Redis call per process), every job updates a module
global, and at interpreter exit (burst mode, SIGTERM) the process pushes its last finish
time to ``bench:lasts``. The benchmark's rate is N / (max(lasts) - min(firsts)): first
dequeue to last finish, without process start-up and shut-down.

With ``FOREMAN_BENCH_TIMING=1`` a Foreman worker also times the phases of every job
(claim, handler, complete, the rest of the runner, RQ's own work around the job, and the
loop between jobs) and pushes the totals to ``bench:timing`` at exit.

Every Foreman worker (``FOREMAN_BENCH_CALLS=1``, set by the benchmark) also counts what it
sends to the API, by call (claim, complete, lease renewal, registration, reconcile, ...),
with their wall time and refusals, and the CPU of each of its background threads (lease
keeper, reconciler, registration, scheduler, RQ heartbeat: ``time.thread_time`` when a
loop ends, ``/proc/self/task`` for threads still alive at exit); it pushes them to
``bench:calls`` at exit. That costs a lock, a counter and two clock reads per API call.
"""

from __future__ import annotations

import atexit
import json
import os
import threading
import time
from collections.abc import Callable
from typing import Any

import redis

from foreman_worker import TaskContext, task

QUEUE = "bench"
_state: dict[str, float] = {"first": 0.0, "last": 0.0, "jobs": 0}


def _redis() -> redis.Redis:
    return redis.Redis.from_url(os.environ["BENCH_REDIS_URL"])


def _report() -> None:
    if not _state["jobs"]:
        return
    conn = _redis()
    conn.rpush("bench:lasts", json.dumps({"pid": os.getpid(), **_state}))
    if _timing:
        conn.rpush("bench:timing", json.dumps({"pid": os.getpid(), **_timing}))
    if _calls:
        _thread_cpu()
        conn.rpush("bench:calls", json.dumps({"pid": os.getpid(), **_calls}))
    conn.close()


def _mark() -> None:
    now = time.time()
    if not _state["jobs"]:
        _state["first"] = now
        conn = _redis()
        conn.rpush("bench:firsts", now)
        conn.close()
        atexit.register(_report)
    _state["jobs"] += 1
    _state["last"] = now


def noop() -> None:
    """The raw RQ job."""
    _mark()


def stamp(key: str) -> None:
    """The raw RQ latency case's job: notes when it started, under ``key``."""
    started = time.time()  # before connecting: the job's own set-up is not latency
    conn = _redis()
    conn.hset("bench:started", key, started)
    conn.close()


@task("bench.noop", queue=QUEUE)
def foreman_noop(ctx: TaskContext) -> None:
    """The Foreman handler: no input, no output."""
    _mark()


@task("bench.stamp", queue=QUEUE)
def foreman_stamp(ctx: TaskContext) -> None:
    """The latency case's handler: notes when it started, by task id."""
    stamp(ctx.task_id)


# ---- optional per-phase timing of a Foreman worker ------------------------------------

_timing: dict[str, float] = {}


def _add(name: str, seconds: float) -> None:
    _timing[name] = _timing.get(name, 0.0) + seconds


def _timed(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return func(*args, **kwargs)
        finally:
            _add(name, time.perf_counter() - start)

    return wrapper


def _install_timing() -> None:
    from foreman_api.schemas import TaskStatus
    from foreman_worker.client import ForemanClient
    from foreman_worker.runner import Runner
    from foreman_worker.worker import ForemanWorker

    update_task = ForemanClient.update_task

    def timed_update(self: ForemanClient, task_id: Any, **kwargs: Any) -> Any:
        name = "claim" if kwargs.get("status") == TaskStatus.RUNNING else "complete"
        start = time.perf_counter()
        try:
            return update_task(self, task_id, **kwargs)
        finally:
            _add(name, time.perf_counter() - start)

    ForemanClient.update_task = timed_update  # type: ignore[method-assign]
    Runner.run = _timed("runner", Runner.run)  # type: ignore[method-assign]
    Runner._call = _timed("handler", Runner._call)  # type: ignore[method-assign]
    execute_job = ForemanWorker.execute_job

    def timed_execute(self: ForemanWorker, job: Any, queue: Any) -> None:
        start = time.perf_counter()
        if "loop_end" in _timing:
            _add("between_jobs", start - _timing["loop_end"])
        else:
            _timing["loop_start"] = start
        try:
            execute_job(self, job, queue)
        finally:
            end = time.perf_counter()
            _add("execute_job", end - start)
            _add("jobs", 1)
            _timing["loop_end"] = end

    ForemanWorker.execute_job = timed_execute  # type: ignore[method-assign]


if os.environ.get("FOREMAN_BENCH_TIMING") == "1":
    _install_timing()


# ---- API calls and background-thread CPU of a Foreman worker ---------------------------

_calls: dict[str, float] = {}
_calls_lock = threading.Lock()


def _count(name: str, seconds: float, n: float = 1) -> None:
    with _calls_lock:
        _calls[name] = _calls.get(name, 0) + n
        _calls[f"{name}.s"] = _calls.get(f"{name}.s", 0.0) + seconds


def _cpu(thread: str, seconds: float) -> None:
    with _calls_lock:
        _calls[f"cpu:{thread}"] = _calls.get(f"cpu:{thread}", 0.0) + seconds


def _call_name(build: Any, kwargs: dict[str, Any]) -> str:
    name = str(getattr(build, "__name__", build))
    if name == "update_task":
        status = str(getattr(kwargs.get("status"), "value", kwargs.get("status")))
        return {"running": "claim", "completed": "complete"}.get(status, f"update:{status}")
    return name


def _install_counting() -> None:
    """Count API calls (and their wall time) and background-thread CPU, per worker process."""
    from foreman_worker.client import ForemanClient

    call = ForemanClient._call

    def counted_call(self: ForemanClient, build: Any, /, *args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        result = call(self, build, *args, **kwargs)
        name = _call_name(build, kwargs)
        _count(name, time.perf_counter() - start)
        if getattr(result, "error", None) is not None:
            status = getattr(result.error, "status", None)
            _count(f"{name} refused ({status})", 0.0)
        return result

    ForemanClient._call = counted_call  # type: ignore[method-assign]

    try:
        from foreman_worker.worker import ForemanWorker
    except ImportError:
        return
    loop = ForemanWorker._loop

    def timed_loop(self: ForemanWorker, *args: Any, **kwargs: Any) -> Any:
        try:
            return loop(self, *args, **kwargs)
        finally:  # the thread's whole life: its CPU so far is all it will spend
            _cpu(threading.current_thread().name, time.thread_time())
            _threads_counted.add(threading.get_native_id())

    ForemanWorker._loop = timed_loop  # type: ignore[method-assign]


_threads_counted: set[int] = set()


def _thread_cpu() -> None:
    """At exit: the CPU of this process's threads still alive (e.g. the lease keeper)."""
    tick = os.sysconf("SC_CLK_TCK")
    _cpu("main thread", time.thread_time())  # atexit runs on the main thread
    for thread in threading.enumerate():
        tid = thread.native_id
        if thread is threading.main_thread() or tid is None or tid in _threads_counted:
            continue
        try:
            with open(f"/proc/self/task/{tid}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        _cpu(thread.name, (int(fields[11]) + int(fields[12])) / tick)


if os.environ.get("FOREMAN_BENCH_CALLS") == "1":
    _install_counting()
