"""Where several API processes keep their counts: prometheus-client's multiprocess mode.

Each process writes its counters and histograms to files of one directory, named by
``PROMETHEUS_MULTIPROC_DIR`` in its environment before ``prometheus_client`` is imported;
a scrape of any process adds up every file there.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Final

DIRECTORY_VARIABLE: Final = "PROMETHEUS_MULTIPROC_DIR"


def directory() -> str | None:
    """The shared directory of this server's processes, if they share one."""
    return os.environ.get(DIRECTORY_VARIABLE) or None


@contextmanager
def shared_directory(processes: int) -> Iterator[str | None]:
    """For a server of several ``processes``: a fresh directory for their counts, in the
    environment they inherit, removed when the server stops. One process needs none; a
    directory already named in the environment is used as it is (empty it between runs)."""
    given = directory()
    if processes < 2 or given is not None:
        yield given
        return
    made = tempfile.mkdtemp(prefix="foreman-metrics-")
    os.environ[DIRECTORY_VARIABLE] = made
    try:
        yield made
    finally:
        os.environ.pop(DIRECTORY_VARIABLE, None)
        shutil.rmtree(made, ignore_errors=True)
