"""EventQuery on both backends: types, time range, nested filters, order, cursors, and
injection attempts at every field."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from loomos.loomdb import EventQuery, NewEvent, QueryError


@pytest.fixture
def loaded(clocked_store, clock):
    s = clocked_store
    for i in range(30):
        s.append(
            NewEvent(
                event_type="model.training.checkpoint" if i % 3 else "data.ingested_raw",
                stream_id=f"job-{i % 4}",
                context={"compliance_level": "SOC2_TYPE2" if i % 2 else "HIPAA", "user_id": f"u{i % 5}"},
                security={"roles": ["admin"] if i % 7 == 0 else ["ml"]},
                tags=["healthcare"] if i % 5 == 0 else ["retail"],
                data={
                    "step": i,
                    "uri": f"file:///c/{i}",
                    "name": f"run-{i}",
                    "hardware_config": {"gpu_count": i % 9, "gpu_type": "H100" if i % 2 else "A100"},
                    "flag": i % 2 == 0,
                    "items": ["a", "b"] if i % 6 == 0 else [],
                },
            )
        )
        clock.advance(hours=1)
    return s


def positions(store, **kw) -> list[int]:
    return [e.position for e in store.query(EventQuery(limit=1000, **kw)).events]


def test_filters(loaded):
    s = loaded
    assert positions(s, filters=["data.hardware_config.gpu_count >= 7"]) == [
        i + 1 for i in range(30) if i % 9 >= 7
    ]
    assert positions(s, filters=["tags contains healthcare"]) == [i + 1 for i in range(30) if i % 5 == 0]
    assert positions(s, filters=["context.compliance_level = SOC2_TYPE2"]) == [
        i + 1 for i in range(30) if i % 2
    ]
    assert positions(s, filters=["security.roles contains admin"]) == [i + 1 for i in range(30) if i % 7 == 0]
    assert positions(s, filters=["data.hardware_config.gpu_type = H100", "data.step < 5"]) == [2, 4]
    assert positions(s, filters=["data.flag = true", "data.step <= 4"]) == [1, 3, 5]
    assert positions(s, filters=["data.items contains b"]) == [i + 1 for i in range(30) if i % 6 == 0]
    assert positions(s, filters=['data.name = "run-3"']) == [4]
    assert positions(s, filters=["data.name >= run-8"]) == [9, 10]  # strings compare as strings
    assert positions(s, filters=["data.missing exists"]) == []
    assert len(positions(s, filters=["data.step exists"])) == 30
    assert positions(s, filters=["data.step != 0", "data.step < 3"]) == [2, 3]
    assert positions(s, filters=["stream_id = job-1", "position > 20"]) == [22, 26, 30]
    assert positions(s, filters=["context.user_id = u3", "data.step < 10"]) == [4, 9]


def test_types_time_range_and_order(loaded, clock):
    s = loaded
    assert len(positions(s, event_types=["data.ingested_raw"])) == 10
    assert len(positions(s, event_types=["model.*"])) == 20
    assert len(positions(s, event_types=["model.training.checkpoint", "data.*"])) == 30
    from datetime import timedelta

    start = clock.now - timedelta(hours=30)
    got = positions(s, start=start + timedelta(hours=5), end=start + timedelta(hours=8))
    assert got == [6, 7, 8]
    from loomos.models.events import utcnow

    # occurred_at is the caller's time (real now here), recorded_at the store's (the test clock).
    assert positions(s, time_field="occurred_at", start=utcnow() + timedelta(hours=1)) == []
    assert len(positions(s, time_field="occurred_at", end=utcnow() + timedelta(hours=1))) == 30
    assert positions(s, order="desc", filters=["data.step < 3"]) == [3, 2, 1]
    assert positions(s, stream_id="job-2", after_position=20) == [23, 27]


def test_cursor_pagination_visits_everything_once(loaded):
    for order in ("asc", "desc"):
        seen, cursor = [], None
        while True:
            page = loaded.query(EventQuery(filters=["data.step >= 3"], order=order, limit=7, cursor=cursor))
            seen += [e.position for e in page.events]
            cursor = page.next_cursor
            if cursor is None:
                break
        expected = list(range(4, 31))
        assert seen == (expected if order == "asc" else expected[::-1])


@pytest.mark.parametrize(
    "kw, needle",
    [
        ({"filters": ["nonsense"]}, "PATH OP VALUE"),
        ({"filters": ["data.x ~ 3"]}, "PATH OP VALUE"),
        ({"filters": ["colour = red"]}, "unknown path"),
        ({"filters": ["context.password = x"]}, "unknown path"),
        ({"filters": ["data = 3"]}, "name a field"),
        ({"filters": ["data.a..b = 3"]}, "each part"),
        ({"filters": ["data.x >= [1]"]}, "number or a string"),
        ({"filters": ["data.x exists 3"]}, "takes no value"),
        ({"filters": ["data.x ="]}, "missing value"),
        ({"filters": ["tags = a"]}, "only 'contains'"),
        ({"filters": ["event_type contains a"]}, "'contains' applies"),
        ({"filters": ["position >= abc"]}, "integer"),
        ({"filters": ["occurred_at >= yesterday"]}, "ISO 8601"),
        ({"filters": ["event_id = 12"]}, "UUID"),
        ({"cursor": "garbage!!"}, "cursor"),
        ({"cursor": "eyJwIjotMSwibyI6ImFzYyJ9"}, "cursor"),
    ],
)
def test_bad_queries(loaded, kw, needle):
    with pytest.raises((QueryError, ValidationError), match=needle):
        loaded.query(EventQuery(**kw))


def test_bad_query_models():
    from datetime import UTC, datetime

    with pytest.raises(ValidationError, match="timezone"):
        EventQuery(start=datetime(2026, 1, 1))
    with pytest.raises(ValidationError):
        EventQuery(limit=0)
    with pytest.raises(ValidationError, match="dotted"):
        EventQuery(event_types=["DROP TABLE"])
    t = datetime(2026, 1, 1, tzinfo=UTC)
    with pytest.raises(ValidationError, match="must be after start"):
        EventQuery(start=t, end=t)


def test_cursor_for_another_order_is_refused(loaded):
    page = loaded.query(EventQuery(limit=2))
    with pytest.raises(QueryError, match="order=asc"):
        loaded.query(EventQuery(limit=2, order="desc", cursor=page.next_cursor))


INJECTIONS = [
    "'; DROP TABLE loomdb_events; --",
    "x' OR '1'='1",
    "1) OR (1=1",
    '" OR ""="',
    "$.a') OR 1=1 --",
    "{a,b}'; SELECT pg_sleep(1); --",
    "%' OR event_type LIKE '%",
]


@pytest.mark.parametrize("payload", INJECTIONS)
def test_injection_attempts_at_every_field(loaded, payload):
    s = loaded
    before = s.head()
    attempts = [
        {"stream_id": payload},
        {"filters": [f"data.name = {payload}"]},
        {"filters": [f"data.hardware_config.gpu_type >= {payload}"]},
        {"filters": [f"tags contains {payload}"]},
        {"filters": [f"security.roles contains {payload}"]},
        {"filters": [f"context.compliance_level = {payload}"]},
        {"filters": [f"context.user_id != {payload}"]},
        {"filters": [f"event_type = {payload}"]},
        {"filters": [f"data.items contains {payload}"]},
    ]
    for kw in attempts:
        got = s.query(EventQuery(limit=1000, **kw)).events
        # A value is only ever a value: it matches nothing (or, for !=, everything).
        assert len(got) in (0, 30), (kw, len(got))
    refused = [
        {"filters": [f"data.{payload} = 1"]},
        {"filters": [f"{payload} = 1"]},
        {"event_types": [payload]},
        {"cursor": payload},
        {"filters": [f"context.{payload} = 1"]},
    ]
    for kw in refused:
        with pytest.raises((QueryError, ValidationError)):
            s.query(EventQuery(**kw))
    assert s.head() == before
    assert len(positions(s)) == 30
    assert s.verify().ok
