"""How the dashboard writes values: statuses, times, durations and collapsible JSON.

Statuses, durations and progress read the same helpers as the ``foreman`` command
(:mod:`foreman_worker.console.render`), so both say the same thing the same way.
"""

from __future__ import annotations

import functools
import json
from datetime import UTC, datetime
from typing import Any

from markupsafe import Markup, escape

from foreman_api.clock import as_utc
from foreman_api.schemas import format_timestamp
from foreman_worker.console.render import (
    STATUS_STYLE,
    duration,
    elapsed_ms,
    settled,
    short,
    task_duration,
)
from foreman_worker.console.render import age as age_text

__all__ = [
    "age",
    "duration",
    "elapsed_ms",
    "json_html",
    "settled",
    "short",
    "status_badge",
    "task_duration",
    "timestamp",
]

JSON_TREE_LIMIT = 64 * 1024
"""Values larger than this (as JSON) are shown as plain, collapsible text."""
OPEN_LEVELS = 2
"""Nested objects and arrays this deep start open; deeper ones start collapsed."""


@functools.lru_cache(maxsize=32)
def status_badge(status: str) -> Markup:
    """The status as a coloured badge that also reads without colour (symbol and word)."""
    symbol, _ = STATUS_STYLE.get(status, ("?", ""))
    return Markup(
        '<span class="status s-{0}"><span aria-hidden="true">{1}</span> {0}</span>'
    ).format(status, symbol)


def timestamp(moment: datetime | None) -> Markup:
    """A ``<time>`` in UTC that the page's script rewrites to the viewer's local time."""
    if moment is None:
        return Markup('<span class="none">-</span>')
    iso = format_timestamp(as_utc(moment))
    text = as_utc(moment).strftime("%Y-%m-%d %H:%M:%S UTC")
    # Our own ISO instant and strftime text: nothing to escape (Markup's % is 10x slower).
    return Markup(f'<time class="ts" datetime="{iso}">{text}</time>')  # noqa: S704


def age(moment: datetime | None, now: datetime | None = None) -> Markup:
    """How long ago, as a ``<time>`` the page's script keeps current (title: the instant)."""
    if moment is None:
        return Markup('<span class="none">-</span>')
    moment = as_utc(moment)
    text = age_text(moment, now or datetime.now(UTC))
    iso = format_timestamp(moment)
    return Markup(f'<time class="age" datetime="{iso}">{text}</time>')  # noqa: S704 (as above)


def json_html(value: Any) -> Markup:
    """A JSON value as monospace HTML; objects and arrays collapse (``<details>``)."""
    text = json.dumps(value, ensure_ascii=False, indent=2)
    if len(text) > JSON_TREE_LIMIT:
        size = f"{len(text):,} characters"
        return Markup(
            '<details class="json"><summary>{0}</summary><pre>{1}</pre></details>'
        ).format(size, text)
    return Markup('<div class="json">{0}</div>').format(_node(value, 0))


def _node(value: Any, depth: int) -> Markup:
    if isinstance(value, dict):
        if not value:
            return Markup('<span class="jp">{}</span>')
        items = Markup("").join(
            Markup('<li><span class="jk">{0}</span>: {1}</li>').format(
                json.dumps(key, ensure_ascii=False), _node(item, depth + 1)
            )
            for key, item in value.items()
        )
        label = f"{{…}} {len(value)} key{'s' if len(value) != 1 else ''}"
        return _collapsible(label, items, depth)
    if isinstance(value, list):
        if not value:
            return Markup('<span class="jp">[]</span>')
        items = Markup("").join(
            Markup("<li>{0}</li>").format(_node(item, depth + 1)) for item in value
        )
        label = f"[…] {len(value)} item{'s' if len(value) != 1 else ''}"
        return _collapsible(label, items, depth)
    kind = "null" if value is None else type(value).__name__
    return Markup('<span class="jv j-{0}">{1}</span>').format(
        kind, escape(json.dumps(value, ensure_ascii=False))
    )


def _collapsible(label: str, items: Markup, depth: int) -> Markup:
    tag = Markup("<details open>") if depth < OPEN_LEVELS else Markup("<details>")
    return tag + Markup("<summary>{0}</summary><ul>{1}</ul></details>").format(label, items)
