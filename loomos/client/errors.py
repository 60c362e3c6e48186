"""How the SDK reports failures: LoomOSError, with the API's own message flattened to one line."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import httpx

from loomos.models.api import (
    JobDetail,
)

# --- errors ----------------------------------------------------------------------------------


class LoomOSError(Exception):
    """Any failure talking to LoomCtl. `status_code` is None when no HTTP answer came back."""

    def __init__(self, status_code: int | None, message: str, *, bad_input: bool = False):
        super().__init__(message)
        self.status_code = status_code
        self.message = message
        self._bad_input = bad_input

    @property
    def is_bad_input(self) -> bool:
        """The caller's input is at fault (invalid spec, id or parameter), not the system."""
        return self._bad_input or self.status_code in (400, 422)


class JobWaitTimeout(LoomOSError):
    def __init__(self, job_id: str, timeout: float, last: JobDetail):
        super().__init__(None, f"job {job_id} did not finish within {timeout:g}s (state {last.state.value})")
        self.last = last


def _strip_location(loc: Iterable[Any]) -> str:
    parts = [str(p) for p in loc]
    # FastAPI prefixes where the value came from; the field path is what a user can fix.
    if parts and parts[0] in ("body", "query", "path", "header"):
        parts = parts[1:]
    return ".".join(parts)


def error_message(response: httpx.Response) -> str:
    """The API's `detail`, flattened to one line (`field.path: message; ...` for 422s)."""
    try:
        body = response.json()
    except ValueError:
        text = response.text.strip().replace("\n", " ")
        return f"HTTP {response.status_code}: {text[:300] or response.reason_phrase}"
    detail = body.get("detail") if isinstance(body, dict) else None
    if isinstance(detail, str):
        return detail
    if isinstance(detail, list):
        items = []
        for err in detail:
            if isinstance(err, dict):
                path = _strip_location(err.get("loc", []))
                msg = str(err.get("msg", "invalid"))
                items.append(f"{path}: {msg}" if path else msg)
            else:
                items.append(str(err))
        if items:
            return "; ".join(items)
    return f"HTTP {response.status_code}: {response.reason_phrase}"
