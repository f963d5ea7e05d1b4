"""The fast row encoder writes exactly the JSON the response models would."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from foreman_api.http.wire import RowEncoder
from foreman_api.schemas import Page, Run, Task, format_timestamp

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)
instants = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
) | st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1))  # SQLite: naive


def task_row(draw: Any) -> dict[str, Any]:
    maybe_time = st.none() | instants
    return {
        "id": uuid.uuid4(),
        "run_id": uuid.uuid4(),
        "parent_task_id": draw(st.none() | st.uuids()),
        "org_id": draw(st.text(min_size=1, max_size=8)),
        "type": draw(st.text(min_size=1, max_size=8)),
        "status": draw(st.sampled_from(["pending", "queued", "running", "completed"])),
        "input_data": draw(json_values),
        "output_data": draw(json_values),
        "error_data": draw(json_values),
        "metadata": draw(st.none() | st.dictionaries(st.text(), json_values, max_size=3)),
        "retry_count": draw(st.integers(0, 10)),
        "max_retries": draw(st.integers(0, 10)),
        "queue_job_id": draw(st.none() | st.text(max_size=8)),
        "created_at": draw(instants),
        "updated_at": draw(instants),
        "queued_at": draw(maybe_time),
        "started_at": draw(maybe_time),
        "completed_at": draw(maybe_time),
        "duration_ms": draw(st.none() | st.integers(0, 10**9)),
        "queue": "default",
        "queue_defaulted": True,  # a column no response shows
        "max_retries_defaulted": False,
        "lease_expires_at": draw(maybe_time),
        "retry_at": draw(maybe_time),
        "idempotency_key": draw(st.none() | st.text(max_size=8)),
    }


def as_model(model: type[BaseModel], row: dict[str, Any]) -> Any:
    return json.loads(model.model_validate(row).model_dump_json())


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_task_rows_encode_as_the_task_model(data: st.DataObject) -> None:
    row = task_row(data.draw)
    assert json.loads(RowEncoder(Task).encode(row)) == as_model(Task, row)


def test_a_page_encodes_as_the_page_model() -> None:
    now = datetime.now(UTC)
    rows = [
        {
            "id": uuid.uuid4(),
            "org_id": "o",
            "status": "running",
            "input_data": {"x": [1, 2.5]},
            "total_tasks": 3,
            "completed_tasks": 1,
            "failed_tasks": 0,
            "created_at": now,
            "updated_at": now + timedelta(milliseconds=1234),
            "started_at": now,
            "output_data": None,
            "error_data": None,
            "metadata": {"k": "é"},
            "completed_at": None,
            "duration_ms": None,
        }
        for _ in range(3)
    ]
    encoded = RowEncoder(Run).encode_page(rows, total=10, limit=3, offset=6)
    expected = Page[Run](
        data=[Run.model_validate(r) for r in rows],
        pagination={"total": 10, "limit": 3, "offset": 6},  # type: ignore[arg-type]
    )
    assert json.loads(encoded) == json.loads(expected.model_dump_json())


@pytest.mark.parametrize("value", [2**64, -(2**70), {"deep": [10**30]}])
def test_integers_beyond_64_bits_are_written_too(value: Any) -> None:
    now = datetime.now(UTC)
    row = {
        "id": uuid.uuid4(),
        "org_id": "o",
        "status": "pending",
        "input_data": value,
        "total_tasks": 0,
        "completed_tasks": 0,
        "failed_tasks": 0,
        "created_at": now,
        "updated_at": now,
    }
    assert json.loads(RowEncoder(Run).encode(row)) == as_model(Run, row)


@given(
    st.datetimes(
        min_value=datetime(1970, 1, 1),
        max_value=datetime(9999, 12, 30),
        timezones=st.sampled_from([None, UTC, timezone(timedelta(hours=5, minutes=30))]),
    )
)
def test_timestamps_are_utc_with_milliseconds(moment: datetime) -> None:
    text = format_timestamp(moment)
    aware = moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
    expected = aware.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    assert text == expected
