"""A handler's data on the way in and out: ``inputData`` validated into the handler's
parameter, and its return value checked against its annotation and made JSON. Either
way, a value that does not fit is a :class:`~foreman_worker.failures.Failure` (never
retried), not an exception."""

from __future__ import annotations

from pydantic import BaseModel, JsonValue, TypeAdapter, ValidationError
from pydantic_core import PydanticSerializationError

from foreman_api.schemas import Json, Task
from foreman_worker.failures import Failure, invalid
from foreman_worker.registry import TaskHandler

_JSON = TypeAdapter(Json)


def input_of(handler: TaskHandler, task: Task) -> object:
    """The handler's ``data``, or the ``InvalidInput`` failure."""
    try:
        return handler.types.prepare_input(task.input_data)
    except ValidationError as exc:
        check = handler.types.input
        if check is None:  # only a check raises ValidationError
            raise
        what = f"inputData is not a valid {check.type_name} (parameter {check.name!r})"
        return invalid("InvalidInput", what, exc)


def output_of(handler: TaskHandler, value: object) -> JsonValue | Failure:
    """The output to record: checked against the return annotation, then as JSON.

    A mismatch is ``InvalidOutput`` and not retried: the handler already ran (its side
    effects are done) and returns the same kind of value for the same input.
    """
    check = handler.types.output
    if check is not None:
        try:
            value = check.to_json(value)
        except ValidationError as exc:
            what = f"the handler returned a value that is not a valid {check.type_name}"
            return invalid("InvalidOutput", what, exc)
        except PydanticSerializationError as exc:
            return _non_json(value, str(exc))
    return _to_json(value)


def _to_json(value: object) -> JsonValue | Failure:
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json")
    try:
        return _JSON.validate_python(value)
    except ValidationError as exc:
        return _non_json(value, exc.errors(include_url=False)[0]["msg"])


def _non_json(value: object, reason: str) -> Failure:
    return Failure(
        "NonJsonOutput",
        f"the handler returned {type(value).__name__}, which is not a JSON value: {reason}",
        retryable=False,
    )
