"""/api/v1/auth: log in (password, then MFA if enrolled; or OIDC), refresh, log out, who am I,
API tokens, second factors.

Public (no credentials yet): providers, login, mfa/verify, oidc/callback, refresh with an
OIDC refresh token. The rest act on the caller's own account and need only authentication.
A session also goes out as an HttpOnly, SameSite=Lax cookie (Secure over https) for browsers.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response, status

from loomos.api.errors import InvalidInput
from loomos.api.identity import PrincipalDep, get_principal
from loomos.api.services import auth as svc
from loomos.api.services.auth import NotAuthenticated, domain_errors, request_context
from loomos.models import auth as wire
from loomos.security.authn.authenticator import Authenticator, SessionGrant
from loomos.security.authn.principal import Principal
from loomos.security.authn.self_service import SelfService

router = APIRouter(prefix="/auth", tags=["auth"])
AuthnDep = Annotated[Authenticator, Depends(svc.authenticator)]


def _set_cookie(request: Request, response: Response, authn: Authenticator, grant: SessionGrant) -> None:
    s = authn.settings.sessions
    response.set_cookie(
        s.cookie_name,
        grant.token,
        max_age=int((grant.session.expires_at - grant.session.created_at).total_seconds()),
        httponly=True,
        secure=s.secure_cookies and request.url.scheme == "https",
        samesite="lax",
        path="/",
    )


@router.get("/providers", response_model=wire.ProvidersInfo, summary="How to log in here")
def providers(authn: AuthnDep) -> wire.ProvidersInfo:
    return svc.providers_info(authn)


@router.post("/login", response_model=wire.LoginResponse, summary="Log in with a username and password")
def login(
    body: wire.LoginRequest, request: Request, response: Response, authn: AuthnDep
) -> wire.LoginResponse:
    with domain_errors():
        outcome = authn.login(body.username, body.password, request_context(request))
    if isinstance(outcome, SessionGrant):
        _set_cookie(request, response, authn, outcome)
    return svc.login_response(outcome)


@router.post("/mfa/verify", response_model=wire.LoginResponse, summary="Answer a login's MFA challenge")
def verify_mfa(
    body: wire.MfaVerifyRequest, request: Request, response: Response, authn: AuthnDep
) -> wire.LoginResponse:
    if not body.challenge_id:
        raise InvalidInput("challenge_id is required (POST /auth/mfa/step-up passes MFA on a session)")
    with domain_errors():
        grant = authn.verify_mfa(
            body.challenge_id, request_context(request), code=body.code, webauthn=body.webauthn
        )
    _set_cookie(request, response, authn, grant)
    return svc.login_response(grant)


@router.post("/mfa/step-up", response_model=wire.Done, summary="Pass MFA again on this session (TOTP)")
def step_up(body: wire.CodeRequest, request: Request, who: PrincipalDep, authn: AuthnDep) -> wire.Done:
    with domain_errors():
        authn.step_up(who, body.code, request_context(request))
    return wire.Done(detail="MFA passed")


@router.post("/oidc/callback", response_model=wire.LoginResponse, summary="Finish an OIDC login")
def oidc_callback(
    body: wire.OidcCallbackRequest, request: Request, response: Response, authn: AuthnDep
) -> wire.LoginResponse:
    with domain_errors():
        grant = authn.oidc_login(
            body.code,
            body.redirect_uri,
            request_context(request),
            code_verifier=body.code_verifier,
            nonce=body.nonce,
        )
    _set_cookie(request, response, authn, grant)
    return svc.login_response(grant)


@router.post("/refresh", response_model=wire.SessionInfo, summary="Renew a session (or an OIDC login)")
async def refresh(body: wire.RefreshRequest, request: Request, response: Response) -> wire.SessionInfo:
    authn = await asyncio.to_thread(svc.authenticator, request)
    who: Principal | None = None
    try:
        who = await get_principal(request)
    except NotAuthenticated:
        if not body.refresh_token:
            raise
    ctx = request_context(request)
    with domain_errors():
        if body.refresh_token:
            grant = await asyncio.to_thread(authn.oidc_refresh, body.refresh_token, ctx, who)
        else:
            assert who is not None
            grant = await asyncio.to_thread(authn.refresh_session, who, ctx)
    _set_cookie(request, response, authn, grant)
    return svc.session_info(grant)


@router.post("/logout", response_model=wire.Done, summary="End this session")
def logout(request: Request, response: Response, who: PrincipalDep, authn: AuthnDep) -> wire.Done:
    with domain_errors():
        authn.logout(who, request_context(request))
    response.delete_cookie(authn.settings.sessions.cookie_name, path="/")
    return wire.Done(detail="logged out")


@router.get("/me", response_model=wire.Me, summary="Who the credentials belong to")
def me(request: Request, who: PrincipalDep, authn: AuthnDep) -> wire.Me:
    return svc.me(authn, who, request.headers.get("x-loomos-team") or who.default_team)


# --- API tokens ----------------------------------------------------------------------------------


@router.post("/tokens", response_model=wire.TokenCreated, status_code=status.HTTP_201_CREATED)
def create_token(
    body: wire.TokenCreateRequest, request: Request, who: PrincipalDep, authn: AuthnDep
) -> wire.TokenCreated:
    scopes = [s.value for s in body.scopes] if body.scopes is not None else None
    with domain_errors():
        secret, token = SelfService(authn).create_token(
            who, body.name, scopes, body.expires_in_days, request_context(request)
        )
    return wire.TokenCreated(token=secret, **svc.token_info(token).model_dump())


@router.get("/tokens", response_model=wire.TokenList, summary="Your live API tokens")
def list_tokens(who: PrincipalDep, authn: AuthnDep) -> wire.TokenList:
    return wire.TokenList(tokens=[svc.token_info(t) for t in SelfService(authn).list_tokens(who)])


@router.delete("/tokens/{token_id}", response_model=wire.TokenInfo, summary="Revoke one of your API tokens")
def revoke_token(token_id: str, request: Request, who: PrincipalDep, authn: AuthnDep) -> wire.TokenInfo:
    with domain_errors():
        token = SelfService(authn).revoke_token(who, token_id, request_context(request))
    return svc.token_info(authn.tokens.get(token.id) or token)


# --- second factors ------------------------------------------------------------------------------


@router.post("/mfa/totp", response_model=wire.TotpEnrolment, summary="Start TOTP enrolment")
def totp_begin(who: PrincipalDep, authn: AuthnDep) -> wire.TotpEnrolment:
    with domain_errors():
        enrolment = SelfService(authn).totp_begin(who)
    return wire.TotpEnrolment(otpauth_uri=enrolment.uri, qr_svg=enrolment.qr_svg)


@router.post("/mfa/totp/confirm", response_model=wire.Done, summary="Finish TOTP enrolment with a code")
def totp_confirm(body: wire.CodeRequest, request: Request, who: PrincipalDep, authn: AuthnDep) -> wire.Done:
    with domain_errors():
        SelfService(authn).totp_confirm(who, body.code, request_context(request))
    return wire.Done(detail="TOTP enrolled")


@router.post(
    "/mfa/webauthn/register", response_model=wire.WebAuthnBegin, summary="Start a WebAuthn registration"
)
def webauthn_begin(request: Request, who: PrincipalDep, authn: AuthnDep) -> wire.WebAuthnBegin:
    with domain_errors():
        challenge_id, options = SelfService(authn).webauthn_begin(who, request_context(request))
    return wire.WebAuthnBegin(challenge_id=challenge_id, options=options)


@router.post(
    "/mfa/webauthn/register/finish", response_model=wire.Done, summary="Finish a WebAuthn registration"
)
def webauthn_finish(
    body: wire.WebAuthnFinish, request: Request, who: PrincipalDep, authn: AuthnDep
) -> wire.Done:
    with domain_errors():
        SelfService(authn).webauthn_finish(
            who, body.challenge_id, body.credential, body.name, request_context(request)
        )
    return wire.Done(detail="WebAuthn credential registered")


@router.post("/mfa/sms", response_model=wire.MfaChallengeInfo, summary="Send a code to confirm a phone")
def sms_begin(
    body: wire.SmsBegin, request: Request, who: PrincipalDep, authn: AuthnDep
) -> wire.MfaChallengeInfo:
    with domain_errors():
        challenge_id = SelfService(authn).sms_begin(who, body.phone, request_context(request))
    expires = authn.clock() + timedelta(seconds=authn.settings.mfa.challenge_ttl_s)
    return wire.MfaChallengeInfo(challenge_id=challenge_id, methods=["sms"], expires_at=expires)


@router.post("/mfa/sms/confirm", response_model=wire.Done, summary="Confirm the phone with its code")
def sms_confirm(body: wire.SmsConfirm, request: Request, who: PrincipalDep, authn: AuthnDep) -> wire.Done:
    with domain_errors():
        SelfService(authn).sms_confirm(who, body.challenge_id, body.code, request_context(request))
    return wire.Done(detail="phone confirmed for SMS codes")
