"""The fast canonical JSON encoder must write exactly what json.JSONEncoder.encode writes: the
text is hashed, so a single differing byte would break verification of stored events."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from loomos.loomdb import hashchain as H
from loomos.loomdb.events import NewEvent

VALUES = [
    {},
    [],
    "plain",
    'ünïcode \u2028 \x01 \x1f " \\ / 😀',
    0,
    -1,
    2**53,
    2**53 + 1,
    2**64,
    -(2**70) - 3,
    1.0,
    0.1,
    1e16,
    1e-7,
    -3.5e300,
    True,
    False,
    None,
    {"z": 1, "a": [1, 2.5, None, {"é": "x", "e": "y", "E": {}}], "": 0},
    {"step": 1, "loss": 0.123456, "hardware_config": {"gpu_count": 8, "gpu_type": "H100"}},
    [[["deep"]], {"k": [True, 2**60 + 1]}],
]


@pytest.mark.parametrize("value", VALUES, ids=range(len(VALUES)))
def test_fast_encoder_matches_reference(value):
    assert H._canonical_json(value) == H._canonical_json_reference(value)
    assert H.json_text(value) == H._canonical_json_reference(H._json_normal(value)) or not isinstance(
        value, dict
    )


def test_append_hash_equals_event_hash():
    from loomos.loomdb.store import EventStore

    e = NewEvent(
        event_type="custom.thing",
        stream_id="s-1",
        occurred_at=datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=UTC),
        correlation_id="c\u00e9",
        context={"user_id": "ü", "cost_center": "cc"},
        security={"roles": ["a", "b"], "access_level": "x"},
        tags=["t1"],
        data={"n": 2**60 + 1, "f": 3.0, "s": 'ü"', "l": [1.5, None]},
        metadata={"m": 1},
        retention_days=30,
        event_id=uuid.uuid4(),
    )
    now = datetime.now(UTC)
    row = EventStore._row(e, "1.0.0", 7, 3, now, H.iso(now), "ab" * 32)
    assert row["hash"] == H.event_hash(row)
    assert row["hash"] == H.event_hash({k: v for k, v in row.items() if not k.endswith(("_json", "_iso"))})
