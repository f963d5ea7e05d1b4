"""The dashboard's pure helpers: the task tree's order, the timeline's bars, page links."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from foreman_api.schemas import Task
from foreman_api.ui.views import Pager, task_tree, timeline

T0 = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


def task(name: str, parent: Task | None = None, **times: Any) -> Task:
    return Task(
        id=uuid.uuid4(),
        run_id=uuid.UUID(int=1),
        parent_task_id=parent.id if parent else None,
        org_id="o",
        type=name,
        status=times.pop("status", "completed"),
        retry_count=0,
        max_retries=3,
        created_at=T0,
        updated_at=T0,
        **times,
    )


def test_the_tree_is_depth_first_and_a_missing_parent_makes_a_root() -> None:
    root = task("root")
    a, b = task("a", root), task("b", root)
    a1 = task("a1", a)
    orphan = task("orphan", task("not on this page"))
    rows = task_tree([root, a, b, a1, orphan])
    assert [(row.task.type, row.depth, row.children) for row in rows] == [
        ("root", 0, 2),
        ("a", 1, 1),
        ("a1", 2, 0),
        ("b", 1, 0),
        ("orphan", 0, 0),
    ]
    assert [row.indent for row in rows] == ["d0", "d1", "d2", "d1", "d0"]


def test_the_timeline_puts_every_task_on_one_axis_up_to_now() -> None:
    def at(seconds: float) -> datetime:
        return T0 + timedelta(seconds=seconds)

    done = task("done", queued_at=at(0), started_at=at(1), completed_at=at(3))
    running = task("running", status="running", queued_at=at(2), started_at=at(4))
    waiting = task("waiting", status="queued", queued_at=at(5))
    bars = timeline(task_tree([done, running, waiting]), now=at(10))
    assert [(b.wait_x, b.wait_width, b.run_x, b.run_width) for b in bars] == [
        (0.0, 100.0, 100.0, 200.0),
        (200.0, 200.0, 400.0, 600.0),  # still running: up to now
        (500.0, 500.0, 1000.0, 0.0),  # still waiting: up to now, no run bar
    ]


def test_page_links_keep_the_filters() -> None:
    pager = Pager(page=2, size=50, total=1000, filters={"status": "failed", "q": "", "w": "1h"})
    assert (pager.pages, pager.first_row, pager.last_row) == (20, 51, 100)
    assert pager.link(1) == "?status=failed&w=1h"
    assert pager.link(3) == "?status=failed&w=1h&page=3"
    assert Pager(page=1, size=50, total=0, filters={}).pages == 1
