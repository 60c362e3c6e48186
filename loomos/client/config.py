"""Where the SDK looks for LoomCtl and credentials, and its defaults."""

from __future__ import annotations

ENDPOINT_ENV = "LOOMOS_API_ENDPOINT"
TOKEN_ENV = "LOOMOS_API_TOKEN"
DEFAULT_TIMEOUT_S = 30.0
API_PREFIX = "/api/v1"
