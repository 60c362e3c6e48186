"""The fast canonical JSON encoder must write exactly what json.JSONEncoder.encode writes: the
text is hashed, so a single differing byte would break verification of stored events."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from loomos.loomdb import canonical as C
from loomos.loomdb import hashchain as H
from loomos.models.events import NewEvent

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
    assert C.canonical_json(value) == C.canonical_json_reference(value)
    assert C.json_text(value) == C.canonical_json_reference(C.json_normal(value)) or not isinstance(
        value, dict
    )


def test_append_hash_equals_event_hash():
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
    row = H.event_row(e, "1.0.0", 7, 3, now, C.iso(now), "ab" * 32)
    assert row["hash"] == H.event_hash(row)
    assert row["hash"] == H.event_hash({k: v for k, v in row.items() if not k.endswith(("_json", "_iso"))})


def test_encode_plan_matches_row_hash_and_copy_row():
    """The one-pass COPY encoder (cached JSON fragments, no row dicts) hashes exactly what
    hashchain.event_row hashes and writes exactly copy_row's bytes, for varied and repeated values."""
    from datetime import timedelta, timezone

    from loomos.loomdb import pg_copy as P

    plus2 = timezone(timedelta(hours=2))
    events = []
    for i in range(40):
        events.append(
            NewEvent(
                event_type="custom.thing" if i % 2 else "job.log",
                stream_id=f"s-{i % 3}",
                occurred_at=datetime(2024, 5, 6, 7, 8, 9, i, tzinfo=plus2 if i % 3 else UTC),
                correlation_id='c"\u00e9' if i % 4 == 0 else None,
                causation_id="x\n" if i % 5 == 0 else None,
                context={"user_id": "ü" if i % 2 else None, "cost_center": "cc\\"},
                security={"roles": ["a", f"b{i % 2}"], "access_level": "x" if i % 3 else None},
                tags=["t1"] if i % 2 else [],
                priority="critical" if i % 7 == 0 else "normal",
                data={"n": 2**60 + i, "f": 3.0, "s": 'ü"', "l": [1.5, None]},
                metadata={"m": i} if i % 2 else {},
                retention_days=30 if i % 6 == 0 else None,
            )
        )
    for i, ts in enumerate(
        [
            datetime(1999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
            datetime(1969, 7, 20, 20, 17, 40, 5, tzinfo=plus2),
            datetime(1, 1, 1, 0, 0, 0, 1, tzinfo=UTC),
            datetime(2100, 2, 28, 23, 59, 59, tzinfo=UTC),
        ]
    ):
        events[i] = events[i].model_copy(update={"occurred_at": ts})
    now = datetime.now(UTC)
    plan = [(e, "1.0.0" if i % 2 else None, 100 + i, i + 1) for i, e in enumerate(events)]
    chunks: list[bytes] = []
    last = P.encode_plan(plan, now, C.iso(now), "ab" * 32, 500, chunks.append)
    prev, rows = "ab" * 32, []
    for e, v, p, sv in plan:
        row = H.event_row(e, v, p, sv, now, C.iso(now), prev)
        assert row["hash"] == H.event_hash(row)
        rows.append(row)
        prev = row["hash"]
    assert last == prev
    assert b"".join(chunks) == P.copy_data(rows)
    assert len(chunks) > 2
