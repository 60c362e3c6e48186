"""What both clients share: the endpoint, the credentials, turning answers into models or errors."""

from __future__ import annotations

import os
from typing import Any

import httpx
from pydantic import ValidationError

from loomos.client.calls import T, _Call, _Calls
from loomos.client.config import API_PREFIX, ENDPOINT_ENV, TOKEN_ENV
from loomos.client.errors import LoomOSError, error_message


def default_endpoint() -> str:
    explicit = os.environ.get(ENDPOINT_ENV)
    if explicit:
        return explicit
    from loomos.settings import ConfigError, load_settings

    try:
        return load_settings().api_url
    except ConfigError as err:
        raise LoomOSError(None, f"no endpoint given and the configuration is invalid: {err}") from err


class _Base(_Calls):
    def __init__(self, endpoint: str | None, timeout: float, token: str | None = None):
        self.endpoint = (endpoint or default_endpoint()).rstrip("/")
        if not self.endpoint.startswith(("http://", "https://")):
            raise LoomOSError(None, f"endpoint must start with http:// or https://, got {self.endpoint!r}")
        self.timeout = timeout
        self._stored: Any = None  # the StoredCredential the token came from, if any
        self.token = token or os.environ.get(TOKEN_ENV) or self._stored_token()

    def _stored_token(self) -> str | None:
        from loomos.security.authn import credentials

        try:
            self._stored = credentials.load(self.endpoint)
            dev = credentials.dev_stack_path() if self._stored is None else None
            if dev is not None and dev.is_file():
                self._stored = credentials.load(self.endpoint, dev)
        except credentials.CredentialsError as err:
            raise LoomOSError(None, str(err), bad_input=True) from err
        return self._stored.token if self._stored is not None else None

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def _refresh_call(self) -> _Call[Any] | None:
        """The renewal of a stored OIDC login (its refresh token), if there is one to try."""
        stored = self._stored
        if stored is None or not stored.refresh_token or self.token != stored.token:
            return None
        return _Call(
            "POST",
            f"{API_PREFIX}/auth/refresh",
            lambda body: body,
            json={"refresh_token": stored.refresh_token},
        )

    def _refreshed(self, body: Any) -> None:
        from loomos.security.authn import credentials

        stored = self._stored
        stored.token = body["token"]
        stored.expires_at = body.get("expires_at")
        stored.refresh_token = body.get("refresh_token") or stored.refresh_token
        credentials.save(self.endpoint, stored)
        self.token = stored.token

    def _timeout_for(self, call: _Call[Any]) -> float:
        return max(self.timeout, call.timeout or 0)

    def _unauthenticated(self, detail: str) -> str:
        if not self.token:
            return f"not logged in (loomos login, or set {TOKEN_ENV}): {detail}"
        if "expired" in detail:
            return f"session expired: {detail} (loomos login)"
        return f"not logged in (loomos login): {detail}"

    def _transport_error(self, err: httpx.HTTPError, call: _Call[Any]) -> LoomOSError:
        if isinstance(err, httpx.ConnectError):
            return LoomOSError(None, f"cannot reach LoomCtl at {self.endpoint}: is `loomos dev` running?")
        if isinstance(err, httpx.TimeoutException):
            return LoomOSError(
                None, f"LoomCtl at {self.endpoint} did not answer within {self._timeout_for(call):g}s"
            )
        return LoomOSError(None, f"request to LoomCtl at {self.endpoint} failed: {err}")

    def _parse(self, call: _Call[T], response: httpx.Response) -> T:
        if response.status_code == 401:
            raise LoomOSError(401, self._unauthenticated(error_message(response)))
        if response.status_code >= 400:
            raise LoomOSError(response.status_code, error_message(response))
        try:
            return call.parse(response.json())
        except (ValueError, ValidationError) as err:
            raise LoomOSError(
                response.status_code, f"unexpected answer from {call.method} {call.path}: {err}"
            ) from err
