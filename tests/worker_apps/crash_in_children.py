"""An app module that ``foreman-worker``'s worker processes cannot import.

The first import in a test (the supervisor's, which checks the apps before starting any
worker process) creates ``$ITEST_CRASH_LOG`` and registers nothing. Every later import — one
per worker process the supervisor starts — appends ``<pid> <time>`` to it and raises, so
the process exits at start-up: a worker process that keeps crashing.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

_log = Path(os.environ["ITEST_CRASH_LOG"])
if _log.exists():
    with _log.open("a") as out:
        out.write(f"{os.getpid()} {time.time()}\n")
    raise RuntimeError("this worker process cannot start")
_log.touch()
