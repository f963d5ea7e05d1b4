"""Fault injection (issue 6), the bounded version of ``bench/chaos.py``.

One test per experiment, each in its own deployment (throwaway PostgreSQL database, private
``redis-server``, ``foreman-api serve``, three ``foreman-worker`` processes) with
:data:`bench.chaos.CI_SCALE` (60 tasks, 30 s without progress ends the wait). Each asserts
the reliability bar of DESIGN.md §4/§7: no task stranded, no outcome recorded by a stale
attempt, every run's counters equal to the task table. The logs of a failed experiment stay
in the test's ``tmp_path``.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from bench.chaos import CI_SCALE, EXPERIMENTS, format_table, postgres_problem, run_experiment

pytestmark = pytest.mark.integration

IN_CI = os.environ.get("CI", "").lower() == "true"


def unavailable(message: str) -> None:
    if IN_CI:
        pytest.fail(f"{message}; CI=true requires it")
    pytest.skip(message)


@pytest.fixture(scope="module", autouse=True)
def services() -> None:
    if shutil.which("redis-server") is None:
        unavailable("redis-server is not on PATH")
    problem = postgres_problem()
    if problem is not None:
        unavailable(problem)


# "none" (the same work without a fault) is left to bench/chaos.py: every experiment here
# does that work too, under its fault.
@pytest.mark.parametrize("name", [name for name in EXPERIMENTS if name != "none"])
def test_every_task_finishes_once_and_counters_are_exact(name: str, tmp_path: Path) -> None:
    report = run_experiment(name, CI_SCALE, workdir=tmp_path)
    print(format_table([report]))
    found = {
        "stranded": report.stranded,
        "stale": report.stale,
        "runs with wrong counters": report.counter_mismatches,
    }
    assert found == dict.fromkeys(found, 0), f"logs in {tmp_path}\n{report.describe()}"
