"""OIDC, the primary provider: discovery from the issuer, bearer JWTs checked against the
provider's JWKS (PyJWT's PyJWKClient), and the code and refresh grants LoomCtl runs for
`loomos login` (LoomCtl is the registered client; it holds the client secret).

A bearer JWT is accepted only if its `alg` is one of `oidc.algorithms` (asymmetric only, so
`none` and an HS256 token "signed" with the public key are refused before any key is used), a
key of the issuer's JWKS verifies it, `iss` is the issuer, `aud` one of the audiences, and
`exp`/`iat`/`nbf` hold within `clock_skew_s`. A token without `kid` (some providers omit it
when they have one key) is tried against the JWKS's keys of its algorithm's type.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from typing import Any

import httpx
import jwt
from jwt import PyJWK, PyJWKClient

from loomos.security.authn.external import ExternalUser, ProviderUnavailable, TokenExpired, TokenInvalid
from loomos.security.authn.settings import OidcSettings

DISCOVERY_PATH = "/.well-known/openid-configuration"
HTTP_TIMEOUT_S = 10.0
# `amr` values that mean the provider asked for a second factor (RFC 8176).
MFA_AMR = {"mfa", "otp", "hwk", "swk", "sms", "fpt", "face", "iris", "retina", "pop"}
_KEY_TYPES = {"RS": "RSA", "PS": "RSA", "ES": "EC", "Ed": "OKP"}


class OidcProvider:
    def __init__(self, settings: OidcSettings, http: httpx.Client | None = None) -> None:
        if not settings.issuer_url:
            raise ProviderUnavailable("oidc.issuer_url is not set")
        self.settings = settings
        self.issuer = settings.issuer_url.rstrip("/")
        self.http = http or httpx.Client(timeout=HTTP_TIMEOUT_S)
        self._config: dict[str, Any] | None = None
        self._config_at = 0.0
        self._jwks: PyJWKClient | None = None
        self._lock = threading.Lock()

    @property
    def audiences(self) -> list[str]:
        return self.settings.audiences or [self.settings.client_id]

    # --- discovery and keys -------------------------------------------------------------------

    def configuration(self) -> dict[str, Any]:
        """The issuer's discovery document, fetched once per jwks_cache_s."""
        with self._lock:
            fresh = time.monotonic() - self._config_at < max(self.settings.jwks_cache_s, 1)
            if self._config is not None and fresh:
                return self._config
            try:
                response = self.http.get(self.issuer + DISCOVERY_PATH)
                response.raise_for_status()
                config = response.json()
            except (httpx.HTTPError, ValueError) as err:
                if self._config is not None:
                    return self._config  # keep working on the last good document
                raise ProviderUnavailable(f"OIDC discovery at {self.issuer} failed: {err}") from err
            if not isinstance(config, dict) or str(config.get("issuer", "")).rstrip("/") != self.issuer:
                raise ProviderUnavailable(
                    f"OIDC discovery at {self.issuer} names issuer {config.get('issuer')!r}: refusing it"
                )
            for needed in ("jwks_uri", "token_endpoint", "authorization_endpoint"):
                if not isinstance(config.get(needed), str):
                    raise ProviderUnavailable(f"OIDC discovery at {self.issuer} has no {needed}")
            self._config, self._config_at = config, time.monotonic()
            if self._jwks is None or self._jwks.uri != config["jwks_uri"]:
                self._jwks = PyJWKClient(
                    config["jwks_uri"],
                    cache_keys=True,
                    lifespan=max(self.settings.jwks_cache_s, 1),
                    timeout=int(HTTP_TIMEOUT_S),
                )
            return config

    def _keys_for(self, header: dict[str, Any]) -> list[PyJWK]:
        self.configuration()
        assert self._jwks is not None
        try:
            kid = header.get("kid")
            if kid:
                return [self._jwks.get_signing_key(kid)]
            kty = _KEY_TYPES.get(str(header.get("alg", ""))[:2])
            keys = [k for k in self._jwks.get_signing_keys() if k.key_type == kty]
        except jwt.PyJWKClientConnectionError as err:
            raise ProviderUnavailable(f"the OIDC provider's keys could not be fetched: {err}") from err
        except jwt.PyJWKClientError as err:
            raise TokenInvalid(f"no key of the issuer verifies this token ({err})") from err
        if not keys:
            raise TokenInvalid("no key of the issuer verifies this token")
        return keys

    # --- bearer tokens ------------------------------------------------------------------------

    def validate(self, token: str, *, nonce: str | None = None) -> dict[str, Any]:
        """The verified claims of a bearer JWT, or TokenInvalid/TokenExpired saying why not."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.DecodeError:
            raise TokenInvalid("malformed token") from None
        alg = header.get("alg")
        if alg not in self.settings.algorithms:
            raise TokenInvalid(f"token algorithm {alg!r} is not accepted")
        last: Exception | None = None
        for key in self._keys_for(header):
            try:
                claims = jwt.decode(
                    token,
                    key.key,
                    algorithms=[alg],
                    audience=self.audiences,
                    issuer=self.issuer,
                    leeway=self.settings.clock_skew_s,
                    options={"require": ["exp", "iat", "iss", "sub", "aud"]},
                )
            except jwt.InvalidSignatureError as err:
                last = err
                continue
            except jwt.ExpiredSignatureError:
                raise TokenExpired("token expired") from None
            except jwt.InvalidAudienceError:
                raise TokenInvalid("token is for another audience") from None
            except jwt.InvalidIssuerError:
                raise TokenInvalid("token is from another issuer") from None
            except jwt.ImmatureSignatureError:
                raise TokenInvalid("token is not valid yet") from None
            except jwt.MissingRequiredClaimError as err:
                raise TokenInvalid(f"token lacks the {err.claim} claim") from None
            except jwt.InvalidTokenError as err:
                raise TokenInvalid(f"invalid token ({err})") from None
            if nonce is not None and claims.get("nonce") != nonce:
                raise TokenInvalid("token nonce does not match the login")
            return claims
        raise TokenInvalid("token signature does not verify with the issuer's keys") from last

    def user_from_claims(self, claims: dict[str, Any]) -> ExternalUser:
        s = self.settings
        username = claims.get(s.username_claim) or claims.get("sub")
        if not isinstance(username, str) or not username:
            raise TokenInvalid(f"token names no user ({s.username_claim} or sub)")
        groups = claims.get(s.groups_claim) or []
        if isinstance(groups, str):
            groups = [groups]
        team = claims.get(s.team_claim) if s.team_claim else None
        amr = claims.get("amr") or []
        mfa_at = None
        if isinstance(amr, list) and MFA_AMR.intersection(map(str, amr)):
            when = claims.get("auth_time") or claims.get("iat")
            mfa_at = datetime.fromtimestamp(int(when), UTC) if isinstance(when, int | float) else None
        return ExternalUser(
            username=username[:128],
            display_name=claims.get("name") if isinstance(claims.get("name"), str) else None,
            email=claims.get("email") if isinstance(claims.get("email"), str) else None,
            groups=[str(g) for g in groups if isinstance(g, str)][:500],
            team=team if isinstance(team, str) else None,
            mfa_at=mfa_at,
        )

    # --- grants LoomCtl runs as the client ----------------------------------------------------

    def authorization_endpoint(self) -> str:
        return str(self.configuration()["authorization_endpoint"])

    def _token_request(self, data: dict[str, str]) -> dict[str, Any]:
        endpoint = self.configuration()["token_endpoint"]
        secret = self.settings.client_secret
        auth = (self.settings.client_id, secret.get_secret_value()) if secret else None
        if auth is None:
            data = {**data, "client_id": self.settings.client_id}
        try:
            response = self.http.post(endpoint, data=data, auth=auth)
        except httpx.HTTPError as err:
            raise ProviderUnavailable(f"the OIDC token endpoint could not be reached: {err}") from err
        try:
            body = response.json()
        except ValueError:
            body = {}
        if response.status_code != 200 or not isinstance(body, dict) or "access_token" not in body:
            error = body.get("error_description") or body.get("error") if isinstance(body, dict) else None
            raise TokenInvalid(f"the OIDC provider refused the grant ({error or response.status_code})")
        return body

    def exchange_code(self, code: str, redirect_uri: str, code_verifier: str | None) -> dict[str, Any]:
        data = {"grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri}
        if code_verifier:
            data["code_verifier"] = code_verifier
        return self._token_request(data)

    def refresh(self, refresh_token: str) -> dict[str, Any]:
        return self._token_request({"grant_type": "refresh_token", "refresh_token": refresh_token})

    def userinfo(self, access_token: str) -> dict[str, Any]:
        endpoint = self.configuration().get("userinfo_endpoint")
        if not endpoint:
            raise ProviderUnavailable("the OIDC provider has no userinfo endpoint")
        try:
            response = self.http.get(endpoint, headers={"Authorization": f"Bearer {access_token}"})
        except httpx.HTTPError as err:
            raise ProviderUnavailable(f"the OIDC userinfo endpoint could not be reached: {err}") from err
        if response.status_code != 200:
            raise TokenInvalid(f"the OIDC provider refused the token ({response.status_code})")
        claims = response.json()
        if not isinstance(claims, dict) or not claims.get("sub"):
            raise TokenInvalid("the OIDC userinfo answer names no subject")
        return claims
