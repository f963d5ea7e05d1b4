"""Planner statistics for the benchmarks' throwaway databases."""

from __future__ import annotations

from foreman_api.storage.engine import create_engine


def analyze(database_url: str) -> None:
    """``VACUUM ANALYZE`` the whole database (SQLite: ``ANALYZE``), as autovacuum would
    within a minute of a change.

    Every benchmark database is minutes old. A PostgreSQL table never analysed has no
    statistics, and the planner may then read a task by id through an index on ``org_id``
    (one organisation is every row here): each lookup scans the backlog, 5x the database
    CPU of the plan a deployment runs after its first minute. Measure that deployment.

    The vacuum does now what autovacuum would start on its own some seconds later, in the
    middle of a measured load, its CPU counted against whichever server is measured then
    (a scenario's writes on one side, then the other side's load: runs of the same
    scenario moved by 2x).
    """
    engine = create_engine(database_url, pool_size=1)
    try:
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            postgres = engine.dialect.name == "postgresql"
            conn.exec_driver_sql("VACUUM ANALYZE" if postgres else "ANALYZE")
    finally:
        engine.dispose()
