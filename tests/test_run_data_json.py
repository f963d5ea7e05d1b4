"""Run data pages written by the database (``foreman_api/storage/run_data_json.py``) are
the responses the row path writes: byte for byte on SQLite, value for value everywhere."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import pytest

from foreman_api.db import open_database
from foreman_api.domain.run_data_query import build_query
from foreman_api.routes.run_data import ENTRY
from foreman_api.storage import run_data as storage
from tests.conftest import Api
from tests.test_run_data import BASE, make_run, make_task

# Values as a client writes them (raw JSON), chosen where SQLite's stored text and the row
# path's orjson disagree: escapes, floats in exponent form, top-level floats (REAL in
# SQLite), integers near and beyond 64 bits, nesting.
AWKWARD_VALUES = [
    *("0", "-1", "42", "9007199254740993", "9223372036854775807", "-9223372036854775808"),
    *("9223372036854775808", "18446744073709551615", "18446744073709551616", "1" + "0" * 30),
    *("0.1", "1.5", "3.0", "-0.0", "1e16", "1e-5", "1e100", "0.30000000000000004", "5e-324"),
    *("1.7976931348623157e308", "123456.789", "1.0e+3", "2.5e-3"),
    *('"text"', '"caf\u00e9"', '"\\u00e9"', '"emoji \U0001f600"', '"del \\u007f"'),
    *('"ctl \\u0001\\n\\t"', '"\\u2028"', '"e+5 e-5 1e-5"', '"back\\\\u"', '"1e5"'),
    *("true", "false", "null", "[]", "{}", '[1, 2.5, 1e-7, "x"]'),
    *('{"n": 18446744073709551616}', '{"n": 12345678901234567890123}'),
    *('{"f": 1e100, "g": 0.1}', '{"f": 1e-05}', '{"f": 3.0, "i": 3}', '{"a": 1.0, "c": 1e15}'),
    *('{"s": "caf\u00e9", "t": "\\u00e9"}', '{"nested": {"deep": [1, {"x": -0.0}]}}'),
    *('{"big": -9223372036854775809, "f": 1e+300}', "[9223372036854775807, 1e-7]"),
]
KEYS = ["plain", "caf\u00e9", "ctl\x01\x7f\t", 'quote"\\', "sp ace", "\u2028", "\U0001f600"]
TAGS: list[list[str]] = [["a", "b"], ["caf\u00e9"], ["\x7f"], [], ["e+1"], ["1e-5"]]
METADATA: list[Any] = [None, {"m": 1}, {"f": 1e-05}, {"s": "caf\u00e9"}, {"n": 2**64}, {"x": 0.5}]
QUERIES = [
    "",
    "?includeAll=true&limit=1000",
    "?includeAll=true&limit=7&offset=3",
    "?includeAll=true&sortBy=key&sortOrder=asc",
    "?includeAll=true&sortBy=updatedAt",
    "?keyStartsWith=caf",
    "?tags=a,e%2B1&includeAll=1",
    "?key=k",
    "?key=k&includeAll=true",
]


def put_raw(api: Api, auth: dict[str, str], run_id: str, body: str) -> bytes:
    response = api.client.post(
        f"{BASE}/runs/{run_id}/data",
        content=body.encode(),
        headers={**auth, "content-type": "application/json"},
    )
    assert response.status_code == 201, response.text
    return response.content


def entry_body(i: int, value: str, task_id: str | None) -> str:
    key, tags, metadata = KEYS[i % len(KEYS)] + str(i), TAGS[i % len(TAGS)], METADATA[i % 6]
    task = f', "taskId": "{task_id}"' if task_id and i % 2 else ""
    return (
        f'{{"key": {json.dumps(key)}, "value": {value}, "tags": {json.dumps(tags)}, '
        f'"metadata": {json.dumps(metadata)}{task}}}'
    )


def row_path_bytes(api: Api, run_id: str, query: str) -> bytes | None:
    """The page as the row path writes it (None for a page past the end)."""
    params = dict(part.split("=", 1) for part in query.lstrip("?").split("&") if part)
    built = build_query(
        key=params.get("key"),
        key_starts_with=[params["keyStartsWith"]] if "keyStartsWith" in params else None,
        tags=[params["tags"].replace("%2B", "+")] if "tags" in params else None,
        include_all="includeAll" in params,
        limit=int(params.get("limit", 100)),
        offset=int(params.get("offset", 0)),
        sort_by=params.get("sortBy", "createdAt"),  # type: ignore[arg-type]
        sort_order=params.get("sortOrder", "desc"),  # type: ignore[arg-type]
    )

    async def read() -> storage.RecordPage:
        db = await open_database(api.settings.database_url)
        try:
            return await storage.list_entries(
                db, org_id="org-a", run_id=uuid.UUID(run_id), query=built, as_json=False
            )
        finally:
            await db.close()

    page = asyncio.run(read())
    if not page.rows:
        return None
    paging = {"total": page.total, "limit": built.limit, "offset": built.offset}
    return ENTRY.encode_page(page.rows, **paging)


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)  # PostgreSQL: by value below
def test_sqlite_pages_are_the_row_paths_bytes(
    api: Api, auth: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every way a page is written (as SQLite wrote it, re-encoded by orjson, read as
    rows) gives the bytes the row path gives: pages of each value alone, of neighbours in
    the list, and of all of them."""
    seen: set[str] = set()
    write_page = storage.sqlite_page

    def spy(rows: Any) -> Any:
        written = write_page(rows)
        seen.add({str: "as written", bytes: "re-encoded"}.get(type(written), "as rows"))
        return written

    monkeypatch.setattr(storage, "sqlite_page", spy)
    mixed = make_run(api)
    task_id = make_task(api, mixed)
    runs = [mixed]
    for i, value in enumerate(AWKWARD_VALUES):
        put_raw(api, auth, mixed, entry_body(i, value, task_id))
        # each value alone under key "k", and beside the next one (pages of two kinds)
        alone = make_run(api)
        runs.append(alone)
        put_raw(api, auth, alone, entry_body(i, value, None))
        put_raw(api, auth, alone, f'{{"key": "k", "value": {value}}}')
        next_value = AWKWARD_VALUES[(i + 1) % len(AWKWARD_VALUES)]
        put_raw(api, auth, alone, f'{{"key": "next", "value": {next_value}}}')
    for run_id in runs:
        for query in QUERIES:
            response = api.client.get(f"{BASE}/runs/{run_id}/data{query}", headers=auth)
            assert response.status_code == 200, response.text
            expected = row_path_bytes(api, run_id, query)
            if expected is not None:
                assert response.content == expected, (run_id, query)
    assert seen == {"as written", "re-encoded", "as rows"}


def test_large_integers_and_floats_keep_their_digits(api: Api, auth: dict[str, str]) -> None:
    """A listed entry reads as its create response did: integers beyond 2**53 and 2**64
    inside documents keep every digit, floats their shortest form."""
    floats = {
        "beyond-double": ("9007199254740993", 9007199254740993),
        "top-float": ("0.1", 0.1),
        "tiny-float": ("1e-7", 1e-7),
        "half": ("2.5", 2.5),
        "nested-floats": ('{"f": [0.1, 1e-7, 2.5, 3.0]}', {"f": [0.1, 1e-7, 2.5, 3.0]}),
    }
    big = {
        "nested-ints": (
            '{"big": 18446744073709551616, "n": -9223372036854775809, "f": 0.5}',
            {"big": 2**64, "n": -(2**63) - 1, "f": 0.5},
        ),
    }
    pages = []
    for values in (floats, big):
        run_id = make_run(api)
        created = {
            key: json.loads(put_raw(api, auth, run_id, f'{{"key": "{key}", "value": {raw}}}'))
            for key, (raw, _) in values.items()
        }
        page = api.client.get(f"{BASE}/runs/{run_id}/data", headers=auth).content
        listed = {entry["key"]: entry for entry in json.loads(page)["data"]}
        assert listed == created
        assert {key: entry["value"] for key, entry in listed.items()} == {
            key: value for key, (_, value) in values.items()
        }
        pages.append(page)
    if api.engine.dialect.name == "sqlite":  # the digits as written, not only the values
        for text in (b"9007199254740993", b"0.1", b"1e-7", b"2.5", b'{"f":[0.1,1e-7,2.5,3.0]}'):
            assert b'"value":' + text + b"," in pages[0]
        nested = b'"value":{"big":18446744073709551616,"n":-9223372036854775809,"f":0.5},'
        assert nested in pages[1]
