"""Timeouts stop any handler, and async handlers get awaitable context helpers.

On fakeredis and the real API in process (tests/worker_world.py), as in test_runner.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import fakeredis
import httpx
import pytest
from rq import Queue

from foreman_api.schemas import RunData, TaskStatus
from foreman_worker import AsyncForemanClient, ForemanClient, RetryPolicy, TaskContext, context
from foreman_worker.runner import Outcome
from foreman_worker.timeouts import HandlerStuckError, call_with_timeout
from tests.worker_world import TaskRef, World

TIMEOUT = 0.3
BOUND = TIMEOUT + 2.0
"""A timed-out attempt must be over within its timeout plus two seconds."""


on_sqlite = pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
"""For the tests that use ``world``: the API on SQLite is enough."""


def handler_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "foreman-handler" and t.is_alive()]


def queued_jobs(redis: fakeredis.FakeRedis) -> int:
    """Jobs waiting on any RQ queue (what a queue is named is enqueue's business)."""
    return sum(len(queue) for queue in Queue.all(connection=redis))


def timed_out(world: World, task: TaskRef) -> dict[str, Any]:
    """The task's errorData, after checking it was recorded as a retryable timeout."""
    task = world.get(task)
    assert task.status == TaskStatus.RETRYING
    error = task.error_data
    assert isinstance(error, dict) and error["type"] == "TimeoutError"
    assert error["message"] == f"task exceeded its timeout of {TIMEOUT:g}s"
    return error


# ---- every kind of handler is stopped ---------------------------------------------------


def slow_reads(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the world's run-data reads block for a while, like a sync helper on a slow
    network."""
    read = world.client.get_run_data

    def get_run_data(run_id: Any, key: str) -> Any:
        time.sleep(5)
        return read(run_id, key)

    monkeypatch.setattr(world.client, "get_run_data", get_run_data)


def _sleeps(ctx: TaskContext, done: list[str]) -> None:
    time.sleep(5)
    done.append("sleep")


def _spins(ctx: TaskContext, done: list[str]) -> None:
    end = time.monotonic() + 5
    while time.monotonic() < end:  # pure Python, never waits
        pass
    done.append("spin")


def _swallows(ctx: TaskContext, done: list[str]) -> None:
    end = time.monotonic() + 5
    while time.monotonic() < end:
        with contextlib.suppress(Exception):  # a handler's catch-all must not swallow it
            time.sleep(0.05)
    done.append("swallow")


async def _async_sleeps(ctx: TaskContext, done: list[str]) -> None:
    await asyncio.sleep(0)
    time.sleep(5)  # blocks the event loop: asyncio's own timeout cannot fire
    done.append("async sleep")


async def _async_sync_helper(ctx: TaskContext, done: list[str]) -> None:
    ctx.get("key")  # the blocking twin of `await ctx.aget(...)`
    done.append("async helper")


async def _async_swallows(ctx: TaskContext, done: list[str]) -> None:
    with contextlib.suppress(Exception):
        time.sleep(5)
    done.append("async swallow")


HANDLERS = [_sleeps, _spins, _swallows, _async_sleeps, _async_sync_helper, _async_swallows]


@on_sqlite
@pytest.mark.parametrize("handler", HANDLERS, ids=lambda f: f.__name__.strip("_"))
def test_a_blocking_handler_is_stopped_and_retried(
    world: World, monkeypatch: pytest.MonkeyPatch, handler: Callable[..., Any]
) -> None:
    slow_reads(world, monkeypatch)
    done: list[str] = []

    async def async_slow(ctx: TaskContext) -> None:
        await handler(ctx, done)

    def slow(ctx: TaskContext) -> None:
        handler(ctx, done)

    world.registry.task("slow", timeout=TIMEOUT)(
        async_slow if asyncio.iscoroutinefunction(handler) else slow
    )
    task = world.task("slow")
    start = time.monotonic()
    assert world.run(task) is Outcome.RETRYING
    assert time.monotonic() - start < BOUND
    error = timed_out(world, task)
    assert handler.__name__ in str(error["traceback"])  # where it was stopped
    assert done == []


@on_sqlite
def test_asyncio_cancellation_still_stops_a_waiting_handler(world: World) -> None:
    cleaned: list[str] = []

    @world.registry.task("waits", timeout=TIMEOUT)
    async def waits(ctx: TaskContext) -> None:
        try:
            await asyncio.sleep(5)
        finally:
            cleaned.append("finally")  # cooperative: the handler's cleanup runs

    task = world.task("waits")
    start = time.monotonic()
    assert world.run(task) is Outcome.RETRYING
    assert time.monotonic() - start < TIMEOUT + 0.5
    timed_out(world, task)
    assert cleaned == ["finally"]


def test_a_handler_that_ends_in_time_is_not_disturbed() -> None:
    async def quick() -> int:
        await asyncio.sleep(0.01)
        return 7

    assert call_with_timeout(quick, (), timeout=5, is_async=True) == 7
    assert call_with_timeout(lambda x: x + 1, (1,), timeout=5, is_async=False) == 2

    async def own_timeout() -> None:
        raise TimeoutError("the handler's own")

    with pytest.raises(TimeoutError, match="the handler's own"):
        call_with_timeout(own_timeout, (), timeout=5, is_async=True)


# ---- the alarm -----------------------------------------------------------------------------


@pytest.fixture
def alarm_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every signal.signal(SIGALRM) and setitimer call made during the test."""
    calls: list[str] = []
    real_signal, real_setitimer = signal.signal, signal.setitimer

    def spy_signal(signum: int, handler: Any) -> Any:
        if signum == signal.SIGALRM:
            calls.append("signal")
        return real_signal(signum, handler)

    def spy_setitimer(which: int, seconds: float, interval: float = 0.0) -> Any:
        calls.append("setitimer")
        return real_setitimer(which, seconds, interval)

    monkeypatch.setattr(signal, "signal", spy_signal)
    monkeypatch.setattr(signal, "setitimer", spy_setitimer)
    return calls


@on_sqlite
def test_no_timeout_installs_no_alarm(world: World, alarm_calls: list[str]) -> None:
    seen: list[bool] = []

    @world.registry.task("plain")
    def plain(ctx: TaskContext) -> str:
        seen.append(threading.current_thread() is threading.main_thread())
        return "ok"

    @world.registry.task("plain-async")
    async def plain_async(ctx: TaskContext) -> str:
        seen.append(threading.current_thread() is threading.main_thread())
        return "ok"

    for name in ("plain", "plain-async"):
        assert world.run(world.task(name)) is Outcome.COMPLETED
    assert seen == [True, True]  # run in place, no helper thread
    assert alarm_calls == []


def test_the_previous_alarm_is_restored() -> None:
    fired: list[int] = []

    def mine(signum: int, frame: Any) -> None:
        fired.append(signum)

    previous = signal.signal(signal.SIGALRM, mine)
    previous_timer = signal.setitimer(signal.ITIMER_REAL, 60)
    try:
        with pytest.raises(TimeoutError):
            call_with_timeout(time.sleep, (5,), timeout=0.1, is_async=False)
        assert call_with_timeout(lambda: 1, (), timeout=0.1, is_async=False) == 1
        time.sleep(0.2)  # a tick would have fired by now
        assert signal.getsignal(signal.SIGALRM) is mine
        left, _ = signal.getitimer(signal.ITIMER_REAL)
        assert 59 < left < 60
        assert fired == []
    finally:
        signal.setitimer(signal.ITIMER_REAL, *previous_timer)
        signal.signal(signal.SIGALRM, previous)


# ---- off the main thread ----------------------------------------------------------------


def _in_a_thread(call: Callable[[], Any]) -> tuple[Any, float]:
    """What ``call`` returned or raised, run on a thread other than the main one, and how
    long it took."""
    out: list[Any] = []

    def body() -> None:
        start = time.monotonic()
        try:
            out.append(call())
        except BaseException as exc:
            out.append(exc)
        out.append(time.monotonic() - start)

    thread = threading.Thread(target=body)
    thread.start()
    thread.join()
    return out[0], out[1]


@on_sqlite
def test_off_the_main_thread_a_timed_out_handler_never_overlaps_its_retry(world: World) -> None:
    done: list[str] = []

    @world.registry.task("steps", timeout=TIMEOUT)
    def steps(ctx: TaskContext) -> None:
        for _ in range(40):  # two seconds in short sleeps
            time.sleep(0.05)
        done.append("after the timeout")

    task = world.task("steps")
    outcome, took = _in_a_thread(lambda: world.run(task))
    assert outcome is Outcome.RETRYING and took < BOUND
    timed_out(world, task)
    assert handler_threads() == []  # stopped before the outcome was recorded
    time.sleep(0.3)
    assert done == []


@pytest.mark.parametrize("is_async", [False, True])
def test_off_the_main_thread_busy_and_waiting_handlers_stop(is_async: bool) -> None:
    async def waits() -> None:
        await asyncio.sleep(5)

    def spins() -> None:
        while True:
            pass

    error, took = _in_a_thread(
        lambda: call_with_timeout(waits if is_async else spins, (), timeout=0.2, is_async=is_async)
    )
    assert isinstance(error, TimeoutError) and took < 0.2 + 2
    assert handler_threads() == []


def test_off_the_main_thread_a_handler_that_cannot_be_stopped_is_fatal() -> None:
    done: list[str] = []

    def one_long_c_call() -> None:
        time.sleep(1.0)  # the stop request is seen only when the call returns
        done.append("after the sleep")

    error, took = _in_a_thread(
        lambda: call_with_timeout(one_long_c_call, (), timeout=0.1, is_async=False, grace=0.2)
    )
    assert isinstance(error, HandlerStuckError) and "must exit" in str(error)
    assert not isinstance(error, Exception)  # `except Exception` in the runner lets it pass
    assert took < 0.8
    for thread in handler_threads():
        thread.join(2)
    assert done == []  # it was still stopped, as soon as it could be


# ---- awaitable helpers ----------------------------------------------------------------


class SlowTwin:
    """A handler's async client (the real twin of the world's client) whose calls each
    await ``delay`` first."""

    def __init__(self, twin: AsyncForemanClient, delay: float) -> None:
        self.twin = twin
        self.delay = delay
        self.closed = False

    def __getattr__(self, name: str) -> Callable[..., Any]:
        method = getattr(self.twin, name)

        async def call(*args: Any, **kwargs: Any) -> Any:
            await asyncio.sleep(self.delay)
            return await method(*args, **kwargs)

        return call

    async def close(self) -> None:
        await self.twin.close()
        self.closed = True


@pytest.fixture
def slow_twins(monkeypatch: pytest.MonkeyPatch) -> list[SlowTwin]:
    """The async clients that task contexts make, each answering after 0.2 s or more."""
    made: list[SlowTwin] = []
    real_twin = context._async_twin

    def twin(client: ForemanClient) -> SlowTwin:
        made.append(SlowTwin(real_twin(client), 0.2))
        return made[-1]

    monkeypatch.setattr(context, "_async_twin", twin)
    return made


@on_sqlite
def test_async_helpers_from_an_async_handler(world: World, slow_twins: list[SlowTwin]) -> None:
    @world.registry.task("fan-out", timeout=10)
    async def fan_out(ctx: TaskContext) -> dict[str, Any]:
        await ctx.aput("k", 1, tags=["a"])
        await ctx.aput("k", 2)
        start = time.monotonic()
        latest, missing, entries, found, child = await asyncio.gather(
            ctx.aget("k"),
            ctx.aget("nope", "dflt"),
            ctx.aget_all("k"),
            ctx.aquery(key_starts_with=["k"]),
            ctx.aspawn("child", {"x": 1}),
        )
        return {
            # five calls of 0.2 s: 1 s one after the other
            "overlapped": time.monotonic() - start < 0.6,
            "latest": latest,
            "missing": missing,
            "all": [e.value for e in entries],
            "found": len(found),
            "child": str(child.id),
        }

    task = world.task("fan-out")
    assert world.run(task) is Outcome.COMPLETED
    out = world.get(task).output_data
    assert isinstance(out, dict) and out["overlapped"] is True
    assert out["latest"] == 2 and out["missing"] == "dflt" and out["all"] == [2, 1]
    assert out["found"] == 1  # the latest entry of key k
    child = world.get(str(out["child"]))
    assert child.parent_task_id == task.id and child.status == TaskStatus.QUEUED
    entries = world.client.get_all_run_data(world.run_id, "k").unwrap()
    assert [str(e.task_id) for e in entries] == [str(task.id)] * 2
    assert queued_jobs(world.redis) == 1
    assert len(slow_twins) == 1 and slow_twins[0].closed  # one per attempt, then closed


@on_sqlite
def test_awaiting_a_helper_leaves_the_event_loop_free(
    world: World, slow_twins: list[SlowTwin]
) -> None:
    @world.registry.task("ticks")
    async def ticks(ctx: TaskContext) -> int:
        count = 0

        async def tick() -> None:
            nonlocal count
            while True:
                count += 1
                await asyncio.sleep(0.01)

        ticker = asyncio.create_task(tick())
        await ctx.aget("k")
        ticker.cancel()
        return count

    task = world.task("ticks")
    assert world.run(task) is Outcome.COMPLETED
    ticked = world.get(task).output_data
    assert isinstance(ticked, int) and ticked >= 5


def test_the_default_async_client_has_the_sync_clients_settings() -> None:
    policy = RetryPolicy.none()
    with ForemanClient("http://api.test/api/v1", "k-123", timeout=3, retry=policy) as sync:
        twin = context._async_twin(sync)
    assert isinstance(twin, AsyncForemanClient)
    assert twin.base_url == "http://api.test" and twin.retry is policy
    assert twin._settings.auth == {"Authorization": "Bearer k-123"}
    assert twin._http.timeout == httpx.Timeout(3)
    asyncio.run(twin.close())


@pytest.fixture
def app_clients(api: Any) -> Iterator[tuple[ForemanClient, AsyncForemanClient]]:
    key = api.key("*")
    transport = httpx.ASGITransport(app=api.client.app)
    with ForemanClient("http://testserver", key, transport=api.client._transport) as sync:
        yield sync, AsyncForemanClient("http://testserver", key, transport=transport)


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_async_helpers_against_the_app(
    app_clients: tuple[ForemanClient, AsyncForemanClient],
) -> None:
    sync, async_client = app_clients
    redis = fakeredis.FakeRedis()
    run_ = sync.create_run({"n": 1}).unwrap()
    task = sync.create_task(run_.id, "parent").unwrap()
    ctx = TaskContext(task, client=sync, connection=redis, async_client=async_client)

    async def handler() -> tuple[Any, ...]:
        try:
            stored = await ctx.aput("k", {"v": 1}, tags=["t"], metadata={"m": 1})
            await ctx.aput("k", {"v": 2})
            return (
                stored,
                await ctx.aget("k"),
                await ctx.aget("missing", 0),
                await ctx.aget_all("k"),
                await ctx.aquery(tags=["t"], include_all=True),
                await ctx.aspawn("child", [1], max_retries=1),
            )
        finally:
            await async_client.close()

    stored, latest, missing, entries, tagged, child = asyncio.run(handler())
    assert isinstance(stored, RunData) and stored.task_id == task.id and stored.tags == ["t"]
    assert latest == {"v": 2} and missing == 0
    assert [e.value for e in entries] == [{"v": 2}, {"v": 1}]
    assert [e.value for e in tagged] == [{"v": 1}]
    assert ctx.get("k") == latest  # the sync twin agrees
    fetched = sync.get_task(child.id).unwrap()
    assert fetched.parent_task_id == task.id and fetched.status == TaskStatus.QUEUED
    assert fetched.max_retries == 1
    assert queued_jobs(redis) == 1
