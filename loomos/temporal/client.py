"""One way to connect to Temporal, so every process agrees on the data converter, and the
registration of LoomOS's search attributes on a namespace."""

from __future__ import annotations

from collections.abc import Mapping

from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest, ListSearchAttributesRequest
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

from loomos.settings import Settings
from loomos.temporal import search_attributes as sa

# temporal-dev.yaml's type names -> Temporal's enum.
INDEXED_TYPES: dict[str, IndexedValueType.ValueType] = {
    "Keyword": IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD,
    "Text": IndexedValueType.INDEXED_VALUE_TYPE_TEXT,
    "Int": IndexedValueType.INDEXED_VALUE_TYPE_INT,
    "Double": IndexedValueType.INDEXED_VALUE_TYPE_DOUBLE,
    "Bool": IndexedValueType.INDEXED_VALUE_TYPE_BOOL,
    "Datetime": IndexedValueType.INDEXED_VALUE_TYPE_DATETIME,
    "KeywordList": IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD_LIST,
}


class SearchAttributeConflict(RuntimeError):
    pass


async def connect_temporal(settings: Settings) -> Client:
    return await Client.connect(
        settings.temporal.address,
        namespace=settings.temporal.namespace,
        data_converter=pydantic_data_converter,
    )


def search_attribute_definitions(settings: Settings) -> dict[str, str]:
    """LoomOS's own attributes plus any extra ones temporal-dev.yaml lists.

    The file may not retype one of ours: JobWorkflow writes them with fixed types.
    """
    wanted = dict(sa.DEFINITIONS)
    for name, kind in settings.temporal.search_attributes.items():
        if name in wanted and wanted[name] != kind:
            raise SearchAttributeConflict(
                f"temporal.search_attributes.{name}: LoomOS needs type {wanted[name]}, the file says {kind}"
            )
        wanted[name] = kind
    return wanted


async def ensure_search_attributes(
    client: Client, namespace: str, definitions: Mapping[str, str] = sa.DEFINITIONS
) -> list[str]:
    """Register the attributes the namespace lacks; return the names added.

    Idempotent, so every start of the stack can call it. An attribute that exists with
    another type is an error: adding it again would not change it, and upserts would fail.
    """
    listed = await client.operator_service.list_search_attributes(
        ListSearchAttributesRequest(namespace=namespace)
    )
    existing = dict(listed.custom_attributes)
    missing: dict[str, IndexedValueType.ValueType] = {}
    for name, kind in definitions.items():
        want = INDEXED_TYPES[kind]
        if name not in existing:
            missing[name] = want
        elif existing[name] != want:
            have = IndexedValueType.Name(existing[name]).removeprefix("INDEXED_VALUE_TYPE_")
            raise SearchAttributeConflict(
                f"search attribute {name} exists in namespace {namespace!r} as {have}, LoomOS needs {kind}"
            )
    if missing:
        await client.operator_service.add_search_attributes(
            AddSearchAttributesRequest(namespace=namespace, search_attributes=missing)
        )
    return sorted(missing)
