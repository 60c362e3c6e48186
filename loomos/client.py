"""The LoomOS Python SDK: a thin, typed client of the LoomCtl REST API.

    from loomos.client import LoomOSClient
    with LoomOSClient() as loom:
        job_id = loom.submit("examples/ddp-demo.yaml").job_id
        final = loom.wait(job_id)

`LoomOSClient` is synchronous, `AsyncLoomOSClient` the asyncio twin. Both describe each call
as a `_Call` (method, path, parameters, how to parse the answer) built by the shared
`_Calls` mixin, so the two only differ in how they send it. The response models come from
loomos.models.api, which the API declares too, so server and SDK cannot drift apart silently.

Credentials: `token=` if given, else $LOOMOS_API_TOKEN, else what `loomos login` stored for
this endpoint (loomos.security.authn.credentials), sent as `Authorization: Bearer ...`. A 401
becomes "not logged in (loomos login)" or "session expired"; a stored OIDC login is renewed
once with its refresh token first. A 403 passes the server's reason through.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, Self, TypeVar
from urllib.parse import quote

import httpx
from pydantic import ValidationError

from loomos.models.api import (
    CancelResponse,
    Health,
    JobDetail,
    JobList,
    JobSummary,
    SubmitResponse,
    TemporalHealth,
)
from loomos.models.jobs import JobState
from loomos.models.scheduler import ClusterSnapshot
from loomos.models.spec import JobSpec, SpecError, load_spec, parse_spec
from loomos.models.training import LogsResult

# The SDK's public names, response models included (they live in loomos.models.api).
__all__ = [
    "AsyncLoomOSClient",
    "CancelResponse",
    "Health",
    "JobDetail",
    "JobList",
    "JobSummary",
    "JobWaitTimeout",
    "LoomOSClient",
    "LoomOSError",
    "SubmitResponse",
    "TemporalHealth",
]

ENDPOINT_ENV = "LOOMOS_API_ENDPOINT"
TOKEN_ENV = "LOOMOS_API_TOKEN"
DEFAULT_TIMEOUT_S = 30.0
API_PREFIX = "/api/v1"

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


# --- calls, shared by the sync and async clients ----------------------------------------------

T = TypeVar("T")


@dataclass(frozen=True)
class _Call(Generic[T]):
    method: str
    path: str
    parse: Callable[[Any], T]
    params: Mapping[str, Any] = field(default_factory=dict)
    json: Any = None
    # Set for calls whose (slow) server side has its own deadline longer than ours.
    timeout: float | None = None


def _model(cls: type[T]) -> Callable[[Any], T]:
    return cls.model_validate  # type: ignore[attr-defined, no-any-return]


def spec_payload(spec: JobSpec | Mapping[str, Any] | str | os.PathLike[str]) -> dict[str, Any]:
    """Validate a spec locally (so errors name the field before any request) and serialise it.

    Raises LoomOSError wrapping the SpecError, whose message lists `field.path: problem`.
    """
    try:
        if isinstance(spec, JobSpec):
            model = spec
        elif isinstance(spec, Mapping):
            model = parse_spec(dict(spec))
        elif isinstance(spec, str | os.PathLike):
            model = load_spec(Path(spec))
        else:
            raise SpecError(
                "spec", [("", f"expected a JobSpec, a mapping or a path, got {type(spec).__name__}")]
            )
    except SpecError as err:
        raise LoomOSError(None, str(err), bad_input=True) from err
    # Only what was set: a server of another version keeps its own defaults.
    return model.model_dump(mode="json", exclude_unset=True)


def _job_path(job_id: str, suffix: str = "") -> str:
    # A '/' would address another route (servers decode %2F before routing); anything else odd
    # is quoted and left to the server's id validation, which says what a job id looks like.
    if not job_id or "/" in job_id:
        raise LoomOSError(None, f"invalid job id {job_id!r}", bad_input=True)
    return f"{API_PREFIX}/jobs/{quote(job_id, safe='')}{suffix}"


class _Calls:
    """Request building and response parsing, one method per API operation."""

    @staticmethod
    def _submit(spec: JobSpec | Mapping[str, Any] | str | os.PathLike[str]) -> _Call[SubmitResponse]:
        return _Call("POST", f"{API_PREFIX}/jobs", _model(SubmitResponse), json=spec_payload(spec))

    @staticmethod
    def _get(job_id: str) -> _Call[JobDetail]:
        return _Call("GET", _job_path(job_id), _model(JobDetail))

    @staticmethod
    def _list(
        status: JobState | str | Iterable[JobState | str] | None,
        user: str | None,
        team: str | None,
        pool: str | None,
        limit: int,
    ) -> _Call[list[JobSummary]]:
        params: dict[str, Any] = {"limit": limit}
        if status is not None:
            items = [status] if isinstance(status, str) else list(status)
            params["status"] = [str(s.value if isinstance(s, JobState) else s) for s in items]
        for key, value in (("user", user), ("team", team), ("pool", pool)):
            if value is not None:
                params[key] = value
        return _Call(
            "GET", f"{API_PREFIX}/jobs", lambda body: JobList.model_validate(body).jobs, params=params
        )

    @staticmethod
    def _cancel(job_id: str) -> _Call[CancelResponse]:
        return _Call("POST", _job_path(job_id, "/cancel"), _model(CancelResponse))

    @staticmethod
    def _logs(
        job_id: str, attempt: int | None, node: str | None, tail_bytes: int | None
    ) -> _Call[LogsResult]:
        params: dict[str, Any] = {}
        if attempt is not None:
            params["attempt"] = attempt
        if node is not None:
            params["node"] = node
        if tail_bytes is not None:
            params["tail_bytes"] = tail_bytes
        # The API waits up to ~40 s for the node to answer before it reports it unreachable.
        return _Call("GET", _job_path(job_id, "/logs"), _model(LogsResult), params=params, timeout=60)

    @staticmethod
    def _cluster_status(pool: str) -> _Call[ClusterSnapshot]:
        return _Call("GET", f"{API_PREFIX}/cluster/status", _model(ClusterSnapshot), params={"pool": pool})

    @staticmethod
    def _health() -> _Call[Health]:
        return _Call("GET", "/healthz", _model(Health))

    # --- authentication (loomos.models.auth; imported when used, as the CLI's login is rare)

    @staticmethod
    def _auth(method: str, path: str, model: str, body: Any = None) -> _Call[Any]:
        from loomos.models import auth

        return _Call(method, f"{API_PREFIX}/auth{path}", _model(getattr(auth, model)), json=body)

    def _me(self) -> _Call[Any]:
        return self._auth("GET", "/me", "Me")

    def _providers(self) -> _Call[Any]:
        return self._auth("GET", "/providers", "ProvidersInfo")

    def _login(self, username: str, password: str) -> _Call[Any]:
        return self._auth("POST", "/login", "LoginResponse", {"username": username, "password": password})

    def _verify_mfa(self, challenge_id: str, code: str) -> _Call[Any]:
        return self._auth(
            "POST", "/mfa/verify", "LoginResponse", {"challenge_id": challenge_id, "code": code}
        )

    def _oidc_callback(self, body: dict[str, Any]) -> _Call[Any]:
        return self._auth("POST", "/oidc/callback", "LoginResponse", body)

    def _logout(self) -> _Call[Any]:
        return self._auth("POST", "/logout", "Done")

    def _create_token(self, name: str, scopes: list[str] | None, expires_in_days: int | None) -> _Call[Any]:
        body = {"name": name, "scopes": scopes, "expires_in_days": expires_in_days}
        return self._auth("POST", "/tokens", "TokenCreated", body)

    def _list_tokens(self) -> _Call[Any]:
        return self._auth("GET", "/tokens", "TokenList")

    def _revoke_token(self, token_id: str) -> _Call[Any]:
        if not token_id or "/" in token_id:
            raise LoomOSError(None, f"invalid token id {token_id!r}", bad_input=True)
        return self._auth("DELETE", f"/tokens/{quote(token_id, safe='')}", "TokenInfo")


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


class AsyncLoomOSClient(_Base):
    """asyncio client with the same methods as LoomOSClient. Use `async with`, or aclose()."""

    def __init__(
        self,
        endpoint: str | None = None,
        timeout: float = DEFAULT_TIMEOUT_S,
        transport: httpx.AsyncBaseTransport | None = None,
        token: str | None = None,
    ):
        super().__init__(endpoint, timeout, token)
        self._http = httpx.AsyncClient(base_url=self.endpoint, timeout=timeout, transport=transport)

    async def _request(self, call: _Call[Any]) -> httpx.Response:
        try:
            return await self._http.request(
                call.method,
                call.path,
                params=call.params,
                json=call.json,
                timeout=self._timeout_for(call),
                headers=self._headers(),
            )
        except httpx.HTTPError as err:
            raise self._transport_error(err, call) from err

    async def _send(self, call: _Call[T]) -> T:
        response = await self._request(call)
        refresh = self._refresh_call() if response.status_code == 401 else None
        if refresh is not None:
            renewed = await self._request(refresh)
            if renewed.status_code == 200:
                self._refreshed(renewed.json())
                response = await self._request(call)
        return self._parse(call, response)

    async def submit(self, spec: JobSpec | Mapping[str, Any] | str | os.PathLike[str]) -> SubmitResponse:
        return await self._send(self._submit(spec))

    async def get(self, job_id: str) -> JobDetail:
        return await self._send(self._get(job_id))

    async def list(
        self,
        status: JobState | str | Iterable[JobState | str] | None = None,
        user: str | None = None,
        team: str | None = None,
        pool: str | None = None,
        limit: int = 100,
    ) -> list[JobSummary]:
        return await self._send(self._list(status, user, team, pool, limit))

    async def cancel(self, job_id: str) -> CancelResponse:
        return await self._send(self._cancel(job_id))

    async def logs(
        self, job_id: str, attempt: int | None = None, node: str | None = None, tail_bytes: int | None = None
    ) -> LogsResult:
        return await self._send(self._logs(job_id, attempt, node, tail_bytes))

    async def cluster_status(self, pool: str = "default") -> ClusterSnapshot:
        return await self._send(self._cluster_status(pool))

    async def health(self) -> Health:
        return await self._send(self._health())

    async def me(self) -> Any:
        """Who these credentials belong to (loomos.models.auth.Me)."""
        return await self._send(self._me())

    async def auth_providers(self) -> Any:
        return await self._send(self._providers())

    async def login(self, username: str, password: str) -> Any:
        """POST /auth/login: a LoginResponse (a session, or an MFA challenge)."""
        return await self._send(self._login(username, password))

    async def verify_mfa(self, challenge_id: str, code: str) -> Any:
        return await self._send(self._verify_mfa(challenge_id, code))

    async def oidc_callback(self, body: dict[str, Any]) -> Any:
        return await self._send(self._oidc_callback(body))

    async def logout(self) -> Any:
        return await self._send(self._logout())

    async def create_token(
        self, name: str, scopes: list[str] | None = None, expires_in_days: int | None = None
    ) -> Any:
        return await self._send(self._create_token(name, scopes, expires_in_days))

    async def list_tokens(self) -> Any:
        return (await self._send(self._list_tokens())).tokens

    async def revoke_token(self, token_id: str) -> Any:
        return await self._send(self._revoke_token(token_id))

    async def wait(self, job_id: str, poll_interval: float = 1.0, timeout: float | None = None) -> JobDetail:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            status = await self.get(job_id)
            if status.state.terminal:
                return status
            if deadline is not None and time.monotonic() >= deadline:
                raise JobWaitTimeout(job_id, timeout or 0, status)
            await asyncio.sleep(poll_interval)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
