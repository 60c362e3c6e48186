"""Event schemas: one JSON Schema per event type and semantic version.

The LoomOS documents describe schemas as `required_fields` / `optional_fields` /
`validation_rules`; `schema_from_fields` turns that form into a JSON Schema, so both forms can
be registered. An append is validated against the newest version registered for its type, and
the event records that version. Types with no schema are accepted (custom events).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import jsonschema_rs
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError as JsonSchemaError

from loomos.loomdb.errors import InvalidEvent, SchemaError
from loomos.models.events import EVENT_TYPE_PATTERN

SEMVER = re.compile(r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)$")
UUID_PATTERN = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"

# The validation-rule vocabulary of the documents' field-list form.
_RULES: dict[str, dict[str, Any]] = {
    "uuid": {"type": "string", "pattern": UUID_PATTERN},
    "string": {"type": "string"},
    "non_empty_string": {"type": "string", "minLength": 1},
    "integer": {"type": "integer"},
    "positive_integer": {"type": "integer", "minimum": 1},
    "non_negative_integer": {"type": "integer", "minimum": 0},
    "number": {"type": "number"},
    "positive_number": {"type": "number", "exclusiveMinimum": 0},
    "non_negative_number": {"type": "number", "minimum": 0},
    "boolean": {"type": "boolean"},
    "datetime": {
        "type": "string",
        "pattern": r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$",
    },
    "object": {"type": "object"},
    "array": {"type": "array"},
    "uri": {"type": "string", "pattern": r"^[a-z][a-z0-9+.-]*://\S+$"},
}


def parse_semver(version: str) -> tuple[int, int, int]:
    m = SEMVER.match(version)
    if not m:
        raise SchemaError(f"schema version {version!r} is not a semantic version (MAJOR.MINOR.PATCH)")
    return int(m[1]), int(m[2]), int(m[3])


def _rule_schema(field: str, rule: Any) -> dict[str, Any]:
    if isinstance(rule, str):
        if rule not in _RULES:
            raise SchemaError(
                f"{field}: unknown validation rule {rule!r} (known: {', '.join(sorted(_RULES))})"
            )
        return dict(_RULES[rule])
    if isinstance(rule, list):
        return {"allOf": [_rule_schema(field, r) for r in rule]}
    if isinstance(rule, dict):
        out: dict[str, Any] = {}
        for key, value in rule.items():
            if key == "contains":
                if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                    raise SchemaError(f"{field}: 'contains' needs a list of field names")
                out.update({"type": "object", "required": list(value)})
            elif key == "enum":
                if not isinstance(value, list) or not value:
                    raise SchemaError(f"{field}: 'enum' needs a non-empty list")
                out["enum"] = value
            elif key in ("min", "max"):
                if not isinstance(value, int | float) or isinstance(value, bool):
                    raise SchemaError(f"{field}: {key!r} needs a number")
                out["minimum" if key == "min" else "maximum"] = value
            elif key == "pattern":
                try:
                    re.compile(value)
                except (re.error, TypeError) as exc:
                    raise SchemaError(f"{field}: bad pattern: {exc}") from None
                out.update({"type": "string", "pattern": value})
            elif key == "type":
                out.update(_rule_schema(field, value))
            else:
                raise SchemaError(f"{field}: unknown rule key {key!r}")
        return out
    raise SchemaError(f"{field}: a validation rule is a name, a list or a mapping, not {type(rule).__name__}")


def schema_from_fields(
    required_fields: list[str],
    optional_fields: list[str] | None = None,
    validation_rules: dict[str, Any] | None = None,
    additional_fields: bool = True,
) -> dict[str, Any]:
    """JSON Schema for an event's `data` from the documents' field-list form."""
    optional_fields = optional_fields or []
    rules = validation_rules or {}
    unknown = set(rules) - set(required_fields) - set(optional_fields)
    if unknown:
        raise SchemaError(
            f"validation_rules name fields that are neither required nor optional: {sorted(unknown)}"
        )
    props = {f: _rule_schema(f, rules[f]) if f in rules else {} for f in [*required_fields, *optional_fields]}
    return {
        "type": "object",
        "properties": props,
        "required": list(required_fields),
        "additionalProperties": additional_fields,
    }


# Keywords whose meaning the fast validator (jsonschema-rs) does not share with the reference
# (python-jsonschema) in every case, or that could reach outside the schema: a schema using any
# of them is checked by the reference alone. multipleOf: rs accepts 0.07 as a multiple of 0.01,
# the reference does not (it divides in floating point). Remote $refs are never fetched by the
# fast path. The scan looks at every key, property names included: a false match only costs speed.
_NOT_FAST = frozenset(
    {
        "multipleOf",
        "$dynamicRef",
        "$recursiveRef",
        "unevaluatedProperties",
        "unevaluatedItems",
        "dependencies",
    }
)


def _fast_safe(node: Any) -> bool:
    if isinstance(node, dict):
        for key, value in node.items():
            if key in _NOT_FAST:
                return False
            if key == "$ref" and not (isinstance(value, str) and value.startswith("#")):
                return False
            if not _fast_safe(value):
                return False
    elif isinstance(node, list):
        return all(_fast_safe(v) for v in node)
    return True


def _fast_validator(schema: dict[str, Any]) -> Any:
    """A compiled jsonschema-rs validator for `schema`, or None when the reference must decide
    alone (see _NOT_FAST) or rs cannot compile it (a pattern its regex engine refuses)."""
    if not _fast_safe(schema):
        return None
    try:
        return jsonschema_rs.Draft202012Validator(schema)
    except Exception:  # noqa: BLE001 - any refusal just means: no fast path
        return None


@dataclass(frozen=True)
class RegisteredSchema:
    """A schema version and its validators. `validator` (python-jsonschema) is the reference: it
    lists the violations and has the last word. `fast` (jsonschema-rs, about 20x faster on the
    shipped schemas) only answers "valid" for the common case: where it says invalid, or cannot
    take the data, the reference decides. Where the two could disagree the other way (fast
    accepting what the reference refuses) the schema gets no fast validator (_NOT_FAST);
    tests/loomdb/test_loomdb_schema_fastpath.py checks them against each other."""

    event_type: str
    version: str
    schema: dict[str, Any]
    validator: Any
    fast: Any = None

    @property
    def key(self) -> tuple[int, int, int]:
        return parse_semver(self.version)

    def validate(self, data: dict[str, Any]) -> str:
        """This version, if `data` is valid; raises InvalidEvent listing every violation."""
        if self.fast is not None:
            try:
                if self.fast.is_valid(data):
                    return self.version
            except Exception:  # noqa: BLE001 - data rs cannot take (say, non-string keys): the reference decides
                pass
        errors = sorted(self.validator.iter_errors(data), key=lambda e: list(map(str, e.absolute_path)))
        if errors:
            raise InvalidEvent(self.event_type, [_violation(e) for e in errors], self.version)
        return self.version


def _violation(err: Any) -> str:
    path = "data" + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err.absolute_path)
    return f"{path}: {err.message}"


class SchemaRegistry:
    """In-memory view of the schemas; the store persists registrations and reloads them."""

    def __init__(self) -> None:
        self._by_type: dict[str, list[RegisteredSchema]] = {}

    @staticmethod
    def check(event_type: str, version: str, schema: dict[str, Any]) -> RegisteredSchema:
        if not re.fullmatch(EVENT_TYPE_PATTERN, event_type):
            raise SchemaError(
                f"event type {event_type!r} is not a dotted lowercase name such as 'data.ingested'"
            )
        parse_semver(version)
        if not isinstance(schema, dict):
            raise SchemaError("a schema must be a JSON object")
        try:
            Draft202012Validator.check_schema(schema)
        except JsonSchemaError as exc:
            raise SchemaError(f"{event_type} {version}: not a valid JSON Schema: {exc.message}") from None
        return RegisteredSchema(
            event_type, version, schema, Draft202012Validator(schema), _fast_validator(schema)
        )

    def add(self, entry: RegisteredSchema) -> bool:
        """Add; False when this exact version is already present with the same schema."""
        versions = self._by_type.setdefault(entry.event_type, [])
        for existing in versions:
            if existing.version == entry.version:
                if existing.schema == entry.schema:
                    return False
                raise SchemaError(
                    f"{entry.event_type} {entry.version} is already registered with a different schema; "
                    "register a new version instead"
                )
        versions.append(entry)
        versions.sort(key=lambda s: s.key)
        return True

    def latest(self, event_type: str) -> RegisteredSchema | None:
        versions = self._by_type.get(event_type)
        return versions[-1] if versions else None

    def versions(self, event_type: str) -> list[str]:
        return [s.version for s in self._by_type.get(event_type, [])]

    def types(self) -> list[str]:
        return sorted(self._by_type)

    def validate(self, event_type: str, data: dict[str, Any]) -> str | None:
        """The version that validated `data`, None when the type has no schema; raises
        InvalidEvent listing every violation."""
        entry = self.latest(event_type)
        return None if entry is None else entry.validate(data)


# --- schemas LoomDB ships -------------------------------------------------------------------

_NUM_OR_NULL = {"type": ["number", "null"]}
_INT_OR_NULL = {"type": ["integer", "null"]}
_STR_OR_NULL = {"type": ["string", "null"]}
_METRICS = {"type": "object", "additionalProperties": {"type": ["number", "null"]}}


def _job(props: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {"job_id": {"type": "string", "minLength": 1}, **props},
        "required": ["job_id", *required],
        "additionalProperties": True,
    }


_ATTEMPT = {"type": "integer", "minimum": 1}

BUILTIN_SCHEMAS: dict[str, dict[str, Any]] = {
    "job.submitted": _job({"spec": {"type": "object"}}, ["spec"]),
    "job.queued": _job({"attempt": _ATTEMPT, "pool": {"type": "string"}}, ["attempt"]),
    "job.placed": _job(
        {
            "attempt": _ATTEMPT,
            "nodes": {"type": "array", "items": {"type": "object"}},
            "price_per_slot_hour": _NUM_OR_NULL,
        },
        ["attempt", "nodes"],
    ),
    "job.started": _job(
        {"attempt": _ATTEMPT, "nodes": {"type": "array", "items": {"type": "string"}}}, ["attempt"]
    ),
    "job.retrying": _job(
        {
            "attempt": _ATTEMPT,
            "next_attempt": _ATTEMPT,
            "failure_kind": {"type": "string"},
            "error": _STR_OR_NULL,
            "delay_seconds": {"type": "number", "minimum": 0},
            "resume_from_step": _INT_OR_NULL,
        },
        ["attempt", "failure_kind"],
    ),
    "model.training.checkpoint": {
        "type": "object",
        "properties": {
            "job_id": {"type": "string"},
            "attempt": _ATTEMPT,
            "step": {"type": "integer", "minimum": 0},
            "uri": {"type": "string", "minLength": 1},
            "metrics": _METRICS,
            "saved_at": _STR_OR_NULL,
        },
        "required": ["step", "uri"],
        "additionalProperties": True,
    },
    **{
        name: _job(
            {
                "attempts": {"type": "integer", "minimum": 0},
                "final_step": _INT_OR_NULL,
                "metrics": _METRICS,
                "error": _STR_OR_NULL,
                "last_checkpoint": _STR_OR_NULL,
            },
            ["attempts"],
        )
        for name in ("job.succeeded", "job.failed", "job.cancelled")
    },
    # From the LoomOS documents' examples, in their field-list form.
    "model.training.started": schema_from_fields(
        ["model_id", "dataset_id", "hardware_config"],
        ["hyperparameters", "framework", "job_id"],
        {
            "dataset_id": "uuid",
            "hardware_config": {"contains": ["gpu_count", "node_count", "memory_gb"]},
            "hyperparameters": "object",
        },
    ),
    "data.ingested": schema_from_fields(
        ["dataset_id", "source", "record_count"],
        ["size_bytes", "format", "schema_hash"],
        {"dataset_id": "uuid", "record_count": "non_negative_integer", "size_bytes": "non_negative_integer"},
    ),
    "data.accessed": schema_from_fields(
        ["dataset_id", "access_type"],
        ["purpose", "record_count"],
        {"dataset_id": "uuid", "access_type": {"enum": ["read", "write", "export", "delete"]}},
    ),
    "cost.recorded": schema_from_fields(
        ["amount_usd"],
        ["gpu_type", "gpu_hours", "team", "job_id", "provider"],
        {"amount_usd": "non_negative_number", "gpu_hours": "non_negative_number"},
    ),
    "compliance.retention.applied": schema_from_fields(
        ["action", "policy"],
        ["partition", "first_position", "last_position", "event_count", "uri", "sha256"],
        {"action": {"enum": ["archived", "compressed"]}, "policy": "object"},
    ),
    "compliance.retention.purged": schema_from_fields(
        ["action", "partition", "first_position", "last_position", "event_count", "uri", "sha256"],
        ["expires_at", "purged_at", "object"],
        {
            "action": {"enum": ["purged"]},
            "partition": "non_empty_string",
            "first_position": "positive_integer",
            "last_position": "positive_integer",
            "event_count": "non_negative_integer",
            "uri": "non_empty_string",  # as the policy wrote it (a file path may hold spaces)
            "sha256": {"pattern": "^[0-9a-f]{64}$"},
            "expires_at": "datetime",
            "purged_at": "datetime",
            "object": {"enum": ["deleted", "already missing"]},
        },
    ),
}
BUILTIN_VERSION = "1.0.0"


def builtin_registry() -> SchemaRegistry:
    reg = SchemaRegistry()
    for event_type, schema in BUILTIN_SCHEMAS.items():
        reg.add(SchemaRegistry.check(event_type, BUILTIN_VERSION, schema))
    return reg
