"""A handler's input and output, checked against its annotations.

``@task`` reads ``handler(ctx, data: In) -> Out`` once, when it registers the handler, and
builds a pydantic ``TypeAdapter`` for ``In`` and one for ``Out``: models, dataclasses,
TypedDicts (``typing_extensions.TypedDict`` before Python 3.12), ``dict[str, int]``,
``int``, ``X | None``, ``Annotated[int, Field(gt=0)]``, nested in any way. The runner then

* validates the task's whole ``inputData`` into ``In`` and passes the result as ``data``
  (a ``null`` ``inputData`` gives ``data`` its default, when it has one);
* validates the return value against ``Out`` and records it as pydantic serialises it to
  JSON (so a returned model or dataclass becomes an object).

No annotation, ``Any`` or ``object`` checks nothing: the value passes as it is.
An annotation that cannot be resolved or that pydantic cannot validate is a
:class:`~foreman_worker.errors.RegistrationError` when the module is imported.
"""

from __future__ import annotations

import inspect
import re
import sys
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypedDict

from pydantic import BaseModel, ConfigDict, PydanticUserError, TypeAdapter, ValidationError

from foreman_worker.errors import RegistrationError

NO_DEFAULT: Any = inspect.Parameter.empty
"""The input parameter has no default."""
MAX_FIELD_ERRORS = 20
"""An error keeps the first 20 field errors (a long list of bad items stays small)."""
_UNCHECKED: tuple[object, ...] = (Any, object, inspect.Parameter.empty)
_CONFIG = ConfigDict(ser_json_inf_nan="constants")
_MODULE_PATH = re.compile(r"\b(?:[A-Za-z_]\w*\.)+(?=[A-Za-z_])")


class FieldError(TypedDict):
    """One validation error: where (a dotted path, None for the value itself) and what."""

    field: str | None
    message: str


@dataclass(frozen=True, slots=True)
class TypeCheck:
    """One annotation of a handler and the adapter built for it at registration."""

    name: str
    """The parameter's name, or ``return``."""
    annotation: Any
    adapter: TypeAdapter[Any]

    @property
    def type_name(self) -> str:
        """The annotation as a reader writes it: ``dict[str, int]``, ``Order | None``."""
        return type_name(self.annotation)

    def validate(self, value: object) -> Any:
        """The value validated into the annotation; raises ``ValidationError``."""
        return self.adapter.validate_python(value)

    def to_json(self, value: object) -> Any:
        """Validate, then serialise as JSON data; raises ``ValidationError`` for a value
        that does not match, ``PydanticSerializationError`` for one that is not JSON."""
        return self.adapter.dump_python(self.validate(value), mode="json")


@dataclass(frozen=True, slots=True)
class HandlerTypes:
    """What a handler's signature says about its input and output."""

    takes_input: bool = False
    """``handler(ctx, data)`` rather than ``handler(ctx)``."""
    input: TypeCheck | None = None
    """Validates ``inputData`` into ``data``; None passes it as it is."""
    input_default: Any = NO_DEFAULT
    """``data``'s default, given when ``inputData`` is null."""
    output: TypeCheck | None = None
    """Validates the return value; None records any JSON value."""

    @property
    def input_model(self) -> type[BaseModel] | None:
        """The input annotation when it is a pydantic model."""
        annotation = self.input.annotation if self.input is not None else None
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            return annotation
        return None

    def prepare_input(self, data: object) -> object:
        """The handler's ``data`` for this ``inputData``; raises ``ValidationError``."""
        if data is None and self.input_default is not NO_DEFAULT:
            return self.input_default
        return data if self.input is None else self.input.validate(data)


def handler_types(
    type_: str, func: Callable[..., Any], *, localns: Mapping[str, Any] | None = None
) -> HandlerTypes:
    """Read ``handler(ctx)`` or ``handler(ctx, data)`` and build its checks, or reject it.

    ``localns`` resolves annotations that name types local to the function that
    registers the handler (``from __future__ import annotations`` makes them strings).
    """
    try:
        signature = inspect.signature(func)
    except (TypeError, ValueError) as exc:
        raise RegistrationError(f"task {type_!r}: cannot inspect the handler: {exc}") from exc
    parameters = signature.parameters.values()
    positional = [p for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    required_kw = [p for p in parameters if p.kind is p.KEYWORD_ONLY and p.default is p.empty]
    if required_kw or not 1 <= len(positional) <= 2:
        name = getattr(func, "__name__", type(func).__name__)
        raise RegistrationError(
            f"task {type_!r}: a handler takes (ctx) or (ctx, data), not {name}{signature}"
        )
    output = _check(type_, func, "return", signature.return_annotation, localns)
    if len(positional) == 1:
        return HandlerTypes(output=output)
    data = positional[1]
    return HandlerTypes(
        takes_input=True,
        input=_check(type_, func, data.name, data.annotation, localns),
        input_default=data.default,
        output=output,
    )


def defining_scope(func: Callable[..., Any], frame: types.FrameType) -> Mapping[str, Any] | None:
    """The local names of ``frame`` when it runs the function that defines ``func`` (a
    handler declared inside a function), so that annotations naming its local types
    resolve; None otherwise: another function's names must not shadow the handler's."""
    scopes = getattr(func, "__qualname__", "").split(".<locals>.")
    if len(scopes) < 2 or scopes[-2].rsplit(".", 1)[-1] != frame.f_code.co_name:
        return None
    return frame.f_locals


def field_errors(exc: ValidationError) -> list[FieldError]:
    """pydantic's errors as (dotted path, message), the first :data:`MAX_FIELD_ERRORS`."""
    return [
        FieldError(field=".".join(str(part) for part in error["loc"]) or None, message=error["msg"])
        for error in exc.errors(include_url=False)[:MAX_FIELD_ERRORS]
    ]


def summary(exc: ValidationError) -> str:
    """The errors in one line: ``amount: Input should be a valid number; …``."""
    parts = [
        f"{e['field']}: {e['message']}" if e["field"] else e["message"] for e in field_errors(exc)
    ]
    more = exc.error_count() - len(parts)
    return "; ".join(parts) + (f"; and {more} more" if more > 0 else "")


def type_name(annotation: object) -> str:
    """``dict[str, int]``, ``Order``, ``Optional[int]``: without module paths."""
    if annotation is None or annotation is types.NoneType:
        return "None"
    if typing.get_origin(annotation) is typing.Annotated:
        return type_name(typing.get_args(annotation)[0])
    if isinstance(annotation, type) and not isinstance(annotation, types.GenericAlias):
        return annotation.__name__
    return _MODULE_PATH.sub("", repr(annotation))


def _check(
    type_: str,
    func: Callable[..., Any],
    name: str,
    raw: object,
    localns: Mapping[str, Any] | None,
) -> TypeCheck | None:
    """The check for one annotation, None when it checks nothing."""
    what = "the return annotation" if name == "return" else f"the annotation of {name!r}"
    try:
        annotation = _resolve(func, raw, localns)
    except Exception as exc:  # NameError for a name not defined (yet), or bad syntax
        raise RegistrationError(
            f"task {type_!r}: cannot resolve {what} ({raw!r}): {exc}; define or import the "
            f"type before the handler (not only under TYPE_CHECKING)"
        ) from exc
    if any(annotation is unchecked for unchecked in _UNCHECKED):
        return None
    try:
        adapter = _adapter(annotation)
    except Exception as exc:  # PydanticSchemaGenerationError, PydanticUserError…
        raise RegistrationError(
            f"task {type_!r}: pydantic cannot validate {what} ({type_name(annotation)}): "
            f"{str(exc).splitlines()[0]} (annotate it with Any to take the value as it is)"
        ) from exc
    return TypeCheck(name, annotation, adapter)


def _adapter(annotation: Any) -> TypeAdapter[Any]:
    """The adapter; NaN and infinities stay floats when serialised, so that the output's
    JSON check refuses them rather than pydantic writing ``null`` in their place.

    Models, dataclasses and TypedDicts keep their own configuration.
    """
    try:
        return TypeAdapter(annotation, config=_CONFIG)
    except PydanticUserError as exc:
        if exc.code != "type-adapter-config-unused":
            raise
    return TypeAdapter(annotation)


def _resolve(func: Callable[..., Any], raw: object, localns: Mapping[str, Any] | None) -> Any:
    """An annotation as an object: strings and forward references evaluated."""
    target = inspect.unwrap(func)
    globalns = getattr(target, "__globals__", None)
    if globalns is None:  # a callable object: its class's module
        module = sys.modules.get(getattr(target, "__module__", "") or "")
        globalns = vars(module) if module is not None else {}
    holder = types.SimpleNamespace(__annotations__={"value": raw})
    hints = typing.get_type_hints(holder, globalns, dict(localns or {}), include_extras=True)
    return hints["value"]
