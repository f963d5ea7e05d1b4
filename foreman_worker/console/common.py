"""What every ``foreman`` command shares: the client, the console, errors → exit codes."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Annotated, TypeVar

import typer
from pydantic import BaseModel
from rich.console import Console
from rich.table import Table

from foreman_api.schemas import Page
from foreman_worker.client import ForemanClient, RetryPolicy
from foreman_worker.console.render import to_json
from foreman_worker.result import Result

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)

EXIT_RUN_FAILED = 1
EXIT_NOT_FOUND = 3
EXIT_REFUSED = 4

out = Console(highlight=False)
err = Console(stderr=True, highlight=False)

JsonOption = Annotated[bool, typer.Option("--json", help="Print the API's JSON, for scripts.")]


def client() -> ForemanClient:
    """A client from the environment; few, short retries: a person is waiting."""
    return ForemanClient(retry=RetryPolicy(attempts=2, initial_wait=0.2, max_wait=1.0))


def unwrap(result: Result[T]) -> T:
    """The result's data, or a one-line error and the exit code that says what went wrong."""
    if result.success:
        return result.data  # type: ignore[return-value]
    error = result.error
    message = error.message if error is not None else "no answer"
    err.print(f"foreman: error: {message}", style="red", soft_wrap=True)
    raise typer.Exit(EXIT_NOT_FOUND if error is not None and error.status == 404 else EXIT_REFUSED)


def show_page(page: Page[M], table: Callable[[list[M]], Table], json: bool) -> None:
    """A page of a list: its JSON, or its table and how many there are in all."""
    if json:
        out.print_json(to_json(page.data))
        return
    out.print(table(page.data))
    if page.pagination.total > len(page.data):
        out.print(f"{len(page.data)} of {page.pagination.total}", style="dim")


def uuid_arg(value: str) -> str:
    """An id argument, checked before any call (``2`` for a malformed one)."""
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise typer.BadParameter(f"{value!r} is not an id (a UUID)") from None
