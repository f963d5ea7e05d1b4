"""What a search for runs means: a run id (whole or its first characters), a metadata
``key=value``, or text found in the metadata. Pure: :mod:`foreman_api.storage.runs` turns
a :class:`RunSearch` into SQL."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass

MAX_SEARCH_LENGTH = 200
_HEX = re.compile(r"[0-9a-f]{4,32}")


@dataclass(frozen=True, slots=True)
class RunSearch:
    """One search; exactly the fields that apply are set."""

    run_id: uuid.UUID | None = None
    """A whole run id: that run only."""
    id_prefix: str | None = None
    """The first hex digits of a run id (dashes left out), OR-ed with ``text``."""
    meta_key: str | None = None
    meta_value: str | None = None
    """``key=value``: runs whose metadata has that value (as text) under that key."""
    text: str | None = None
    """Runs whose metadata contains this text, ignoring case."""


def parse_search(query: str) -> RunSearch | None:
    """The search a user typed; None for an empty one. Longer than
    :data:`MAX_SEARCH_LENGTH` characters, or holding a NUL, is a ValueError."""
    query = query.strip()
    if not query:
        return None
    if len(query) > MAX_SEARCH_LENGTH or "\x00" in query:
        raise ValueError(f"a search is at most {MAX_SEARCH_LENGTH} characters, without NUL")
    try:
        return RunSearch(run_id=uuid.UUID(query))
    except ValueError:
        pass
    key, equals, value = query.partition("=")
    if equals and key.strip():
        return RunSearch(meta_key=key.strip(), meta_value=value.strip())
    digits = query.lower().replace("-", "")
    prefix = digits if _HEX.fullmatch(digits) else None
    return RunSearch(id_prefix=prefix, text=query)
