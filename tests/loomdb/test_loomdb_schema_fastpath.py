"""The fast validator (jsonschema-rs) against the reference (python-jsonschema): for every shipped
schema and every field-form rule, on valid and invalid data and on edge cases, the registry's
answer must be the reference's. The fast path may only ever say "valid" where the reference
does; schemas where the two disagree that way get no fast validator."""

from __future__ import annotations

import dataclasses

import pytest
from jsonschema import Draft202012Validator

from loomos.loomdb.errors import InvalidEvent
from loomos.loomdb.schemas import (
    _RULES,
    BUILTIN_SCHEMAS,
    SchemaRegistry,
    builtin_registry,
    schema_from_fields,
)

EDGE_VALUES = [
    None,
    True,
    False,
    0,
    1,
    -1,
    1.0,
    0.5,
    2**53 + 1,
    2**64,
    -(2**70),
    float("inf"),
    "",
    "x",
    "a\n",
    "😀",
    "2026-01-01T00:00:00Z",
    "2026-01-01T00:00:00Z\n",
    "0b5e2c1e-7a43-4d59-9b1e-6a4f0f3f2a11",
    "0b5e2c1e-7a43-4d59-9b1e-6a4f0f3f2a11\n",
    "s3://bucket/key",
    "٣",
    [],
    [1, True],
    [1, 1.0],
    {},
    {"gpu_count": 8, "node_count": 1, "memory_gb": 80},
    {"gpu_count": 8.0},
]


def _reference_ok(schema: dict, data: object) -> bool:
    return Draft202012Validator(schema).is_valid(data)


def _registry_ok(registry: SchemaRegistry, event_type: str, data: object) -> bool:
    try:
        registry.validate(event_type, data)  # type: ignore[arg-type]
    except InvalidEvent:
        return False
    return True


def _instances(schema: dict) -> list[object]:
    """Edge values alone, and as every property of an object (with the required ones present)."""
    out: list[object] = list(EDGE_VALUES)
    props = list(schema.get("properties", {}))
    required = schema.get("required", [])
    for name in props or ["x"]:
        for v in EDGE_VALUES:
            base = {r: "x" for r in required}
            base[name] = v
            out.append(base)
            out.append({k: val for k, val in base.items() if k != required[0]} if required else {name: v})
    return out


@pytest.mark.parametrize("event_type", sorted(BUILTIN_SCHEMAS))
def test_builtin_schemas_agree_with_the_reference(event_type):
    registry = builtin_registry()
    entry = registry.latest(event_type)
    assert entry is not None and entry.fast is not None  # the shipped schemas all take the fast path
    for data in _instances(entry.schema):
        assert _registry_ok(registry, event_type, data) == _reference_ok(entry.schema, data), data


@pytest.mark.parametrize("rule", sorted(_RULES))
def test_field_rules_agree_with_the_reference(rule):
    schema = schema_from_fields(["f"], validation_rules={"f": rule})
    registry = SchemaRegistry()
    registry.add(SchemaRegistry.check("custom.rule", "1.0.0", schema))
    for v in EDGE_VALUES:
        data = {"f": v}
        assert _registry_ok(registry, "custom.rule", data) == _reference_ok(schema, data), (rule, v)


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "object", "properties": {"x": {"type": "number", "multipleOf": 0.01}}},
        {"type": "object", "properties": {"x": {"$ref": "https://example.com/remote.json"}}},
        {"type": "object", "unevaluatedProperties": False},
    ],
)
def test_schemas_the_fast_path_could_disagree_on_have_none(schema):
    entry = SchemaRegistry.check("custom.slow", "1.0.0", schema)
    assert entry.fast is None


def test_multiple_of_follows_the_reference():
    """jsonschema-rs takes 0.07 for a multiple of 0.01, python-jsonschema does not: the registry
    must answer as the reference does."""
    schema = {"type": "object", "properties": {"x": {"multipleOf": 0.01}}}
    registry = SchemaRegistry()
    registry.add(SchemaRegistry.check("custom.money", "1.0.0", schema))
    assert _registry_ok(registry, "custom.money", {"x": 0.07}) == _reference_ok(schema, {"x": 0.07})
    assert not _registry_ok(registry, "custom.money", {"x": 0.015})
    assert _registry_ok(registry, "custom.money", {"x": "not a number: multipleOf does not apply"})


def test_valid_data_does_not_reach_the_reference():
    """The point of the fast path: a valid event is accepted without python-jsonschema."""

    class Refuses:
        def iter_errors(self, data):
            raise AssertionError("the reference validator ran for valid data")

    entry = builtin_registry().latest("model.training.checkpoint")
    registry = SchemaRegistry()
    registry.add(dataclasses.replace(entry, validator=Refuses()))
    assert registry.validate("model.training.checkpoint", {"step": 1, "uri": "s3://b/k"}) == entry.version
    with pytest.raises(AssertionError, match="reference validator ran"):
        registry.validate("model.training.checkpoint", {"step": -1, "uri": "s3://b/k"})


def test_data_the_fast_path_cannot_take_goes_to_the_reference():
    """Non-string keys make jsonschema-rs raise; the reference decides (and lists violations)."""
    schema = {"type": "object", "required": ["a"]}
    registry = SchemaRegistry()
    registry.add(SchemaRegistry.check("custom.keys", "1.0.0", schema))
    assert _registry_ok(registry, "custom.keys", {1: 2, "a": 1})
    with pytest.raises(InvalidEvent) as err:
        registry.validate("custom.keys", {1: 2})
    assert err.value.violations and "'a' is a required property" in err.value.violations[0]


def test_violations_come_from_the_reference_all_of_them():
    registry = builtin_registry()
    with pytest.raises(InvalidEvent) as err:
        registry.validate("model.training.checkpoint", {"step": -1, "uri": ""})
    text = " | ".join(err.value.violations)
    assert "data.step" in text and "data.uri" in text and "job_id" not in text
