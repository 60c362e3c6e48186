"""The events API: query, append, SSE stream with Last-Event-ID, compliance report."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
import uuid

import httpx
import pytest
import uvicorn
from fastapi.testclient import TestClient

from loomos.api.app import create_app
from loomos.loomdb import NewEvent
from loomos.settings import Settings
from tests.helpers.authz import authenticated


@pytest.fixture
def app(store, tmp_path):
    app = authenticated(create_app(Settings()))
    app.state.loomdb = store
    return app


@pytest.fixture
def client(app):
    with TestClient(app) as c:
        yield c


def seed(store, n: int = 12) -> None:
    store.append_many(
        [
            NewEvent(
                event_type="custom.metric",
                stream_id=f"run-{i % 2}",
                context={"user_id": "alice"},
                tags=["healthcare"] if i % 3 == 0 else [],
                data={"step": i, "cfg": {"gpus": i % 4}},
            )
            for i in range(n)
        ]
    )


def test_query(client, store):
    seed(store)
    r = client.get(
        "/api/v1/events", params={"event_type": "custom.metric", "filter": ["data.cfg.gpus >= 2"], "limit": 3}
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert [e["data"]["step"] for e in body["events"]] == [2, 3, 6]
    r2 = client.get(
        "/api/v1/events",
        params={
            "event_type": "custom.metric",
            "filter": ["data.cfg.gpus >= 2"],
            "limit": 3,
            "cursor": body["next_cursor"],
        },
    )
    assert [e["data"]["step"] for e in r2.json()["events"]] == [7, 10, 11]
    r3 = client.get("/api/v1/events", params=[("filter", "tags contains healthcare"), ("order", "desc")])
    assert [e["position"] for e in r3.json()["events"]] == [10, 7, 4, 1]


@pytest.mark.parametrize(
    "params, needle",
    [
        ({"filter": "bogus"}, "PATH OP VALUE"),
        ({"filter": "data.x' OR 1=1 -- = 1"}, "PATH OP VALUE"),
        ({"filter": "secret.key = 1"}, "unknown path"),
        ({"cursor": "nope"}, "cursor"),
        ({"event_type": "Robert'); DROP TABLE loomdb_events;--"}, "dotted"),
        ({"start": "2026-01-01T00:00:00"}, "timezone"),
        ({"start": "2026-02-01T00:00:00Z", "end": "2026-01-01T00:00:00Z"}, "must be after start"),
        ({"filter": "data.gpus >= [4]"}, "number or a string"),
        ({"filter": "position >= ten"}, "integer"),
    ],
)
def test_query_bad_input(client, store, params, needle):
    seed(store, 2)
    r = client.get("/api/v1/events", params=params)
    assert r.status_code == 400, r.text
    assert needle in r.json()["detail"]
    assert store.head()[0] == 2


def test_query_bad_limit(client):
    assert client.get("/api/v1/events", params={"limit": 0}).status_code == 422
    assert client.get("/api/v1/events", params={"order": "sideways"}).status_code == 422


def test_append(client, store):
    eid = str(uuid.uuid4())
    body = {
        "event_id": eid,
        "event_type": "custom.deploy.approved",
        "stream_id": "deploy-7",
        "context": {"user_id": "bob"},
        "data": {"model": "m1"},
    }
    r = client.post("/api/v1/events", json=body)
    assert r.status_code == 201, r.text
    assert r.json() == {"position": 1, "event_id": eid}
    again = client.post("/api/v1/events", json=body)  # a client retry
    assert again.status_code == 201 and again.json()["position"] == 1
    r = client.post("/api/v1/events", json={**body, "event_id": str(uuid.uuid4()), "expected_version": 0})
    assert (
        r.status_code == 409
        and "stream 'deploy-7': expected version 0, but it is at version 1" in r.json()["detail"]
    )
    assert store.head()[0] == 1


@pytest.mark.parametrize(
    "body, status, needle",
    [
        ({"event_type": "job.succeeded", "stream_id": "job-x", "data": {}}, 400, "reserved"),
        ({"event_type": "cost.recorded", "stream_id": "c", "data": {"amount_usd": 1}}, 400, "reserved"),
        (
            {"event_type": "model.training.started", "stream_id": "s", "data": {"dataset_id": "x"}},
            422,
            "violations",
        ),
        ({"event_type": "custom.x", "stream_id": "s", "expected_version": -3}, 400, "expected_version"),
        ({"event_type": "custom.x", "stream_id": "s", "surprise": True}, 422, "unknown field"),
        ({"event_type": "custom.x"}, 422, "stream_id"),
        ({"event_type": "custom.x", "stream_id": "s", "occurred_at": "2026-01-01T00:00:00"}, 422, "timezone"),
    ],
)
def test_append_bad_input(client, store, body, status, needle):
    r = client.post("/api/v1/events", json=body)
    assert r.status_code == status, r.text
    assert needle in json.dumps(r.json())
    assert store.head()[0] == 0


def test_schema_violation_lists_every_violation(client):
    r = client.post(
        "/api/v1/events",
        json={
            "event_type": "model.training.started",
            "stream_id": "s",
            "data": {"dataset_id": "x", "hardware_config": {}},
        },
    )
    detail = r.json()["detail"]
    assert r.status_code == 422 and len(detail["violations"]) >= 5


def test_compliance_report(client, store):
    store.append(
        NewEvent(
            event_type="security.access.denied",
            stream_id="api",
            context={"user_id": "mallory"},
            data={"reason": "no role"},
        )
    )
    r = client.get(
        "/api/v1/compliance/report", params={"start": "2020-01-01T00:00:00Z", "end": "2100-01-01T00:00:00Z"}
    )
    assert r.status_code == 200 and r.json()["denials"][0]["user_id"] == "mallory"
    r = client.get(
        "/api/v1/compliance/report",
        params={"start": "2020-01-01T00:00:00Z", "end": "2100-01-01T00:00:00Z", "format": "csv"},
    )
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    assert r.text.splitlines()[0].startswith("section,")
    bad = client.get(
        "/api/v1/compliance/report", params={"start": "2026-02-01T00:00:00Z", "end": "2026-01-01T00:00:00Z"}
    )
    assert bad.status_code == 400 and "after start" in bad.json()["detail"]
    assert client.get("/api/v1/compliance/report", params={"start": "x", "end": "y"}).status_code == 422
    assert client.get("/api/v1/compliance/report").status_code == 422


def test_store_opens_lazily_from_settings(tmp_path):
    app = authenticated(create_app(Settings(loomdb={"url": f"sqlite:///{tmp_path}/lazy.sqlite"})))
    with TestClient(app) as c:
        assert c.get("/api/v1/events").json() == {"events": [], "next_cursor": None}
    assert app.state.loomdb.dialect == "sqlite"
    app.state.loomdb.close()


def test_unavailable_store_is_a_503(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    app = authenticated(create_app(Settings(loomdb={"url": f"sqlite:///{blocker}/sub/db.sqlite"})))
    with TestClient(app) as c:
        r = c.get("/api/v1/events")
    assert r.status_code == 503 and "unavailable" in r.json()["detail"]


@pytest.fixture
def server(app):
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    srv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not srv.started and time.monotonic() < deadline:
        time.sleep(0.02)
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    thread.join(10)


async def read_sse(
    url: str, count: int, headers: dict | None = None, params: dict | None = None
) -> list[dict]:
    got: list[dict] = []
    async with httpx.AsyncClient(timeout=15) as c:
        async with c.stream("GET", url, headers=headers or {}, params=params) as r:
            assert r.status_code == 200
            current: dict = {}
            async for line in r.aiter_lines():
                if line.startswith("id:"):
                    current["id"] = line[3:].strip()
                elif line.startswith("event:"):
                    current["event"] = line[6:].strip()
                elif line.startswith("data:"):
                    current["data"] = json.loads(line[5:].strip())
                elif not line and "id" in current:
                    got.append(current)
                    current = {}
                    if len(got) >= count:
                        break
    return got


async def test_sse_stream_resumes_with_last_event_id(server, store):
    seed(store, 5)
    first = await asyncio.wait_for(read_sse(f"{server}/api/v1/events/stream", 3), 20)
    assert [e["id"] for e in first] == ["1", "2", "3"]
    assert first[0]["event"] == "custom.metric" and first[0]["data"]["data"]["step"] == 0
    # Reconnect after event 3; event 6 arrives live while connected.
    task = asyncio.ensure_future(
        read_sse(f"{server}/api/v1/events/stream", 3, headers={"Last-Event-ID": "3"})
    )
    await asyncio.sleep(0.5)
    await asyncio.to_thread(store.append, NewEvent(event_type="custom.live", stream_id="x", data={"n": 6}))
    resumed = await asyncio.wait_for(task, 20)
    assert [e["id"] for e in resumed] == ["4", "5", "6"] and resumed[2]["event"] == "custom.live"
    filtered = await asyncio.wait_for(
        read_sse(f"{server}/api/v1/events/stream", 1, params={"event_type": "custom.live"}), 20
    )
    assert [e["id"] for e in filtered] == ["6"]


async def test_sse_bad_input(server):
    async with httpx.AsyncClient(timeout=10) as c:
        r = await c.get(f"{server}/api/v1/events/stream", headers={"Last-Event-ID": "abc"})
        assert r.status_code == 400 and "Last-Event-ID" in r.json()["detail"]
        r = await c.get(f"{server}/api/v1/events/stream", params={"filter": "nope"})
        assert r.status_code == 400
        r = await c.get(f"{server}/api/v1/events/stream", params={"from_position": -1})
        assert r.status_code == 422
