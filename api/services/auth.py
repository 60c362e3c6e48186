"""Authentication for LoomCtl: the app's Authenticator (built on first use from the settings,
kept on app.state.authn), the request context every check records, and the answers of the
/api/v1/auth routes. Authentication's own errors become LoomCtl's here, with their status.

Everything here blocks on the database or a provider: the routes are plain `def`s (FastAPI
runs them on its thread pool) and loomos.api.identity calls `resolve` through a thread.
"""

from __future__ import annotations

import re
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import structlog
from fastapi import Request

from loomos.api.errors import InvalidInput, LoomCtlError, NotFound, ServiceUnavailable
from loomos.models import auth as wire
from loomos.security.authn import errors as authn_errors
from loomos.security.authn.api_tokens import ApiToken
from loomos.security.authn.audit import AuditWriter, RequestContext
from loomos.security.authn.authenticator import Authenticator, MfaChallenge, ProviderDown, SessionGrant
from loomos.security.authn.principal import Principal

log = structlog.get_logger()
_build_lock = threading.Lock()
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


class NotAuthenticated(LoomCtlError):
    """No credentials, or credentials that are not (or no longer) valid (401)."""

    status_code = 401


class Forbidden(LoomCtlError):
    status_code = 403


class Locked(LoomCtlError):
    status_code = 423


class TooManyRequests(LoomCtlError):
    status_code = 429


_STATUS: dict[int, type[LoomCtlError]] = {
    400: InvalidInput,
    401: NotAuthenticated,
    403: Forbidden,
    404: NotFound,
    423: Locked,
    429: TooManyRequests,
    503: ServiceUnavailable,
}


@contextmanager
def domain_errors() -> Iterator[None]:
    """Authentication's failures as LoomCtl's errors (same message, its status)."""
    try:
        yield
    except ProviderDown as err:
        raise ServiceUnavailable(f"login provider unavailable: {err.message}") from None
    except authn_errors.AuthnError as err:
        raise _STATUS.get(err.status, NotAuthenticated)(err.message) from None


def authenticator(request: Request) -> Authenticator:
    """The app's Authenticator; built once: the security tables (migrated), LoomDB for the
    audit trail, authorization's role store."""
    app_state = request.app.state
    authn = getattr(app_state, "authn", None)
    if authn is not None:
        return authn
    with _build_lock:
        authn = getattr(app_state, "authn", None)
        if authn is None:
            authn = app_state.authn = build_authenticator(app_state)
    return authn


def build_authenticator(app_state: Any) -> Authenticator:
    from loomos.loomdb import open_event_store
    from loomos.security.authn.roles import open_role_store
    from loomos.security.db import open_security_db

    settings = app_state.settings
    url = settings.loomdb.url
    try:
        engine = getattr(app_state, "security_db", None) or open_security_db(url)
        app_state.security_db = engine
        store = getattr(app_state, "loomdb", None) or open_event_store(url)
        app_state.loomdb = store
    except Exception as exc:  # unreachable Postgres, unwritable file: say which
        raise ServiceUnavailable(
            f"the security database at {url.split('@')[-1]} is unavailable: {exc}"
        ) from None
    authn_settings = settings.security.authn
    try:
        authn = Authenticator(
            authn_settings, engine, audit=AuditWriter(store), role_store=open_role_store(settings, engine)
        )
    except authn_errors.AuthnConfigError as err:
        raise ServiceUnavailable(str(err)) from None
    if authn_settings.dev_bootstrap:
        log.warning("dev mode: the embedded stack's local admin can log in (security.authn.dev_bootstrap)")
    return authn


def request_context(request: Request) -> RequestContext:
    """Where the request came from; the request id is the caller's X-Request-ID if sane, else new."""
    given = request.headers.get("x-request-id", "")
    request_id = given if _REQUEST_ID.match(given) else uuid.uuid4().hex
    request.state.request_id = request_id
    return RequestContext(
        source_ip=request.client.host if request.client else None,
        user_agent=request.headers.get("user-agent"),
        request_id=request_id,
    ).bounded()


# --- answers ---------------------------------------------------------------------------------


def session_info(grant: SessionGrant) -> wire.SessionInfo:
    s = grant.session
    return wire.SessionInfo(
        token=grant.token,
        session_id=s.id,
        subject=grant.user.username,
        auth_method=s.auth_method,
        expires_at=s.expires_at,
        login_time=s.created_at,
        source_ip=s.source_ip,
        user_agent=s.user_agent,
        roles=grant.roles,
        mfa_verified_at=s.mfa_verified_at,
        refresh_token=grant.refresh_token,
        id_token=grant.id_token,
    )


def login_response(outcome: SessionGrant | MfaChallenge) -> wire.LoginResponse:
    if isinstance(outcome, MfaChallenge):
        return wire.LoginResponse(
            mfa_required=True,
            challenge=wire.MfaChallengeInfo(
                challenge_id=outcome.challenge_id,
                methods=outcome.methods,
                expires_at=outcome.expires_at,
                webauthn_options=outcome.webauthn_options,
            ),
        )
    return wire.LoginResponse(mfa_required=False, session=session_info(outcome))


def providers_info(authn: Authenticator) -> wire.ProvidersInfo:
    s = authn.settings
    oidc = None
    if authn.oidc is not None:
        endpoint = None
        try:
            endpoint = authn.oidc.authorization_endpoint()
        except Exception as err:  # the CLI can still discover it itself
            log.warning("OIDC discovery failed", error=str(err))
        oidc = wire.OidcInfo(
            issuer=authn.oidc.issuer,
            client_id=s.oidc.client_id,
            scopes=s.oidc.scopes,
            authorization_endpoint=endpoint,
        )
    return wire.ProvidersInfo(
        primary=s.primary_provider,
        password_providers=list(s.password_providers),
        oidc=oidc,
        mfa_methods=list(s.mfa.methods) if s.mfa.enabled else [],
    )


def me(authn: Authenticator, principal: Principal, team: str) -> wire.Me:
    user = authn.accounts.get_by_id(principal.user_id)
    return wire.Me(
        subject=principal.subject,
        display_name=principal.display_name,
        team=team,
        roles=principal.roles,
        permissions=principal.permissions,
        auth_method=principal.auth_method,
        session_id=principal.session_id,
        token_id=principal.token_id,
        mfa_verified_at=principal.mfa_verified_at,
        admin_needs_mfa=principal.admin_needs_mfa,
        mfa_enrolled=authn.mfa_methods(user) if user else [],
        expires_at=principal.expires_at,
    )


def token_info(token: ApiToken) -> wire.TokenInfo:
    return wire.TokenInfo(
        id=token.id,
        name=token.name,
        prefix=token.prefix,
        scopes=token.scopes,
        created_at=token.created_at,
        expires_at=token.expires_at,
        last_used_at=token.last_used_at,
        revoked_at=token.revoked_at,
    )
