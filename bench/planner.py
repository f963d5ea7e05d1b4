"""Planner statistics for the benchmarks' throwaway databases."""

from __future__ import annotations

from foreman_api.storage.engine import create_engine


def analyze(database_url: str) -> None:
    """``ANALYZE`` the whole database, as autovacuum would within a minute of a change.

    Every benchmark database is minutes old. A PostgreSQL table never analysed has no
    statistics, and the planner may then read a task by id through an index on ``org_id``
    (one organisation is every row here): each lookup scans the backlog, 5x the database
    CPU of the plan a deployment runs after its first minute. Measure that deployment.
    """
    engine = create_engine(database_url, pool_size=1)
    try:
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("ANALYZE")
    finally:
        engine.dispose()
