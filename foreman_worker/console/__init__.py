"""``foreman``: see and operate a running Foreman from a terminal.

Built on the SDK client (``FOREMAN_API_URL``, ``FOREMAN_API_KEY``). Human tables and trees
by default, ``--json`` for scripts (the API's own JSON). Exit codes:

====  ==========================================================================
0     done (``runs watch``: the run completed)
1     ``runs watch``: the run failed or was cancelled
2     bad usage
3     not found (an id that is not the key's organisation's, or no such id)
4     the API refused (permission, conflict, bad input) or could not be reached
====  ==========================================================================
"""

from __future__ import annotations

import sys

import typer

from foreman_worker.console import runs, tasks, workers

app = typer.Typer(
    name="foreman",
    help="See and operate a running Foreman: runs, tasks, workers and queues.\n\n"
    "Environment: FOREMAN_API_URL (default http://127.0.0.1:8000), FOREMAN_API_KEY, and "
    "FOREMAN_REDIS_URL for enqueueing retried tasks at once.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(runs.app, name="runs")
app.add_typer(tasks.app, name="tasks")
app.add_typer(workers.app, name="workers")
app.command("queues")(workers.queues)


def main() -> None:
    """The ``foreman`` console script."""
    sys.exit(app())
