"""foreman_worker.testing: users' handlers run in process against the real API and worker,
with a clock the harness moves (retries, timeouts, spawn, run data, errors)."""

from __future__ import annotations

import asyncio
import itertools
import signal
import subprocess
import sys
import time
from datetime import timedelta
from typing import Any

import pytest
from pydantic import BaseModel

from foreman_api import clock as api_clock
from foreman_api.schemas import RunStatus, TaskStatus
from foreman_worker import Backoff, Fail, TaskContext
from foreman_worker import runtime as runtime_module
from foreman_worker.registry import Registry
from foreman_worker.testing import Foreman, NotIdleError

pytest_plugins = ["pytester"]


@pytest.fixture
def foreman_registry() -> Registry:
    """Each test declares its handlers in a registry of its own (the plugin's hook)."""
    return Registry()


class Item(BaseModel):
    sku: str
    quantity: int


def error_of(value: Any) -> dict[str, Any]:
    assert isinstance(value, dict)
    return value


def test_a_run_with_several_tasks_and_children_completes(
    foreman: Foreman, foreman_registry: Registry
) -> None:
    seen: list[str] = []

    @foreman_registry.task("split")
    def split(ctx: TaskContext, data: dict[str, list[dict[str, Any]]]) -> int:
        seen.append(ctx.type)
        for item in data["items"]:
            ctx.spawn("pack", item)
        return len(data["items"])

    @foreman_registry.task("pack")
    def pack(ctx: TaskContext, item: Item) -> str:
        seen.append(ctx.type)
        ctx.spawn("label", {"sku": item.sku})
        return f"{item.quantity}x{item.sku}"

    @foreman_registry.task("label")
    async def label(ctx: TaskContext, data: dict[str, str]) -> str:
        seen.append(ctx.type)
        await asyncio.sleep(0)
        return f"label-{data['sku']}"

    items = [{"sku": "a", "quantity": 1}, {"sku": "b", "quantity": 2}]
    first = foreman.submit("split", {"items": items})
    assert foreman.run_until_idle() == 5
    assert sorted(seen) == ["label", "label", "pack", "pack", "split"]

    assert foreman.task(first).output_data == 2
    packs = foreman.children(first)
    assert [p.output_data for p in packs] == ["1xa", "2xb"]
    labels = [foreman.children(p)[0] for p in packs]
    assert [t.output_data for t in labels] == ["label-a", "label-b"]
    tasks = foreman.tasks(first.run_id)
    assert len(tasks) == 5 and {t.status for t in tasks} == {TaskStatus.COMPLETED}
    assert len(foreman.tasks(first.run_id, type="label")) == 2
    run = foreman.get_run(first.run_id)
    assert run.completed_tasks == 5 and run.failed_tasks == 0
    assert run.status is RunStatus.COMPLETED
    assert foreman.run_until_idle() == 0  # idle: nothing left to run


def test_a_retry_after_a_long_backoff_takes_no_wall_time(
    foreman: Foreman, foreman_registry: Registry
) -> None:
    @foreman_registry.task("flaky", max_retries=3, backoff=Backoff(initial=30, maximum=300))
    def flaky(ctx: TaskContext) -> dict[str, int]:
        if ctx.attempt < 3:
            raise ConnectionError(f"upstream down (attempt {ctx.attempt})")
        return {"attempt": ctx.attempt}

    started = time.monotonic()
    task = foreman.submit("flaky")
    assert foreman.run_until_idle() == 3
    assert time.monotonic() - started < 10  # backoffs of 15-30 s and 30-60 s, skipped

    done = foreman.task(task)
    assert done.status is TaskStatus.COMPLETED and done.output_data == {"attempt": 3}
    assert done.retry_count == 2
    attempts = foreman.attempts(task)
    assert [a.outcome for a in attempts] == ["retrying", "retrying", "completed"]
    assert [error_of(a.error)["message"] for a in attempts[:2]] == [
        "upstream down (attempt 1)",
        "upstream down (attempt 2)",
    ]
    assert attempts[2].error is None
    # each retry started only after its backoff had passed on the harness's clock
    for failed, retry in itertools.pairwise(attempts):
        assert failed.finished_at is not None
        assert retry.started_at - failed.finished_at >= timedelta(seconds=15)
    assert foreman.clock.offset >= timedelta(seconds=45)


def fails_once(registry: Registry, type_: str, backoff: float) -> None:
    """Register ``type_``: its first attempt fails, the next returns its attempt number."""

    @registry.task(type_, backoff=Backoff(initial=backoff, maximum=backoff))
    def handler(ctx: TaskContext) -> int:
        if ctx.attempt == 1:
            raise RuntimeError("first time unlucky")
        return ctx.attempt


def test_without_time_skipping_a_retry_waits_for_the_clock(foreman_registry: Registry) -> None:
    fails_once(foreman_registry, "once-flaky", backoff=60)
    with Foreman(foreman_registry, skip_time=False) as foreman:
        task = foreman.submit("once-flaky")
        assert foreman.run_until_idle() == 1
        waiting = foreman.task(task)
        assert waiting.status is TaskStatus.RETRYING and waiting.retry_at is not None
        foreman.advance(29)  # the jittered wait is 30-60 s: not due yet
        assert foreman.run_until_idle() == 0
        assert foreman.task(task).status is TaskStatus.RETRYING
        foreman.advance(31)
        assert foreman.run_until_idle() == 1
        assert foreman.task(task).output_data == 2


def test_time_is_skipped_only_when_nothing_else_can_run(foreman_registry: Registry) -> None:
    fails_once(foreman_registry, "later", backoff=60)
    foreman_registry.task("now")(lambda ctx: "done")
    with Foreman(foreman_registry, skip_time=False) as foreman:
        retried = foreman.submit("later")
        foreman.run_until_idle()
        due = foreman.task(retried).retry_at
        assert due is not None
        ready = foreman.submit("now")
        assert foreman.run_until_idle(skip_time=True) == 2
        finished = foreman.task(ready).completed_at
        assert finished is not None and finished < due  # it ran before the jump
        assert foreman.task(retried).output_data == 2


def test_a_handler_timeout_fails_the_attempt_and_is_retried(
    foreman: Foreman, foreman_registry: Registry
) -> None:
    calls: list[int] = []

    @foreman_registry.task("hangs", timeout=30, max_retries=1)
    def hangs(ctx: TaskContext) -> None:
        calls.append(ctx.attempt)
        time.sleep(60)

    foreman.timeouts["hangs"] = 0.05  # its 30 s, shortened for the test
    started = time.monotonic()
    task = foreman.submit("hangs")
    foreman.run_until_idle()
    assert time.monotonic() - started < 10
    failed = foreman.task(task)
    assert calls == [1, 2] and failed.status is TaskStatus.FAILED
    error = error_of(failed.error_data)
    assert error["type"] == "TimeoutError"
    assert error["message"] == "task exceeded its timeout of 0.05s"
    assert [a.outcome for a in foreman.attempts(task)] == ["retrying", "failed"]


def test_run_data_is_written_by_one_task_and_read_by_another(
    foreman: Foreman, foreman_registry: Registry
) -> None:
    @foreman_registry.task("quote")
    def quote(ctx: TaskContext, data: dict[str, int]) -> None:
        ctx.put("price", data["cents"], tags=["draft"])
        ctx.put("price", data["cents"] + 100, tags=["final"])
        ctx.spawn("invoice")

    @foreman_registry.task("invoice")
    async def invoice(ctx: TaskContext) -> dict[str, Any]:
        price = await ctx.aget("price")
        await ctx.aput("invoice", {"cents": price})
        entries = await ctx.aget_all("price")
        return {"price": price, "versions": len(entries)}

    first = foreman.submit("quote", {"cents": 900})
    foreman.run_until_idle()
    (child,) = foreman.children(first)
    assert foreman.task(child).output_data == {"price": 1000, "versions": 2}
    assert foreman.data(first.run_id, "invoice") == {"cents": 1000}
    assert foreman.data(first.run_id, "missing", "none") == "none"
    entries = foreman.data_entries(first.run_id, "price")
    assert [(e.value, e.tags, str(e.task_id)) for e in entries] == [
        (1000, ["final"], str(first.id)),
        (900, ["draft"], str(first.id)),
    ]


def test_a_failed_tasks_error_and_traceback_are_visible(
    foreman: Foreman, foreman_registry: Registry
) -> None:
    @foreman_registry.task("divide", max_retries=0)
    def divide(ctx: TaskContext, data: dict[str, int]) -> float:
        return data["a"] / data["b"]

    @foreman_registry.task("refuse")
    def refuse(ctx: TaskContext) -> None:
        raise Fail("not today")

    run = foreman.create_run({"batch": 1})
    task = foreman.submit("divide", {"a": 1, "b": 0}, run=run)
    refused = foreman.submit("refuse", run=run)
    unknown = foreman.submit("nobody-handles-this", run=run)
    foreman.run_until_idle()

    failed = foreman.task(task)
    assert failed.status is TaskStatus.FAILED and failed.run_id == run.id
    error = error_of(failed.error_data)
    assert error["type"] == "ZeroDivisionError" and error["message"] == "division by zero"
    assert "in divide" in error["traceback"] and 'data["a"] / data["b"]' in error["traceback"]
    (attempt,) = foreman.attempts(task)
    assert attempt.outcome == "failed" and error_of(attempt.error)["type"] == "ZeroDivisionError"
    assert attempt.worker_id == "foreman-testing"
    assert error_of(foreman.task(refused).error_data)["type"] == "Fail"
    assert foreman.task(refused).retry_count == 0  # Fail is final
    assert error_of(foreman.task(unknown).error_data)["type"] == "UnknownTaskType"
    assert foreman.get_run(run).failed_tasks == 3


def test_invalid_input_fails_at_once_naming_the_field(
    foreman: Foreman, foreman_registry: Registry
) -> None:
    @foreman_registry.task("stock")
    def stock(ctx: TaskContext, item: Item) -> int:
        return item.quantity

    task = foreman.submit("stock", {"sku": "a", "quantity": "many"})
    assert foreman.run_until_idle() == 1
    error = error_of(foreman.task(task).error_data)
    assert error["type"] == "InvalidInput" and "quantity" in error["message"]


def test_handler_options_apply_to_tasks_submitted_without_them(
    foreman: Foreman, foreman_registry: Registry
) -> None:
    @foreman_registry.task("mail", queue="mail", max_retries=0)
    def mail(ctx: TaskContext) -> None:
        raise RuntimeError("smtp down")

    task = foreman.submit("mail")
    assert task.queue == "mail" and task.max_retries == 0
    foreman.run_until_idle()
    assert foreman.task(task).status is TaskStatus.FAILED


def test_work_that_never_ends_is_reported(foreman: Foreman, foreman_registry: Registry) -> None:
    @foreman_registry.task("forever")
    def forever(ctx: TaskContext) -> None:
        ctx.spawn("forever")

    foreman.submit("forever")
    with pytest.raises(NotIdleError, match="5 jobs ran"):
        foreman.run_until_idle(max_jobs=5)


def test_closing_puts_back_the_clock_the_runtime_and_the_signal_handlers(
    foreman_registry: Registry,
) -> None:
    foreman_registry.task("noop")(lambda ctx: None)
    sigint, sigterm = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    before = runtime_module.installed()
    with Foreman(foreman_registry) as foreman:
        foreman.advance(3600)
        assert api_clock.utcnow() - foreman.clock.now() < timedelta(seconds=1)
        task = foreman.submit("noop")
        foreman.run_until_idle()
        assert foreman.task(task).created_at - api_clock.utcnow() < timedelta(seconds=1)
        assert foreman.task(task).created_at - api_clock._system_now() > timedelta(minutes=59)
        assert signal.getsignal(signal.SIGINT) is sigint
        assert signal.getsignal(signal.SIGTERM) is sigterm
        assert runtime_module.installed() is before
    assert abs(api_clock.utcnow() - api_clock._system_now()) < timedelta(seconds=1)


def test_two_harnesses_do_not_share_anything(foreman_registry: Registry) -> None:
    foreman_registry.task("noop")(lambda ctx: None)
    with Foreman(foreman_registry) as one, Foreman(foreman_registry, org="other") as two:
        assert one.clock is two.clock  # one process, one API time
        task = one.submit("noop")
        assert two.run_until_idle() == 0
        assert two.tasks() == []
        assert one.run_until_idle() == 1
        assert one.task(task).status is TaskStatus.COMPLETED


def test_harnesses_keep_the_apis_time_until_the_last_one_closes(
    foreman_registry: Registry,
) -> None:
    first = Foreman(foreman_registry)
    with Foreman(foreman_registry) as last:
        first.close()  # not the last opened
        last.advance(3600)
        assert api_clock.utcnow() - api_clock._system_now() > timedelta(minutes=59)
    assert abs(api_clock.utcnow() - api_clock._system_now()) < timedelta(seconds=1)


def test_importing_the_harness_does_not_import_the_server_stack() -> None:
    code = (
        "import sys, foreman_worker, foreman_worker.testing, foreman_worker.testing.pytest_plugin\n"
        "heavy = ('fastapi', 'sqlalchemy', 'alembic', 'uvicorn', 'psycopg', 'fakeredis',"
        " 'foreman_api.app')\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in heavy or m in heavy))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"


def test_the_fixture_is_a_pytest_plugin(pytester: pytest.Pytester) -> None:
    """A project that installed Foreman gets the ``foreman`` fixture without importing it."""
    pytester.makepyfile(
        """
        from foreman_worker import TaskContext
        from foreman_worker.registry import Registry
        import pytest

        @pytest.fixture
        def foreman_registry():
            registry = Registry()
            registry.task("hello")(lambda ctx, name: f"hello {name}")
            return registry

        def test_hello(foreman):
            task = foreman.submit("hello", "ada")
            foreman.run_until_idle()
            assert foreman.task(task).output_data == "hello ada"
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-W", "error")
    result.assert_outcomes(passed=1)
