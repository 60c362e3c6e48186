"""OIDC against a real provider (oidc-provider-mock: discovery, JWKS, code and refresh grants)
that each test starts on a free port: tokens come from its flows, never made by hand for the
success path. Hostile tokens (alg none, HS256 with the public key, another key, tampered,
expired, wrong audience) are refused and audited."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlparse

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from oidc_provider_mock import User, run_server_in_thread

from loomos.cli.auth import oidc_login
from loomos.client import LoomOSClient
from loomos.loomdb import EventQuery
from loomos.security.authn.settings import AuthnSettings
from tests.security.authn.serving import app_with_authn, serve

CLIENT_ID = "loomos-platform"
ALICE = User(
    sub="alice-sub", claims={"preferred_username": "alice", "name": "Alice", "groups": ["ml-eng", "ops"]}
)


@pytest.fixture
def provider() -> Iterator[str]:
    with run_server_in_thread(
        port=0, user_claims=[ALICE], access_token_max_age=timedelta(minutes=5)
    ) as server:
        yield f"http://localhost:{server.server_port}"


def settings_for(issuer: str, **oidc: object) -> AuthnSettings:
    return AuthnSettings.model_validate(
        {
            "primary_provider": "oidc",
            "fallback_providers": ["local"],
            "oidc": {
                "issuer_url": issuer,
                "client_id": CLIENT_ID,
                "client_secret": "loomctl-secret",
                "scopes": ["openid", "profile", "email"],
                "group_roles": {"ml-eng": ["vision:ml_engineer"], "ops": ["*:data_scientist"]},
                **oidc,
            },
        }
    )


def browser(sub: str = "alice-sub"):  # type: ignore[no-untyped-def]
    """Plays the user's browser: submits the provider's login form, follows the redirect."""

    def open_url(url: str) -> None:
        answer = httpx.post(url, data={"sub": sub})
        assert answer.status_code == 302, answer.text
        httpx.get(answer.headers["location"])

    return open_url


def id_token_from(issuer: str, sub: str = "alice-sub", client_id: str = CLIENT_ID) -> dict:
    """An ID token through the provider's own code flow (what a web app would hold)."""
    config = httpx.get(issuer + "/.well-known/openid-configuration").json()
    redirect = "http://127.0.0.1:9/cb"
    query = urlencode({"response_type": "code", "client_id": client_id, "redirect_uri": redirect,
                       "scope": "openid profile", "state": "s"})  # fmt: skip
    answer = httpx.post(f"{config['authorization_endpoint']}?{query}", data={"sub": sub})
    code = parse_qs(urlparse(answer.headers["location"]).query)["code"][0]
    tokens = httpx.post(config["token_endpoint"], data={"grant_type": "authorization_code", "code": code,
                        "redirect_uri": redirect}, auth=(client_id, "x"))  # fmt: skip
    return tokens.json()


def me(endpoint: str, token: str) -> httpx.Response:
    return httpx.get(endpoint + "/api/v1/auth/me", headers={"Authorization": f"Bearer {token}"})


def test_bearer_id_token_from_the_provider_is_an_identity(provider: str, sqlite_url: str) -> None:
    app = app_with_authn(sqlite_url, settings_for(provider))
    with serve(app) as endpoint:
        token = id_token_from(provider)["id_token"]
        answer = me(endpoint, token)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert (body["subject"], body["display_name"], body["auth_method"]) == ("alice", "Alice", "oidc")
        assert body["roles"] == {"vision": ["ml_engineer"], "*": ["data_scientist"]}


def test_cli_login_runs_the_code_flow_and_refreshes(
    provider: str, sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LOOMOS_CREDENTIALS", str(tmp_path / "credentials.json"))
    monkeypatch.delenv("LOOMOS_API_TOKEN", raising=False)
    app = app_with_authn(sqlite_url, settings_for(provider))
    from loomos.cli.auth import _store

    with serve(app) as endpoint, LoomOSClient(endpoint, token="-") as client:
        client.token = None
        providers = client.auth_providers()
        assert providers.primary == "oidc" and providers.oidc.client_id == CLIENT_ID
        answer = oidc_login(client, providers.oidc, browser(), timeout=30)
        session = answer.session
        assert session.subject == "alice" and session.refresh_token and session.id_token
        _store(client, session, "oidc")

        with LoomOSClient(endpoint) as stored:
            assert stored.me().subject == "alice"
            app.state.authn.revoke_session(session.session_id, "test: ended")  # as if it expired
            assert stored.me().subject == "alice"  # renewed with the refresh token, transparently
            assert stored.token != session.token
        saved = json.loads((tmp_path / "credentials.json").read_text())["endpoints"][endpoint]
        assert saved["token"] == stored.token and saved["kind"] == "oidc"


def test_refresh_can_be_disabled(provider: str, sqlite_url: str) -> None:
    app = app_with_authn(sqlite_url, settings_for(provider, token_refresh_enabled=False))
    with serve(app) as endpoint:
        refresh = id_token_from(provider)["refresh_token"]
        answer = httpx.post(endpoint + "/api/v1/auth/refresh", json={"refresh_token": refresh})
        assert answer.status_code == 403 and "token refresh is disabled" in answer.json()["detail"]
        answer = httpx.post(endpoint + "/api/v1/auth/refresh", json={"refresh_token": "made-up"})
        assert answer.status_code == 403


def test_a_refresh_token_the_provider_does_not_know_is_refused(provider: str, sqlite_url: str) -> None:
    app = app_with_authn(sqlite_url, settings_for(provider))
    with serve(app) as endpoint:
        answer = httpx.post(endpoint + "/api/v1/auth/refresh", json={"refresh_token": "made-up"})
        assert answer.status_code == 401 and "session expired" in answer.json()["detail"]


def _b64(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def _public_pem(issuer: str) -> bytes:
    key = jwt.PyJWKClient(issuer + "/jwks").get_signing_keys()[0]
    return key.key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def test_hostile_tokens_are_refused_and_audited(provider: str, sqlite_url: str) -> None:
    app = app_with_authn(sqlite_url, settings_for(provider, clock_skew_s=0))
    with serve(app) as endpoint:
        good = id_token_from(provider)["id_token"]
        claims = jwt.decode(good, options={"verify_signature": False})
        header, payload, signature = good.split(".")
        other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        cases = {
            "alg none": f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{payload}.",
            "HS256 with the public key": _hs256_with_public_key(claims, _public_pem(provider)),
            "another key": jwt.encode(claims, other_key, algorithm="RS256"),
            "tampered": f"{header}.{_b64({**claims, 'preferred_username': 'root'})}.{signature}",
            "garbage": "a.b.c",
        }
        expected = {
            "alg none": "algorithm 'none' is not accepted",
            "HS256 with the public key": "algorithm 'HS256' is not accepted",
            "another key": "signature does not verify",
            "tampered": "signature does not verify",
            "garbage": "malformed token",
        }
        for name, token in cases.items():
            answer = me(endpoint, token)
            assert answer.status_code == 401, name
            assert expected[name] in answer.json()["detail"], (name, answer.json())
        app.state.authn.audit.flush()
        reasons = [e.data["reason"] for e in app.state.loomdb.query(
            EventQuery(event_types=["security.authentication.failed"], limit=100)).events]  # fmt: skip
        assert all(any(expected[n] in r for r in reasons) for n in cases)
        assert all(good[:40] not in str(r) for r in reasons)


def _hs256_with_public_key(claims: dict, pem: bytes) -> str:
    import hashlib
    import hmac

    signing_input = f"{_b64({'alg': 'HS256', 'typ': 'JWT'})}.{_b64(claims)}"
    mac = hmac.new(pem, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{base64.urlsafe_b64encode(mac).rstrip(b'=').decode()}"


def test_wrong_audience_and_expired_tokens(sqlite_url: str) -> None:
    with run_server_in_thread(
        port=0, user_claims=[ALICE], access_token_max_age=timedelta(seconds=1)
    ) as server:
        issuer = f"http://localhost:{server.server_port}"
        app = app_with_authn(sqlite_url, settings_for(issuer, clock_skew_s=0))
        with serve(app) as endpoint:
            other = id_token_from(issuer, client_id="someone-else")["id_token"]
            answer = me(endpoint, other)
            assert answer.status_code == 401 and "another audience" in answer.json()["detail"]
            token = id_token_from(issuer)["id_token"]
            time.sleep(2.1)
            answer = me(endpoint, token)
            assert answer.status_code == 401 and answer.json()["detail"] == "token expired"
