"""Who is calling: the FastAPI dependency that turns a request's credentials (a bearer OIDC
token, an API token, a session token, or the session cookie) into an Identity, or answers 401
with what is wrong: `not logged in`, `token expired`, `token revoked`, `user disabled or deleted`.

Routes declare what they need with loomos.api.permissions.require(...), which depends on this.

The team is the `X-Loomos-Team` header if given, else the user's default team. A bearer seen
in the last few seconds (tokens.cache_ttl_s) is answered from the in-process cache without
leaving the event loop; otherwise the check runs on a worker thread (database, JWKS).
"""

from __future__ import annotations

import asyncio
import re
from typing import Annotated

from fastapi import Depends, Request

from loomos.api.errors import InvalidInput
from loomos.api.services.auth import (
    NotAuthenticated,
    authenticator,
    domain_errors,
    request_context,
)
from loomos.models.identity import Identity
from loomos.security.authn import audit as ev
from loomos.security.authn.principal import Principal
from loomos.security.authn.resolver import cached_principal, resolve
from loomos.security.authn.settings import TEAM_PATTERN

__all__ = ["IdentityDep", "NotAuthenticated", "PrincipalDep", "get_identity", "get_principal"]

TEAM_HEADER = "x-loomos-team"
_TEAM = re.compile(TEAM_PATTERN)


def bearer_of(request: Request) -> str | None:
    """The credential a request carries: `Authorization: Bearer ...`, else the session cookie."""
    header = request.headers.get("authorization")
    if header is not None:
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip() or " " in token.strip() or len(header) > 8300:
            raise _Malformed()
        return token.strip()
    authn = getattr(request.app.state, "authn", None)
    name = (
        authn.settings.sessions.cookie_name
        if authn
        else request.app.state.settings.security.authn.sessions.cookie_name
    )
    return request.cookies.get(name) or None


class _Malformed(Exception):
    pass


async def get_principal(request: Request) -> Principal:
    cached = getattr(request.state, "authn_principal", None)
    if cached is not None:
        return cached
    try:
        bearer = bearer_of(request)
    except _Malformed:
        authn = await _authenticator(request)
        ctx = request_context(request)
        authn.audit.record(
            ev.auth_event(
                ev.AUTH_FAILED, ctx, subject=None, method="bearer", reason="malformed Authorization header"
            )
        )
        raise NotAuthenticated(
            "not logged in: malformed Authorization header (expected `Bearer <token>`)"
        ) from None
    if not bearer:
        raise NotAuthenticated("not logged in (loomos login, or send Authorization: Bearer <token>)")
    authn = await _authenticator(request)
    principal = cached_principal(authn, bearer)
    if principal is None:
        ctx = request_context(request)
        with domain_errors():
            principal = await asyncio.to_thread(resolve, authn, bearer, ctx)
    request.state.authn_principal = principal
    return principal


async def _authenticator(request: Request):  # type: ignore[no-untyped-def]
    authn = getattr(request.app.state, "authn", None)
    return authn if authn is not None else await asyncio.to_thread(authenticator, request)


async def get_identity(request: Request, principal: Annotated[Principal, Depends(get_principal)]) -> Identity:
    team = request.headers.get(TEAM_HEADER) or principal.default_team
    if not _TEAM.match(team):
        raise InvalidInput(f"X-Loomos-Team: {team[:70]!r} is not a team name")
    request_id = getattr(request.state, "request_id", None) or request_context(request).request_id
    return Identity(
        subject=principal.subject,
        display_name=principal.display_name,
        team=team,
        roles=principal.roles,
        permissions=principal.permissions,
        auth_method=principal.auth_method,
        session_id=principal.session_id,
        token_id=principal.token_id,
        mfa_verified_at=principal.mfa_verified_at,
        source_ip=request.client.host if request.client else None,
        user_agent=(request.headers.get("user-agent") or "")[:500] or None,
        request_id=request_id,
    )


IdentityDep = Annotated[Identity, Depends(get_identity)]
PrincipalDep = Annotated[Principal, Depends(get_principal)]
