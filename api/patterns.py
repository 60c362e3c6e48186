"""The patterns path and query parameters are validated with, taken from the models that
define them, so a filter accepts exactly what a spec or a setting may hold."""

from __future__ import annotations

from pydantic import BaseModel

from loomos.models.spec import JobSpec
from loomos.settings import NodeSettings


def field_pattern(model: type[BaseModel], field: str) -> str:
    """The regex `model.field` is validated with."""
    for meta in model.model_fields[field].metadata:
        pattern = getattr(meta, "pattern", None)
        if pattern:
            return pattern
    raise LookupError(f"{model.__name__}.{field} has no pattern")


# Job ids are `<spec.name>-<8 hex>`; the pattern is a little wider (lower-case DNS-like) so
# ids derived by pipelines later fit, and narrow enough to be safe in ids and queries.
JOB_ID_PATTERN = r"^[a-z0-9]([a-z0-9._-]{0,126}[a-z0-9])?$"
USER_PATTERN = field_pattern(JobSpec, "user")
TEAM_PATTERN = field_pattern(JobSpec, "team")
POOL_PATTERN = field_pattern(JobSpec, "pool")
NODE_ID_PATTERN = field_pattern(NodeSettings, "node_id")
