"""``python -m foreman_worker.console``: the ``foreman`` command."""

from foreman_worker.console import main

main()
