"""Who is asking: the identity every LoomCtl request and every job workflow carries.

LoomCtl builds it from a bearer token (OIDC, API token or session) and passes it to the job
workflow it starts in a Temporal header (never in the JobSpec, which the user writes); the
admission activity re-checks it. Pure pydantic: workflow code and the SDK import it.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, Field


class AuthMethod(StrEnum):
    """How the identity was established."""

    OIDC = "oidc"  # a bearer JWT from the OIDC provider
    LOCAL = "local"  # a local account's password (then a session)
    LDAP = "ldap"  # an LDAP bind (then a session)
    API_TOKEN = "api_token"  # a personal API token
    SESSION = "session"  # a session token from POST /api/v1/auth/login
    SYSTEM = "system"  # LoomOS itself (workers, retention)


class Identity(BaseModel):
    """An authenticated principal. `roles` are per team (a user may be an ml_engineer in one
    team and a data_scientist in another); authorization decides from them, not from
    `permissions`, which narrows an API token to a subset of its owner's (None: no narrowing)."""

    subject: str = Field(description="the user id (username, or the OIDC `sub`)")
    display_name: str | None = None
    team: str = Field(description="the team the request acts in (Casbin domain)")
    roles: dict[str, list[str]] = Field(default_factory=dict, description="team -> role names")
    permissions: list[str] | None = Field(None, description="an API token's scope; None: unscoped")
    auth_method: AuthMethod
    session_id: str | None = None
    token_id: str | None = None
    mfa_verified_at: datetime | None = None
    source_ip: str | None = None
    user_agent: str | None = None
    request_id: str | None = None

    def roles_in(self, team: str) -> list[str]:
        return list(self.roles.get(team, ()))
