"""SQLAlchemy Core statements compiled once per shape and dialect, run by the bare driver.

Compiling a statement costs about as much CPU as executing it, so :func:`prepare` caches the
result on the statement object: hot statements are module constants or come from
``lru_cache``'d builders, and are compiled once per process. A statement built per request
(a list with optional filters) is compiled each time; keep those off the hottest paths.

Values fixed in the statement (``status IN ('queued', …)``) are bound by position with the
rest; a value the statement leaves open (``bindparam("p_task_id")``) must be in ``params``.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy.dialects.postgresql.asyncpg import dialect as asyncpg_dialect
from sqlalchemy.dialects.sqlite.pysqlite import dialect as sqlite_dialect
from sqlalchemy.engine.interfaces import Dialect
from sqlalchemy.sql import Executable
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.dml import ValuesBase

Processor = Callable[[Any], Any] | None

_DIALECTS: dict[str, Dialect] = {
    "postgresql": asyncpg_dialect(),  # type: ignore[no-untyped-call]
    "sqlite": sqlite_dialect(),
}
_MISSING = object()


@dataclass(frozen=True, slots=True)
class Prepared:
    """One statement's SQL for one dialect, and how to bind its parameters and read rows."""

    sql: str
    names: tuple[str, ...]
    """The bound parameters by position."""
    fixed: tuple[Any, ...]
    """Per position: the value fixed in the statement, or ``_MISSING`` (given at run time)."""
    bind: tuple[Processor, ...]
    """Per position: converts the Python value for the driver (SQLite only), or None."""
    columns: tuple[str, ...]
    """Names of the result columns (empty for a statement that returns no rows)."""
    read: tuple[Processor, ...]
    """Per column: converts what the driver returns (SQLite only), or None."""

    def args(self, params: Mapping[str, Any] | None) -> list[Any]:
        """The positional arguments for ``params``; KeyError names one that is missing."""
        given = params or {}
        values = []
        for name, fixed, convert in zip(self.names, self.fixed, self.bind, strict=True):
            value = given.get(name, fixed)
            if value is _MISSING:
                raise KeyError(f"no value for the statement's parameter {name!r}")
            values.append(value if convert is None or value is None else convert(value))
        return values

    def row(self, values: tuple[Any, ...] | Any) -> dict[str, Any]:
        """A result row (a tuple on SQLite) as a dict, its values converted."""
        return {
            name: value if convert is None or value is None else convert(value)
            for name, value, convert in zip(self.columns, values, self.read, strict=True)
        }


_Shapes = dict[tuple[str, ...] | None, Prepared]
_cache: dict[str, weakref.WeakKeyDictionary[Executable, _Shapes]] = {
    name: weakref.WeakKeyDictionary() for name in _DIALECTS
}


def prepare(
    statement: Executable, dialect: str, params: Mapping[str, Any] | None = None
) -> Prepared:
    """The compiled form of ``statement`` for ``dialect`` ("postgresql" or "sqlite").

    An INSERT or UPDATE without ``.values()`` sets the columns ``params`` names (one
    compiled shape per set of names), as ``Connection.execute`` would.
    """
    keys = tuple(sorted(params)) if params and _keyed(statement) else None
    shapes = _cache[dialect].get(statement)
    if shapes is None:
        shapes = _cache[dialect][statement] = {}
    prepared = shapes.get(keys)
    if prepared is None:
        prepared = shapes[keys] = _compile(statement, _DIALECTS[dialect], keys)
    return prepared


def _keyed(statement: Executable) -> bool:
    return isinstance(statement, ValuesBase) and not statement._values


def _compile(statement: Executable, dialect: Dialect, keys: tuple[str, ...] | None) -> Prepared:
    compiled = statement.compile(  # type: ignore[attr-defined]
        dialect=dialect, column_keys=list(keys) if keys is not None else None
    )
    if not isinstance(compiled, SQLCompiler):
        raise TypeError(f"not a SQL statement: {statement!r}")
    open_params = {
        bind.key: None
        for bind in compiled.binds.values()
        if (bind.value is None or bind.required) and bind.callable is None and not bind.expanding
    }
    fixed_values = {
        bind.key: bind.effective_value
        for bind in compiled.binds.values()
        if bind.key not in open_params and not bind.expanding
    }
    # Expands ``IN`` lists (fixed in our statements) into one parameter per value.
    expanded = compiled.construct_expanded_state(open_params)
    names = tuple(expanded.positiontup or ())
    native = dialect.name == "postgresql"
    processors = {} if native else {**compiled._bind_processors, **expanded.processors}
    fixed = tuple(
        _MISSING if name in open_params else fixed_values.get(name, expanded.parameters.get(name))
        for name in names
    )
    columns = tuple(column.keyname for column in compiled._result_columns)
    read: tuple[Processor, ...] = tuple(
        None if native else column.type._cached_result_processor(dialect, None)
        for column in compiled._result_columns
    )
    bind = tuple(_processor(processors, name) for name in names)
    return Prepared(expanded.statement, names, fixed, bind, columns, read)


def _processor(processors: Mapping[str, Any], name: str) -> Processor:
    found = processors.get(name)
    return found if callable(found) else None
