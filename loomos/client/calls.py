"""The API's operations as descriptions of requests (`_Call`: method, path, parameters, how to
parse the answer), shared by the sync and async clients so they only differ in how they send."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar
from urllib.parse import quote

from loomos.client.config import API_PREFIX
from loomos.client.errors import LoomOSError
from loomos.models.api import (
    CancelResponse,
    Health,
    JobDetail,
    JobList,
    JobSummary,
    SubmitResponse,
)
from loomos.models.jobs import JobState
from loomos.models.scheduler import ClusterSnapshot
from loomos.models.spec import JobSpec, SpecError, load_spec, parse_spec
from loomos.models.training import LogsResult

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
