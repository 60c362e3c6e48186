"""Price at the time, for placements: a node started on a catalog offer records the offer and
its price when it starts; placements on it carry that record, and cost events name it."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from temporalio.testing import ActivityEnvironment
from typer.testing import CliRunner

from loomos.activities.audit import AuditActivities
from loomos.cli import app
from loomos.loomdb import EventQuery, open_event_store
from loomos.models.audit import AuditBatch, AuditEvent
from loomos.models.scheduler import NodeInfo, PlacementRequest
from loomos.placement import NodeCapacity, place
from loomos.settings import ConfigError, load_settings
from loomos.workers.node_capacity import NodeConfigError, detect_node, offer_price
from tests.helpers import REPO

P5 = "aws/us-east-1/-/p5.48xlarge"
T0 = datetime(2026, 6, 1, 8, 0, tzinfo=UTC)


def settings(**node: str) -> object:
    env = {"LOOMOS_CONFIG": "/nonexistent"} | {f"LOOMOS_NODE_{k.upper()}": v for k, v in node.items()}
    return load_settings(path=REPO / "temporal-dev.yaml", env=env)


def test_offer_price_is_recorded_from_the_catalog() -> None:
    record = offer_price(settings(offer=P5), now=T0)
    assert record is not None
    assert (record.offer_key, record.pricing_model, record.price_per_hour) == (P5, "on_demand", 98.32)
    assert record.gpus_per_node == 8 and record.recorded_at == T0 and record.catalog_as_of
    spot = offer_price(settings(offer=P5, pricing_model="spot"), now=T0)
    assert spot is not None and spot.price_per_hour == 30.3


def test_node_registers_with_its_price_record() -> None:
    node = detect_node(settings(offer=P5, cpu_slots="2"))
    assert node.price is not None and node.price.offer_key == P5
    assert node.price_per_slot_hour == pytest.approx(98.32 / 8)
    assert detect_node(settings()).price is None


def test_unknown_offer_or_missing_spot_price_is_a_clear_error() -> None:
    with pytest.raises(NodeConfigError, match=r"node.offer: no offer 'aws/us-east-1/-/p9.96xlarge'"):
        offer_price(settings(offer="aws/us-east-1/-/p9.96xlarge"))
    with pytest.raises(NodeConfigError, match=r"node.pricing_model: .*has no spot price"):
        offer_price(settings(offer="aws/us-west-2/-/p5.48xlarge", pricing_model="spot"))


@pytest.mark.parametrize(
    ("node", "message"),
    [
        ({"offer": P5, "price_per_slot_hour": "2.5"}, "not both"),
        ({"offer": "p5.48xlarge"}, "node.offer: String should match pattern"),
        ({"pricing_model": "reserved"}, "node.pricing_model: String should match pattern"),
    ],
)
def test_bad_price_settings_name_the_key(node: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        settings(**node)


def test_worker_node_refuses_an_unknown_offer_before_dialling_temporal() -> None:
    env = {"LOOMOS_NODE_OFFER": "gcp/us-central1/-/a9-nothing", "TEMPORAL_ADDRESS": "127.0.0.1:1"}
    result = CliRunner().invoke(app, ["worker", "node"], env=env)
    assert result.exit_code == 2, result.output
    assert result.stderr.strip().startswith("error: node.offer: no offer 'gcp/us-central1/-/a9-nothing'")
    assert "Traceback" not in result.output


def test_placement_carries_the_node_price_record() -> None:
    record = offer_price(settings(offer=P5), now=T0)
    info = NodeInfo(
        node_id="n1", pool="p", task_queue="loomos-node-n1", host="h", accelerator="cuda", gpu_type="H100",
        slots=8, price_per_slot_hour=record.price_per_gpu_hour, price=record,
    )  # fmt: skip
    request = PlacementRequest(job_id="j", workflow_id="job-j", pool="p", gpu_count=8)
    [assignment] = place(request, [NodeCapacity(info, 8)])
    assert assignment.price == record and assignment.price_per_slot_hour == pytest.approx(12.29)


async def test_cost_event_names_the_recorded_offer(tmp_path: Path) -> None:
    record = offer_price(settings(offer=P5), now=T0)
    info = NodeInfo(
        node_id="n1", pool="p", task_queue="q", host="h", accelerator="cuda", gpu_type="H100", slots=8,
        price_per_slot_hour=record.price_per_gpu_hour, price=record,
    )  # fmt: skip
    [assignment] = place(PlacementRequest(job_id="j", workflow_id="job-j", pool="p", gpu_count=8),
                         [NodeCapacity(info, 8)])  # fmt: skip
    store = open_event_store(f"sqlite:///{tmp_path / 'loomdb.sqlite'}")
    acts = AuditActivities(store)

    def batch(seq: int, event_type: str, data: dict, hours: float) -> AuditBatch:
        from datetime import timedelta

        event = AuditEvent(seq=seq, event_type=event_type, occurred_at=T0 + timedelta(hours=hours), data=data)
        return AuditBatch(workflow_id="job-j", job_id="j", user="ada", team="vision", events=[event])

    env = ActivityEnvironment()
    nodes = [assignment.model_dump(mode="json")]
    await env.run(acts.record_audit_events, batch(1, "job.placed", {"attempt": 1, "nodes": nodes}, 0))
    await env.run(acts.record_audit_events, batch(2, "job.started", {"attempt": 1, "nodes": ["n1"]}, 0))
    await env.run(acts.record_audit_events, batch(3, "job.succeeded", {"attempts": 1}, 2))
    [cost] = store.query(EventQuery(event_types=["cost.recorded"])).events
    assert cost.data["amount_usd"] == pytest.approx(98.32 * 2)  # the recorded price, 2 hours
    assert cost.data["offer_keys"] == [P5] and cost.data["provider"] == "aws"
    assert cost.data["pricing_model"] == "on_demand" and cost.data["catalog_as_of"] == record.catalog_as_of
