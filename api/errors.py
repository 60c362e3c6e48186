"""Domain errors of LoomCtl's services, and the one place they become HTTP answers.

Services raise these (never HTTPException), so they can be called from anywhere (a CLI, a
test, another service) and the mapping to status codes stays in `install_error_handlers`.
Every error answers `{"detail": ...}`: a message, or for 422s the list FastAPI uses.
"""

from __future__ import annotations

from typing import Any, ClassVar


class LoomCtlError(Exception):
    """An expected failure with the status code it answers and what `detail` holds."""

    status_code: ClassVar[int] = 500

    def __init__(self, message: str, detail: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.detail = message if detail is None else detail


class InvalidInput(LoomCtlError):
    """A malformed query, filter, cursor or position (400)."""

    status_code = 400


class Forbidden(LoomCtlError):
    """Authenticated, but not allowed (403); the detail names what is missing and where."""

    status_code = 403


class NotFound(LoomCtlError):
    status_code = 404


class Conflict(LoomCtlError):
    """The request contradicts the current state: cancel a finished job, a stream's version (409)."""

    status_code = 409


class PayloadTooLarge(LoomCtlError):
    """A body or spec over what LoomOS can carry (413)."""

    status_code = 413


class Unprocessable(LoomCtlError):
    """Well-formed but invalid content, such as an event that fails its schema (422)."""

    status_code = 422


class UpstreamFailed(LoomCtlError):
    """Temporal or a worker answered with an error LoomCtl cannot turn into anything better (502)."""

    status_code = 502


class ServiceUnavailable(LoomCtlError):
    """Something LoomCtl needs is not reachable now: Temporal, LoomDB, a worker (503)."""

    status_code = 503
