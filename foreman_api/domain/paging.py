"""Pages and their order, as every list of the API takes them: the one definition that the
wire models, the storage layer and the SDK share.

Each order has one value here (``createdAt``, ``updatedAt``, ``key``). Lists also accept
the other spellings in :data:`SORT_BY_ALIASES` for it: the TypeScript client published
with the seed document sends ``created_at`` and ``updated_at``. :func:`normalise_sort_by`
turns any accepted spelling into the value, so nothing past the request model sees an
alias.

Pure: no HTTP, no SQL.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Final, Literal

SortOrder = Literal["asc", "desc"]
TimeSortBy = Literal["createdAt", "updatedAt"]
"""How runs and tasks lists sort; ties are broken by id."""
DataSortBy = Literal["createdAt", "updatedAt", "key"]
"""How run data sorts; ``createdAt`` is insertion order, ties are broken by it."""

MAX_LIMIT: Final = 1000
"""The largest page."""
MAX_OFFSET: Final = 2**31 - 1
"""The largest offset: beyond it a ``400`` rather than an overflow in the database (a 32-bit
signed integer)."""

SORT_BY_ALIASES: Final[Mapping[str, str]] = {
    "created_at": "createdAt",
    "updated_at": "updatedAt",
}
"""Other accepted spellings of a ``sortBy`` value → the value."""


def sort_by_spellings(values: Iterable[str]) -> list[str]:
    """Every spelling accepted for the ``sortBy`` values ``values``: each value, then the
    aliases of those values."""
    values = list(values)
    return values + [alias for alias, value in SORT_BY_ALIASES.items() if value in values]


def normalise_sort_by(spelling: str, values: Iterable[str]) -> str | None:
    """The value of ``values`` that ``spelling`` names (itself or an alias), or None."""
    value = SORT_BY_ALIASES.get(spelling, spelling)
    return value if value in values else None
