"""Run data filters: parse and normalise the query string of ``GET /runs/{runId}/data``.

Pure: no SQL, no HTTP. The storage layer turns a :class:`RunDataQuery` into statements.

Semantics
    * ``key``, ``keys``, ``keyStartsWith`` and ``keyPattern`` are OR-ed together: an entry
      matches when its key matches any of them.
    * ``tags`` and ``tagStartsWith`` are AND-ed with the key filters and with each other.
      ``tagMode`` applies to both lists: ``any`` needs one listed tag (or one tag starting
      with one listed prefix), ``all`` needs every listed tag (and, for every listed prefix,
      some tag starting with it).
    * Without ``includeAll`` only the latest matching entry of each key is returned.
    * Prefixes and patterns match literally and case-sensitively: ``%``, ``_`` and ``\\`` are
      data. In ``keyPattern`` only ``*`` (any run of characters) and ``?`` (one character)
      are wildcards; there is no escape character.

A prefix becomes the half-open range ``[prefix, next_string(prefix))`` in code point order,
which is the byte order of UTF-8 and of the key columns on both backends: literal by
construction and served by an index range scan.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from foreman_api.domain.errors import Invalid
from foreman_api.domain.paging import MAX_LIMIT, MAX_OFFSET, DataSortBy, SortOrder

MAX_CODE_POINT = 0x10FFFF
SURROGATES = range(0xD800, 0xE000)
MAX_FILTER_VALUES = 100
MAX_FILTER_LENGTH = 255
LIKE_ESCAPE = "\\"


TagMode = Literal["any", "all"]
"""Whether an entry needs any of the tags asked for, or all of them."""


class InvalidFilter(Invalid):
    """A filter value the API refuses; ``field`` is its query parameter name."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}", details=[{"field": field, "message": message}])
        self.field = field


@dataclass(frozen=True, slots=True)
class TextRange:
    """Strings ``s`` with ``low <= s < high`` (no upper bound when ``high`` is None)."""

    low: str
    high: str | None


@dataclass(frozen=True, slots=True)
class LikePattern:
    """A glob translated to LIKE (escape ``\\``), with the range of its literal prefix."""

    like: str
    prefix: TextRange | None


@dataclass(frozen=True, slots=True)
class RunDataQuery:
    keys: tuple[str, ...] = ()
    key_prefixes: tuple[TextRange, ...] = ()
    key_patterns: tuple[LikePattern, ...] = ()
    match_all_keys: bool = False
    """A key filter matched every key (e.g. ``keyPattern=*``): the key condition is true."""
    tags: tuple[str, ...] = ()
    tag_prefixes: tuple[TextRange, ...] = ()
    tag_mode: TagMode = "any"
    include_all: bool = False
    limit: int = 100
    offset: int = 0
    sort_by: DataSortBy = "createdAt"
    sort_order: SortOrder = "desc"

    @property
    def filters_keys(self) -> bool:
        """True when a key condition restricts the entries."""
        return not self.match_all_keys and bool(self.keys or self.key_prefixes or self.key_patterns)


def next_string(prefix: str) -> str | None:
    """The least string greater than every string starting with ``prefix``.

    Increments the last code point (skipping the surrogate block, which UTF-8 cannot carry);
    a trailing U+10FFFF is dropped and the one before it incremented. None when no string is
    greater (the prefix is all U+10FFFF, or empty): the range then has no upper bound.
    """
    chars = list(prefix)
    while chars:
        code = ord(chars.pop()) + 1
        if code in SURROGATES:
            code = SURROGATES.stop
        if code <= MAX_CODE_POINT:
            return "".join(chars) + chr(code)
    return None


def prefix_range(prefix: str) -> TextRange:
    return TextRange(low=prefix, high=next_string(prefix))


def glob_to_like(pattern: str) -> str:
    """``*`` → ``%``, ``?`` → ``_``; every ``%``, ``_`` and ``\\`` escaped with ``\\``."""
    out = []
    for char in pattern:
        if char == "*":
            out.append("%")
        elif char == "?":
            out.append("_")
        elif char in "%_\\":
            out.append(LIKE_ESCAPE + char)
        else:
            out.append(char)
    return "".join(out)


def split_values(field: str, values: Iterable[str] | None) -> tuple[str, ...]:
    """Comma-separated and/or repeated parameter values, trimmed, deduplicated, in order.

    Empty items are dropped. Raises InvalidFilter for NUL characters, over-long values or
    too many values.
    """
    items: dict[str, None] = {}
    for value in values or ():
        for item in value.split(","):
            item = item.strip()
            if item:
                items[_check_value(field, item)] = None
    if len(items) > MAX_FILTER_VALUES:
        raise InvalidFilter(field, f"at most {MAX_FILTER_VALUES} values are allowed")
    return tuple(items)


def _check_value(field: str, value: str) -> str:
    if "\x00" in value:
        raise InvalidFilter(field, "must not contain NUL (\\u0000) characters")
    if len(value) > MAX_FILTER_LENGTH:
        raise InvalidFilter(field, f"values are at most {MAX_FILTER_LENGTH} characters")
    return value


def build_query(
    *,
    key: str | None = None,
    keys: Iterable[str] | None = None,
    key_starts_with: Iterable[str] | None = None,
    key_pattern: Iterable[str] | None = None,
    tags: Iterable[str] | None = None,
    tag_starts_with: Iterable[str] | None = None,
    tag_mode: TagMode = "any",
    include_all: bool = False,
    limit: int = 100,
    offset: int = 0,
    sort_by: DataSortBy = "createdAt",
    sort_order: SortOrder = "desc",
) -> RunDataQuery:
    """Validate and normalise the filters. Raises InvalidFilter naming the parameter.

    ``key`` is one exact key, taken as is (it may contain commas); the other key and tag
    parameters are lists.
    """
    if not 1 <= limit <= MAX_LIMIT:
        raise InvalidFilter("limit", f"must be between 1 and {MAX_LIMIT}")
    if not 0 <= offset <= MAX_OFFSET:
        raise InvalidFilter("offset", f"must be between 0 and {MAX_OFFSET}")
    exact = dict.fromkeys(split_values("keys", keys))
    if key is not None and key != "":
        exact = {_check_value("key", key): None, **exact}
    prefixes = split_values("keyStartsWith", key_starts_with)
    patterns: list[LikePattern] = []
    ranges = [prefix_range(p) for p in prefixes]
    match_all = False
    for pattern in split_values("keyPattern", key_pattern):
        wildcard_at = next((i for i, c in enumerate(pattern) if c in "*?"), None)
        if wildcard_at is None:
            exact[pattern] = None
            continue
        literal = pattern[:wildcard_at]
        rest = pattern[wildcard_at:]
        if rest.strip("*") == "":
            # "abc*" is the prefix "abc"; "*" alone matches every key.
            if literal:
                ranges.append(prefix_range(literal))
            else:
                match_all = True
            continue
        prefix = prefix_range(literal) if literal else None
        patterns.append(LikePattern(like=glob_to_like(pattern), prefix=prefix))
    return RunDataQuery(
        keys=tuple(exact),
        key_prefixes=tuple(dict.fromkeys(ranges)),
        key_patterns=tuple(patterns),
        match_all_keys=match_all,
        tags=split_values("tags", tags),
        tag_prefixes=tuple(prefix_range(p) for p in split_values("tagStartsWith", tag_starts_with)),
        tag_mode=tag_mode,
        include_all=include_all,
        limit=limit,
        offset=offset,
        sort_by=sort_by,
        sort_order=sort_order,
    )
