"""From a bearer to a Principal: API tokens (`loomos_pat_...`), sessions (`loomos_sess_...`,
also the browser cookie) and OIDC JWTs, each checked, then the user's roles (authorization's
role store merged with what a directory granted at login), the MFA rule for platform_admin,
and the in-process cache that makes the next request with the same bearer cost a dict lookup.

Refusals say why in words a user can act on (`token expired`, `token revoked`, `user disabled
or deleted`) and are audited with the reason, never with the bearer.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from loomos.models.identity import AuthMethod
from loomos.security.authn import audit as ev
from loomos.security.authn.audit import RequestContext
from loomos.security.authn.errors import NotAuthenticated
from loomos.security.authn.external import ProviderUnavailable, TokenExpired, TokenInvalid
from loomos.security.authn.principal import Principal, cache_key
from loomos.security.authn.roles import PLATFORM_ADMIN, grants_from_groups, holds, merge_roles
from loomos.security.authn.secrets_format import API_TOKEN_PREFIX, MAX_BEARER_LENGTH, SESSION_PREFIX

if TYPE_CHECKING:
    from loomos.security.authn.authenticator import Authenticator

TOUCH_TOKEN_EVERY = timedelta(minutes=1)


def cached_principal(authn: Authenticator, bearer: str) -> Principal | None:
    """The cached answer for `bearer`, without I/O (None: resolve() must look)."""
    return authn.cache.get(cache_key(bearer))


def resolve(authn: Authenticator, bearer: str, ctx: RequestContext) -> Principal:
    """Check `bearer` and return whose it is; NotAuthenticated (audited) if it is not good."""
    key = cache_key(bearer)
    hit = authn.cache.get(key)
    if hit is not None:
        return hit
    try:
        principal = _check(authn, bearer, ctx)
    except NotAuthenticated as err:
        authn.audit.record(
            ev.auth_event(ev.AUTH_FAILED, ctx, subject=None, method=_kind(bearer), reason=err.message)
        )
        raise
    left = (principal.expires_at - authn.clock()).total_seconds() if principal.expires_at else None
    authn.cache.put(key, principal, left)
    return principal


def _kind(bearer: str) -> str:
    if bearer.startswith(API_TOKEN_PREFIX):
        return AuthMethod.API_TOKEN.value
    if bearer.startswith(SESSION_PREFIX):
        return AuthMethod.SESSION.value
    return AuthMethod.OIDC.value


def _check(authn: Authenticator, bearer: str, ctx: RequestContext) -> Principal:
    if not bearer or len(bearer) > MAX_BEARER_LENGTH or not bearer.isascii() or " " in bearer:
        raise NotAuthenticated("not logged in: malformed credentials")
    if bearer.startswith(API_TOKEN_PREFIX):
        return _api_token(authn, bearer)
    if bearer.startswith(SESSION_PREFIX):
        return _session(authn, bearer)
    if bearer.count(".") == 2:
        return _jwt(authn, bearer)
    raise NotAuthenticated("not logged in: unrecognised token")


def _api_token(authn: Authenticator, bearer: str) -> Principal:
    token = authn.tokens.lookup(bearer)
    if token is None:
        raise NotAuthenticated("not logged in: unknown token")
    now = authn.clock()
    if token.revoked_at is not None:
        raise NotAuthenticated("token revoked")
    if token.expires_at <= now:
        raise NotAuthenticated("token expired")
    user = authn.accounts.get_by_id(token.user_id)
    if user is None or not user.active:
        raise NotAuthenticated("user disabled or deleted")
    if token.last_used_at is None or now - token.last_used_at >= TOUCH_TOKEN_EVERY:
        authn.tokens.touch(token.id, now)
    # A token is not subject to the MFA step (its maker passed it when creating it).
    roles, _ = roles_for(authn, user.username, {}, None, AuthMethod.API_TOKEN.value)
    return Principal(
        user_id=user.id,
        subject=user.username,
        display_name=user.display_name,
        default_team=user.default_team or authn.settings.default_team,
        auth_method=AuthMethod.API_TOKEN.value,
        token_id=token.id,
        permissions=token.scopes,
        roles=roles,
        expires_at=token.expires_at,
    )


def _session(authn: Authenticator, bearer: str) -> Principal:
    session = authn.sessions.lookup(bearer)
    if session is None:
        raise NotAuthenticated("not logged in: unknown session")
    if session.revoked_at is not None:
        raise NotAuthenticated(f"token revoked ({session.revoke_reason or 'logged out'})")
    if session.expires_at <= authn.clock():
        raise NotAuthenticated("session expired")
    user = authn.accounts.get_by_id(session.user_id)
    if user is None or not user.active:
        raise NotAuthenticated("user disabled or deleted")
    session = authn.sessions.touch(session)
    roles, needs_mfa = roles_for(
        authn, user.username, session.directory_roles, session.mfa_verified_at, session.auth_method
    )
    return Principal(
        user_id=user.id,
        subject=user.username,
        display_name=user.display_name,
        default_team=user.default_team or authn.settings.default_team,
        auth_method=session.auth_method,
        session_id=session.id,
        mfa_verified_at=session.mfa_verified_at,
        roles=roles,
        admin_needs_mfa=needs_mfa,
        expires_at=session.expires_at,
    )


def _jwt(authn: Authenticator, bearer: str) -> Principal:
    if authn.oidc is None:
        raise NotAuthenticated("not logged in: OIDC tokens are not accepted here (no issuer configured)")
    try:
        claims = authn.oidc.validate(bearer)
        found = authn.oidc.user_from_claims(claims)
    except TokenExpired:
        raise NotAuthenticated("token expired") from None
    except TokenInvalid as err:
        raise NotAuthenticated(f"not logged in: {err.reason}") from None
    except ProviderUnavailable as err:
        raise NotAuthenticated(f"not logged in: the OIDC provider cannot be reached ({err.reason})") from None
    user = authn.accounts.ensure_external(
        found.username, "oidc", display_name=found.display_name, email=found.email, default_team=found.team
    )
    if not user.active:
        raise NotAuthenticated("user disabled or deleted")
    directory = grants_from_groups(found.groups, authn.settings.oidc.group_roles)
    roles, needs_mfa = roles_for(authn, user.username, directory, found.mfa_at, AuthMethod.OIDC.value)
    exp = claims.get("exp")
    return Principal(
        user_id=user.id,
        subject=user.username,
        display_name=user.display_name,
        default_team=found.team or user.default_team or authn.settings.default_team,
        auth_method=AuthMethod.OIDC.value,
        mfa_verified_at=found.mfa_at,
        roles=roles,
        admin_needs_mfa=needs_mfa,
        expires_at=datetime.fromtimestamp(exp, authn.clock().tzinfo)
        if isinstance(exp, int | float)
        else None,
    )


def roles_for(
    authn: Authenticator,
    subject: str,
    directory_roles: Mapping[str, Sequence[str]],
    mfa_verified_at: datetime | None,
    method: str,
) -> tuple[dict[str, list[str]], bool]:
    """(team -> roles, whether platform_admin was withheld for want of a recent MFA)."""
    roles = merge_roles(authn.role_store.roles_of(subject), directory_roles)
    mfa = authn.settings.mfa
    if method == AuthMethod.API_TOKEN or not mfa.required_for_admin or not holds(roles, PLATFORM_ADMIN):
        return roles, False
    fresh_since = authn.clock() - timedelta(hours=mfa.grace_period_hours)
    if mfa_verified_at is not None and mfa_verified_at >= fresh_since:
        return roles, False
    withheld = {team: [r for r in names if r != PLATFORM_ADMIN] for team, names in roles.items()}
    return {team: names for team, names in withheld.items() if names}, True
