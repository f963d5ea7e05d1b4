"""Handler input and output checked against the annotations (foreman_worker/validation.py):
models, dataclasses, TypedDicts, generics and scalars; invalid input fails once, without
retry, naming the field; a return value that does not match fails the attempt. In process,
on the real API and fakeredis (tests/worker_world.py)."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Annotated, Any, Optional

import pytest
from pydantic import BaseModel, Field
from typing_extensions import TypedDict

from foreman_api.schemas import Task, TaskStatus
from foreman_worker import TaskContext
from foreman_worker import validation as validation_module
from foreman_worker.runner import Outcome
from foreman_worker.validation import MAX_FIELD_ERRORS
from tests.worker_world import World

pytestmark = pytest.mark.parametrize("backend", ["sqlite"], indirect=True)


class Customer(BaseModel):
    name: str
    vip: bool = False


class Line(BaseModel):
    sku: str
    qty: int


class Order(BaseModel):
    customer: Customer
    lines: list[Line]
    note: str | None = None


@dataclasses.dataclass
class Item:
    sku: str
    qty: int = 1


@dataclasses.dataclass
class Parcel:
    items: list[Item]
    weight: float


class Address(TypedDict):
    street: str
    zip: int


class Shipment(TypedDict):
    to: Address
    parcels: list[Parcel]


@dataclasses.dataclass(frozen=True)
class Limits:
    limit: int = 10
    dry_run: bool = False


DEFAULT_LIMITS = Limits()


def failed_once(world: World, task: Task, error_type: str) -> dict[str, Any]:
    """The task failed on its first attempt, retries left unused; its errorData."""
    done = world.get(task)
    assert (done.status, done.retry_count, done.max_retries) == (TaskStatus.FAILED, 0, 3)
    attempts = world.client.list_attempts(task.id).unwrap().data
    assert [(a.number, a.outcome) for a in attempts] == [(1, "failed")]
    error = done.error_data
    assert isinstance(error, dict) and error["type"] == error_type and error["attempt"] == 1
    assert attempts[0].error == error
    return error


def run_with_input(
    world: World, annotation: Any, input_data: Any
) -> tuple[Outcome, Task, list[object]]:
    """Run a task of a handler ``(ctx, data: annotation)``: its outcome, the task, and the
    ``data`` the handler was called with."""
    seen: list[object] = []

    def handler(ctx: TaskContext, data: annotation) -> None:  # type: ignore[valid-type]
        seen.append(data)

    world.registry.task("typed")(handler)
    task = world.task("typed", input_data)
    return world.run(task), task, seen


# ---- valid input: each kind of annotation ------------------------------------------------


ORDER = {"customer": {"name": "Ada"}, "lines": [{"sku": "a", "qty": "2"}, {"sku": "b", "qty": 1}]}
SHIPMENT = {
    "to": {"street": "Main St", "zip": "1000"},
    "parcels": [{"items": [{"sku": "a"}, {"sku": "b", "qty": 3}], "weight": 2}],
}


@pytest.mark.parametrize(
    ("annotation", "input_data", "expected"),
    [
        pytest.param(
            Order,
            ORDER,
            Order(
                customer=Customer(name="Ada"),
                lines=[Line(sku="a", qty=2), Line(sku="b", qty=1)],
            ),
            id="nested-model",
        ),
        pytest.param(
            Parcel,
            {"items": [{"sku": "a", "qty": "4"}], "weight": "1.5"},
            Parcel(items=[Item("a", 4)], weight=1.5),
            id="nested-dataclass",
        ),
        pytest.param(
            Shipment,
            SHIPMENT,
            {
                "to": {"street": "Main St", "zip": 1000},
                "parcels": [Parcel(items=[Item("a", 1), Item("b", 3)], weight=2.0)],
            },
            id="typeddict-of-dataclasses",
        ),
        pytest.param(dict[str, int], {"a": 1, "b": "2"}, {"a": 1, "b": 2}, id="dict-str-int"),
        pytest.param(list[Item], [{"sku": "x"}], [Item("x", 1)], id="list-of-dataclass"),
        pytest.param(int, "42", 42, id="int"),
        pytest.param(str, "hello", "hello", id="str"),
        pytest.param(Optional[int], None, None, id="optional-none"),  # noqa: UP045
        pytest.param(int | None, 7, 7, id="int-or-none"),
        pytest.param(Customer | None, {"name": "Bo"}, Customer(name="Bo"), id="optional-model"),
        pytest.param(Annotated[int, Field(gt=0)], 5, 5, id="annotated-constraint"),
    ],
)
def test_valid_input_is_validated_into_the_annotation(
    world: World, annotation: Any, input_data: Any, expected: Any
) -> None:
    outcome, _, seen = run_with_input(world, annotation, input_data)
    assert outcome is Outcome.COMPLETED
    assert seen == [expected]
    assert type(seen[0]) is type(expected)


def test_model_defaults_and_optional_fields_are_filled(world: World) -> None:
    seen: list[Order] = []

    @world.registry.task("order")
    def order(ctx: TaskContext, data: Order) -> None:
        seen.append(data)

    assert world.run(world.task("order", {"customer": {"name": "Ada"}, "lines": []})) is (
        Outcome.COMPLETED
    )
    assert seen == [Order(customer=Customer(name="Ada", vip=False), lines=[], note=None)]


def test_null_input_gives_the_parameter_its_default(world: World) -> None:
    seen: list[Limits] = []

    @world.registry.task("limits")
    def limits(ctx: TaskContext, data: Limits = DEFAULT_LIMITS) -> int:
        seen.append(data)
        return data.limit

    assert world.run(world.task("limits")) is Outcome.COMPLETED  # no inputData: null
    assert world.run(world.task("limits", {"limit": "5"}), job_id="job-2") is Outcome.COMPLETED
    assert seen == [DEFAULT_LIMITS, Limits(limit=5)]
    assert seen[0] is DEFAULT_LIMITS


def test_without_a_default_null_input_is_invalid(world: World) -> None:
    @world.registry.task("limits")
    def limits(ctx: TaskContext, data: Limits) -> None: ...

    task = world.task("limits")
    assert world.run(task) is Outcome.FAILED
    error = failed_once(world, task, "InvalidInput")
    assert error["errors"] == [
        {"field": None, "message": "Input should be a dictionary or an instance of Limits"}
    ]


# ---- invalid input: fails once, names the field -----------------------------------------


@pytest.mark.parametrize(
    ("annotation", "input_data", "errors"),
    [
        pytest.param(
            Order,
            {"customer": {"name": "Ada"}, "lines": [{"sku": "a", "qty": 1}, {"qty": "lots"}]},
            [
                ("lines.1.sku", "Field required"),
                (
                    "lines.1.qty",
                    "Input should be a valid integer, unable to parse string as an integer",
                ),
            ],
            id="nested-model",
        ),
        pytest.param(
            Shipment,
            {"to": {"street": "Main St"}, "parcels": [{"items": [{"qty": 1}], "weight": 1}]},
            [("to.zip", "Field required"), ("parcels.0.items.0.sku", "Field required")],
            id="typeddict-of-dataclasses",
        ),
        pytest.param(
            Parcel,
            {"items": "none", "weight": 1},
            [("items", "Input should be a valid list")],
            id="dataclass",
        ),
        pytest.param(
            dict[str, int],
            {"a": 1, "b": "two"},
            [("b", "Input should be a valid integer, unable to parse string as an integer")],
            id="dict-str-int",
        ),
        pytest.param(
            int,
            {"n": "not a number"},
            [(None, "Input should be a valid integer")],
            id="int-given-an-object",
        ),
        pytest.param(
            Annotated[int, Field(gt=0)],
            0,
            [(None, "Input should be greater than 0")],
            id="annotated-constraint",
        ),
    ],
)
def test_invalid_input_fails_once_without_retry_naming_the_field(
    world: World, annotation: Any, input_data: Any, errors: list[tuple[str | None, str]]
) -> None:
    outcome, task, calls = run_with_input(world, annotation, input_data)
    assert outcome is Outcome.FAILED
    error = failed_once(world, task, "InvalidInput")
    assert error["errors"] == [{"field": f, "message": m} for f, m in errors]
    message = str(error["message"])
    assert message.startswith(f"inputData is not a valid {validation_module.type_name(annotation)}")
    assert "(parameter 'data')" in message
    for field, text in errors:
        assert (f"{field}: {text}" if field else text) in message
    assert error["traceback"] is None
    assert calls == []


def test_the_issue_s_scalar_handler_rejects_an_object(world: World) -> None:
    """``def h(ctx, n: int)`` given ``{"n": "not a number"}`` ran and completed before."""

    @world.registry.task("scalar")
    def h(ctx: TaskContext, n: int) -> int:
        return n * 2

    task = world.task("scalar", {"n": "not a number"})
    assert world.run(task) is Outcome.FAILED
    error = failed_once(world, task, "InvalidInput")
    assert error["message"] == (
        "inputData is not a valid int (parameter 'n'): Input should be a valid integer"
    )
    ok = world.task("scalar", 21)
    assert world.run(ok, job_id="job-2") is Outcome.COMPLETED
    assert world.get(ok).output_data == 42


def test_a_long_list_of_field_errors_is_capped(world: World) -> None:
    @world.registry.task("numbers")
    def numbers(ctx: TaskContext, data: list[int]) -> None: ...

    task = world.task("numbers", ["x"] * 100)
    assert world.run(task) is Outcome.FAILED
    error = failed_once(world, task, "InvalidInput")
    assert len(error["errors"]) == MAX_FIELD_ERRORS
    assert error["errors"][-1]["field"] == str(MAX_FIELD_ERRORS - 1)
    assert str(error["message"]).endswith(f"; and {100 - MAX_FIELD_ERRORS} more")


# ---- unchecked: no annotation, Any, object ----------------------------------------------


def test_unannotated_any_and_object_pass_the_input_as_it_is(world: World) -> None:
    seen: list[object] = []

    def bare(ctx, data):  # type: ignore[no-untyped-def]
        seen.append(data)
        return {"set": "anything"}

    def any_(ctx: TaskContext, data: Any) -> Any:
        seen.append(data)
        return data

    def object_(ctx: TaskContext, data: object) -> object:
        seen.append(data)
        return data

    for name, func in (("bare", bare), ("any", any_), ("object", object_)):
        world.registry.task(name)(func)
        handler = world.registry.get(name)
        assert handler is not None and handler.types.input is None
        assert handler.types.output is None
        task = world.task(name, {"n": "not a number"})
        assert world.run(task, job_id=f"job-{name}") is Outcome.COMPLETED
    assert seen == [{"n": "not a number"}] * 3


# ---- output: the return annotation ------------------------------------------------------


@pytest.mark.parametrize(
    ("annotation", "value", "recorded"),
    [
        pytest.param(dict[str, int], {"a": 1}, {"a": 1}, id="dict-str-int"),
        pytest.param(
            Parcel,
            Parcel([Item("a")], 2.5),
            {"items": [{"sku": "a", "qty": 1}], "weight": 2.5},
            id="dataclass",
        ),
        pytest.param(Customer, Customer(name="Ada"), {"name": "Ada", "vip": False}, id="model"),
        pytest.param(
            Address, {"street": "Main", "zip": 1}, {"street": "Main", "zip": 1}, id="typeddict"
        ),
        pytest.param(int, "7", 7, id="int-lax-like-input"),
        pytest.param(list[Item] | None, None, None, id="optional-none"),
        pytest.param(None, None, None, id="none"),
    ],
)
def test_output_matching_the_return_annotation_is_recorded_as_json(
    world: World, annotation: Any, value: Any, recorded: Any
) -> None:
    def handler(ctx: TaskContext) -> annotation:  # type: ignore[valid-type]
        return value

    world.registry.task("out")(handler)
    task = world.task("out")
    assert world.run(task) is Outcome.COMPLETED
    assert world.get(task).output_data == recorded


@pytest.mark.parametrize(
    ("annotation", "value", "errors"),
    [
        pytest.param(
            dict[str, int],
            {"a": 1, "b": "x"},
            [("b", "Input should be a valid integer, unable to parse string as an integer")],
            id="dict-str-int",
        ),
        pytest.param(Customer, {"vip": True}, [("name", "Field required")], id="model-from-dict"),
        pytest.param(
            Parcel,
            {"items": [{"qty": 1}], "weight": 1},
            [("items.0.sku", "Field required")],
            id="nested-dataclass",
        ),
        pytest.param(
            int,
            "many",
            [(None, "Input should be a valid integer, unable to parse string as an integer")],
            id="int",
        ),
        pytest.param(None, {"oops": 1}, [(None, "Input should be None")], id="none"),
    ],
)
def test_output_not_matching_fails_the_attempt_without_retry(
    world: World, annotation: Any, value: Any, errors: list[tuple[str | None, str]]
) -> None:
    runs: list[int] = []

    def handler(ctx: TaskContext) -> annotation:  # type: ignore[valid-type]
        runs.append(ctx.attempt)
        return value

    world.registry.task("out")(handler)
    task = world.task("out")
    assert world.run(task) is Outcome.FAILED
    error = failed_once(world, task, "InvalidOutput")
    assert error["errors"] == [{"field": f, "message": m} for f, m in errors]
    expected = validation_module.type_name(annotation)
    assert str(error["message"]).startswith(
        f"the handler returned a value that is not a valid {expected}: "
    )
    assert world.get(task).output_data is None and runs == [1]


@pytest.mark.parametrize(
    "value", [{"x": float("nan")}, {"x": object()}], ids=["nan", "unknown-object"]
)
def test_annotated_output_that_is_not_json_is_non_json_output(world: World, value: Any) -> None:
    @world.registry.task("out")
    def handler(ctx: TaskContext) -> dict[str, object]:
        return value

    task = world.task("out")
    assert world.run(task) is Outcome.FAILED
    failed_once(world, task, "NonJsonOutput")


# ---- async handlers ----------------------------------------------------------------------


def test_async_handler_input_and_output_are_checked(world: World) -> None:
    @world.registry.task("async-total")
    async def total(ctx: TaskContext, data: Parcel) -> dict[str, int]:
        await asyncio.sleep(0)
        return {"qty": sum(item.qty for item in data.items)}

    @world.registry.task("async-wrong")
    async def wrong(ctx: TaskContext, data: dict[str, int]) -> dict[str, int]:
        await asyncio.sleep(0)
        return {"qty": "several"}  # type: ignore[dict-item]

    good = world.task("async-total", {"items": [{"sku": "a", "qty": 2}, {"sku": "b"}], "weight": 1})
    assert world.run(good) is Outcome.COMPLETED
    assert world.get(good).output_data == {"qty": 3}

    bad_input = world.task("async-total", {"items": [{"sku": "a", "qty": "x"}], "weight": 1})
    assert world.run(bad_input, job_id="job-2") is Outcome.FAILED
    error = failed_once(world, bad_input, "InvalidInput")
    assert [e["field"] for e in error["errors"]] == ["items.0.qty"]

    bad_output = world.task("async-wrong", {"a": 1})
    assert world.run(bad_output, job_id="job-3") is Outcome.FAILED
    error = failed_once(world, bad_output, "InvalidOutput")
    assert [e["field"] for e in error["errors"]] == ["qty"]


# ---- registration ------------------------------------------------------------------------


def test_adapters_are_built_once_at_registration(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    built: list[object] = []
    real = validation_module.TypeAdapter

    def counting(annotation: Any, **options: Any) -> Any:
        built.append(annotation)
        return real(annotation, **options)

    monkeypatch.setattr(validation_module, "TypeAdapter", counting)

    @world.registry.task("double")
    def double(ctx: TaskContext, data: dict[str, int]) -> dict[str, int]:
        return {k: v * 2 for k, v in data.items()}

    assert built == [dict[str, int], dict[str, int]]  # the return annotation and the input
    for n in range(3):
        task = world.task("double", {"n": n})
        assert world.run(task, job_id=f"job-{n}") is Outcome.COMPLETED
        assert world.get(task).output_data == {"n": n * 2}
    assert len(built) == 2
