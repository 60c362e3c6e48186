"""LoomOSClient: the synchronous SDK client."""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Mapping
from typing import Any, Self

import httpx

from loomos.client.base import _Base
from loomos.client.calls import T, _Call
from loomos.client.config import DEFAULT_TIMEOUT_S
from loomos.client.errors import JobWaitTimeout
from loomos.models.api import (
    CancelResponse,
    Health,
    JobDetail,
    JobSummary,
    SubmitResponse,
)
from loomos.models.jobs import JobState
from loomos.models.scheduler import ClusterSnapshot
from loomos.models.spec import JobSpec
from loomos.models.training import LogsResult


class LoomOSClient(_Base):
    """Synchronous client. Use as a context manager, or call close()."""

    def __init__(
        self,
        endpoint: str | None = None,
        timeout: float = DEFAULT_TIMEOUT_S,
        transport: httpx.BaseTransport | None = None,
        token: str | None = None,
    ):
        super().__init__(endpoint, timeout, token)
        self._http = httpx.Client(base_url=self.endpoint, timeout=timeout, transport=transport)

    def _request(self, call: _Call[Any]) -> httpx.Response:
        try:
            return self._http.request(
                call.method,
                call.path,
                params=call.params,
                json=call.json,
                timeout=self._timeout_for(call),
                headers=self._headers(),
            )
        except httpx.HTTPError as err:
            raise self._transport_error(err, call) from err

    def _send(self, call: _Call[T]) -> T:
        response = self._request(call)
        refresh = self._refresh_call() if response.status_code == 401 else None
        if refresh is not None:
            renewed = self._request(refresh)
            if renewed.status_code == 200:
                self._refreshed(renewed.json())
                response = self._request(call)
        return self._parse(call, response)

    def submit(self, spec: JobSpec | Mapping[str, Any] | str | os.PathLike[str]) -> SubmitResponse:
        return self._send(self._submit(spec))

    def get(self, job_id: str) -> JobDetail:
        return self._send(self._get(job_id))

    def list(
        self,
        status: JobState | str | Iterable[JobState | str] | None = None,
        user: str | None = None,
        team: str | None = None,
        pool: str | None = None,
        limit: int = 100,
    ) -> list[JobSummary]:
        return self._send(self._list(status, user, team, pool, limit))

    def cancel(self, job_id: str) -> CancelResponse:
        return self._send(self._cancel(job_id))

    def logs(
        self, job_id: str, attempt: int | None = None, node: str | None = None, tail_bytes: int | None = None
    ) -> LogsResult:
        return self._send(self._logs(job_id, attempt, node, tail_bytes))

    def cluster_status(self, pool: str = "default") -> ClusterSnapshot:
        return self._send(self._cluster_status(pool))

    def health(self) -> Health:
        return self._send(self._health())

    def me(self) -> Any:
        """Who these credentials belong to (loomos.models.auth.Me)."""
        return self._send(self._me())

    def auth_providers(self) -> Any:
        return self._send(self._providers())

    def login(self, username: str, password: str) -> Any:
        """POST /auth/login: a LoginResponse (a session, or an MFA challenge)."""
        return self._send(self._login(username, password))

    def verify_mfa(self, challenge_id: str, code: str) -> Any:
        return self._send(self._verify_mfa(challenge_id, code))

    def oidc_callback(self, body: dict[str, Any]) -> Any:
        return self._send(self._oidc_callback(body))

    def logout(self) -> Any:
        return self._send(self._logout())

    def create_token(
        self, name: str, scopes: list[str] | None = None, expires_in_days: int | None = None
    ) -> Any:
        return self._send(self._create_token(name, scopes, expires_in_days))

    def list_tokens(self) -> Any:
        return self._send(self._list_tokens()).tokens

    def revoke_token(self, token_id: str) -> Any:
        return self._send(self._revoke_token(token_id))

    def wait(self, job_id: str, poll_interval: float = 1.0, timeout: float | None = None) -> JobDetail:
        """Poll until the job is SUCCEEDED, FAILED or CANCELLED; return that final status."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            status = self.get(job_id)
            if status.state.terminal:
                return status
            if deadline is not None and time.monotonic() >= deadline:
                raise JobWaitTimeout(job_id, timeout or 0, status)
            time.sleep(poll_interval)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
