"""The custom search attributes JobWorkflow keeps current (registered by the dev stack).

They let the Temporal UI and `temporal workflow list --query 'LoomJobStatus="RUNNING"'`
filter jobs without a query to each workflow. Pure: workflows import this module.
"""

from __future__ import annotations

from temporalio.common import SearchAttributeKey, SearchAttributePair, TypedSearchAttributes

from loomos.models.jobs import JobState
from loomos.models.spec import JobSpec

STATUS = SearchAttributeKey.for_keyword("LoomJobStatus")
USER = SearchAttributeKey.for_keyword("LoomUser")
TEAM = SearchAttributeKey.for_keyword("LoomTeam")
GPU_TYPE = SearchAttributeKey.for_keyword("LoomGpuType")
GPU_COUNT = SearchAttributeKey.for_int("LoomGpuCount")
PRIORITY = SearchAttributeKey.for_int("LoomPriority")
POOL = SearchAttributeKey.for_keyword("LoomPool")

# Name -> Temporal type, as `temporal server start-dev --search-attribute NAME=TYPE` wants it.
DEFINITIONS: dict[str, str] = {
    STATUS.name: "Keyword",
    USER.name: "Keyword",
    TEAM.name: "Keyword",
    GPU_TYPE.name: "Keyword",
    GPU_COUNT.name: "Int",
    PRIORITY.name: "Int",
    POOL.name: "Keyword",
}


def for_job(spec: JobSpec, state: JobState = JobState.SUBMITTED) -> TypedSearchAttributes:
    """The attributes a job workflow starts with."""
    r = spec.resources
    return TypedSearchAttributes(
        [
            SearchAttributePair(STATUS, state.value),
            SearchAttributePair(USER, spec.user),
            SearchAttributePair(TEAM, spec.team),
            SearchAttributePair(GPU_TYPE, r.gpu_type or "any"),
            SearchAttributePair(GPU_COUNT, r.gpu_count * r.nodes),
            SearchAttributePair(PRIORITY, spec.priority),
            SearchAttributePair(POOL, spec.pool),
        ]
    )
