"""@task registration rules: checked when the decorator runs, not when a task arrives."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel

import foreman_worker
from foreman_worker import RegistrationError, TaskContext
from foreman_worker.registry import Backoff, Registry


class Order(BaseModel):
    order_id: str
    amount: float


@pytest.fixture
def reg() -> Registry:
    return Registry()


def test_registers_and_keeps_the_function_callable(reg: Registry) -> None:
    @reg.task("add", queue="math", max_retries=2, timeout=5, backoff=0.5)
    def add(ctx: Any, data: dict[str, int]) -> int:
        return data["a"] + data["b"]

    assert add(None, {"a": 1, "b": 2}) == 3
    handler = reg.get("add")
    assert handler is not None
    assert (handler.queue, handler.max_retries, handler.timeout) == ("math", 2, 5.0)
    assert handler.backoff.initial == 0.5
    assert handler.takes_input and handler.input_model is None and not handler.is_async
    assert reg.queues() == ["math"]


def test_input_model_and_async_are_detected(reg: Registry) -> None:
    @reg.task("charge")
    async def charge(ctx: TaskContext, order: Order) -> None:
        return None

    @reg.task("ping")
    def ping(ctx: TaskContext) -> str:
        return "pong"

    charge_handler, ping_handler = reg.get("charge"), reg.get("ping")
    assert charge_handler is not None and ping_handler is not None
    assert charge_handler.input_model is Order and charge_handler.is_async
    assert not ping_handler.takes_input
    assert charge_handler.queue == "default"


def test_duplicate_type_is_rejected(reg: Registry) -> None:
    @reg.task("dup")
    def first(ctx: Any) -> None: ...

    with pytest.raises(RegistrationError, match="already registered"):

        @reg.task("dup")
        def second(ctx: Any) -> None: ...


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"queue": "bad queue"}, "queue name"),
        ({"queue": ""}, "queue name"),
        ({"queue": "x" * 65}, "queue name"),
        ({"max_retries": -1}, "max_retries"),
        ({"max_retries": 11}, "max_retries"),
        ({"max_retries": 1.5}, "max_retries"),
        ({"max_retries": True}, "max_retries"),
        ({"timeout": 0}, "timeout"),
        ({"timeout": float("inf")}, "timeout"),
        ({"timeout": "10"}, "timeout"),
        ({"backoff": -1}, "backoff"),
        ({"retries": 3}, "unknown option"),
    ],
)
def test_bad_options_are_rejected(reg: Registry, options: dict[str, Any], message: str) -> None:
    with pytest.raises(RegistrationError, match=message):
        reg.task("t", **options)(lambda ctx: None)
    assert "t" not in reg


@pytest.mark.parametrize("type_", ["", " padded ", "x" * 256])
def test_bad_type_is_rejected(reg: Registry, type_: str) -> None:
    with pytest.raises(RegistrationError, match="task type"):
        reg.task(type_)(lambda ctx: None)


def test_bad_signature_is_rejected(reg: Registry) -> None:
    with pytest.raises(RegistrationError, match=r"\(ctx\) or \(ctx, data\)"):
        reg.task("three")(lambda ctx, a, b: None)
    with pytest.raises(RegistrationError, match=r"\(ctx\) or \(ctx, data\)"):
        reg.task("none")(lambda: None)


def test_backoff_ceiling_is_exponential_and_capped() -> None:
    backoff = Backoff(initial=1, factor=2, maximum=5)
    assert [backoff.ceiling(n) for n in (1, 2, 3, 4, 100000)] == [1, 2, 4, 5, 5]
    with pytest.raises(RegistrationError):
        Backoff(initial=10, maximum=1)


def test_public_surface_is_sorted_and_complete() -> None:
    names = foreman_worker.__all__
    assert names == sorted(names, key=lambda n: (n[0].islower(), n))
    for name in names:
        assert hasattr(foreman_worker, name)


# ---- annotations (foreman_worker/validation.py) ----------------------------------------


def test_types_local_to_the_registering_function_resolve() -> None:
    class Local(BaseModel):
        n: int

    reg = Registry()

    @reg.task("local")
    def local(ctx: TaskContext, data: Local) -> Local:
        return data

    handler = reg.get("local")
    assert handler is not None and handler.input_model is Local
    assert handler.types.output is not None and handler.types.output.annotation is Local


def _register_elsewhere(reg: Registry, func: Any) -> None:
    Order = int  # a local of the registering function, not of the handler's scope
    assert Order is int
    reg.task("elsewhere")(func)


def test_names_of_a_function_that_registers_the_handler_do_not_shadow_its_own() -> None:
    reg = Registry()

    def handler(ctx: TaskContext, data: Order) -> None: ...

    _register_elsewhere(reg, handler)
    found = reg.get("elsewhere")
    assert found is not None and found.input_model is Order


def test_an_annotation_that_cannot_be_resolved_is_a_registration_error() -> None:
    reg = Registry()
    with pytest.raises(
        RegistrationError, match=r"cannot resolve the annotation of 'data'.*Nowhere"
    ):

        @reg.task("unresolved")
        def unresolved(ctx: TaskContext, data: Nowhere) -> None:  # type: ignore[name-defined]  # noqa: F821
            ...

    with pytest.raises(RegistrationError, match="cannot resolve the return annotation"):

        @reg.task("unresolved-return")
        def unresolved_return(ctx: TaskContext) -> Nowhere:  # type: ignore[name-defined]  # noqa: F821
            ...

    assert len(reg) == 0


def test_a_type_pydantic_cannot_validate_is_a_registration_error() -> None:
    class Opaque:
        pass

    reg = Registry()
    with pytest.raises(
        RegistrationError, match=r"pydantic cannot validate the annotation of 'data' \(Opaque\)"
    ):

        @reg.task("opaque")
        def opaque(ctx: TaskContext, data: Opaque) -> None: ...

    assert "opaque" not in reg


def test_the_context_annotation_is_not_read() -> None:
    """Only ``data`` and the return value are read: ``ctx`` may name a type that exists only
    under TYPE_CHECKING."""
    reg = Registry()

    @reg.task("ctx-only-for-type-checkers")
    def handler(ctx: OnlyForTypeCheckers, data: int) -> int:  # type: ignore[name-defined]  # noqa: F821
        return data

    found = reg.get("ctx-only-for-type-checkers")
    assert found is not None and found.types.input is not None
