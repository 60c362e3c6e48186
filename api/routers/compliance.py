"""Compliance reports from LoomDB's access events (security:audit)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from fastapi import APIRouter
from fastapi.responses import PlainTextResponse

from loomos.api.deps import StoreDep
from loomos.api.permissions import requires
from loomos.api.services import events
from loomos.models.permissions import Permission

router = APIRouter(prefix="/compliance", tags=["compliance"])


@router.get(
    "/report",
    response_model=None,
    summary="Access audit for [start, end): who did what, denials, data access by classification",
    **requires(Permission.SECURITY_AUDIT),
)
async def get_compliance_report(
    store: StoreDep,
    start: datetime,
    end: datetime,
    format: Literal["json", "csv"] = "json",
) -> dict[str, Any] | PlainTextResponse:
    report = await events.compliance(store, start, end, format)
    if isinstance(report, str):
        return PlainTextResponse(report, media_type="text/csv")
    return report
