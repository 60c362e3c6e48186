"""Second factors: TOTP (replay refused, ±1 step), WebAuthn with a software authenticator
making real signatures, SMS through a local gateway, and the platform_admin MFA rule over a
role store implementing loomos.security.authn.roles.RoleStore."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from urllib.parse import parse_qs, urlparse

import pyotp
import pytest

from loomos.loomdb import EventStore
from loomos.security.authn.authenticator import Authenticator, MfaChallenge, SessionGrant
from loomos.security.authn.errors import AuthnConfigError, Forbidden, LoginFailed
from loomos.security.authn.resolver import resolve
from loomos.security.authn.roles import RoleStore
from loomos.security.authn.self_service import SelfService
from loomos.security.authn.settings import AuthnSettings
from tests.security.authn.conftest import CTX, PASSWORD, ManualClock, audited
from tests.security.authn.software_authenticator import SoftwareAuthenticator

ORIGIN = "https://loom.example"


def enrol_totp(authn: Authenticator, username: str = "alice") -> pyotp.TOTP:
    grant = authn.login(username, PASSWORD, CTX)
    assert isinstance(grant, SessionGrant)
    who = resolve(authn, grant.token, CTX)
    enrolment = SelfService(authn).totp_begin(who)
    assert enrolment.uri.startswith("otpauth://totp/LoomOS:alice?") and enrolment.qr_svg.startswith("<svg")
    totp = pyotp.TOTP(parse_qs(urlparse(enrolment.uri).query)["secret"][0])
    SelfService(authn).totp_confirm(who, totp.at(authn.clock()), CTX)
    return totp


def challenge(authn: Authenticator, username: str = "alice") -> MfaChallenge:
    outcome = authn.login(username, PASSWORD, CTX)
    assert isinstance(outcome, MfaChallenge)
    return outcome


def test_totp_login_refuses_a_reused_code(
    authn: Authenticator, clock: ManualClock, event_store: EventStore
) -> None:
    authn.accounts.create_local("alice", PASSWORD)
    totp = enrol_totp(authn)
    first = challenge(authn)
    assert first.methods == ["totp"]
    with pytest.raises(LoginFailed, match="code already used"):  # the enrolment's own code
        authn.verify_mfa(first.challenge_id, CTX, code=totp.at(clock()))
    clock.advance(seconds=30)
    code = totp.at(clock())
    grant = authn.verify_mfa(first.challenge_id, CTX, code=code)
    assert grant.session.mfa_verified_at == clock()
    with pytest.raises(LoginFailed, match="unknown or expired MFA challenge"):  # answered already
        authn.verify_mfa(first.challenge_id, CTX, code=code)
    with pytest.raises(LoginFailed, match="code already used"):
        authn.verify_mfa(challenge(authn).challenge_id, CTX, code=code)
    assert audited(authn, event_store, "security.mfa.challenged")
    reasons = [e["data"].get("reason") for e in audited(authn, event_store, "security.authentication.failed")]
    assert "code already used" in reasons and code not in json.dumps(reasons)


def test_totp_window_is_one_step(authn: Authenticator, clock: ManualClock) -> None:
    authn.accounts.create_local("alice", PASSWORD)
    totp = enrol_totp(authn)
    clock.advance(seconds=120)
    late = totp.at(clock().timestamp() - 30)  # the previous step: still good once
    authn.verify_mfa(challenge(authn).challenge_id, CTX, code=late)
    too_old = totp.at(clock().timestamp() - 90)
    with pytest.raises(LoginFailed, match="invalid code"):
        authn.verify_mfa(challenge(authn).challenge_id, CTX, code=too_old)
    for bad in ("", "12345", "abcdef", "9" * 17):
        with pytest.raises(LoginFailed):
            authn.verify_mfa(challenge(authn).challenge_id, CTX, code=bad)


def test_webauthn_registration_and_assertion(make_authn: Callable[..., Authenticator]) -> None:
    authn = make_authn(AuthnSettings(mfa={"webauthn_rp_id": "loom.example", "webauthn_origins": [ORIGIN]}))
    user = authn.accounts.create_local("alice", PASSWORD)
    grant = authn.login("alice", PASSWORD, CTX)
    who = resolve(authn, grant.token, CTX)  # type: ignore[union-attr]
    key = SoftwareAuthenticator("loom.example", ORIGIN)
    challenge_id, options = SelfService(authn).webauthn_begin(who, CTX)
    SelfService(authn).webauthn_finish(who, challenge_id, key.create(options), "yubikey", CTX)

    pending = challenge(authn)
    assert pending.methods == ["webauthn"] and pending.webauthn_options is not None
    assertion = key.get(pending.webauthn_options, user.id.encode())
    session = authn.verify_mfa(pending.challenge_id, CTX, webauthn=assertion)
    assert session.session.mfa_verified_at is not None

    replay = challenge(authn)  # the old assertion answers another challenge: refused
    with pytest.raises(LoginFailed, match="WebAuthn assertion refused"):
        authn.verify_mfa(replay.challenge_id, CTX, webauthn=assertion)
    impostor = SoftwareAuthenticator("loom.example", ORIGIN)
    impostor.credential_id = key.credential_id  # same id, another private key
    with pytest.raises(LoginFailed, match="WebAuthn assertion refused"):
        authn.verify_mfa(
            replay.challenge_id, CTX, webauthn=impostor.get(replay.webauthn_options or {}, user.id.encode())
        )
    phishing = SoftwareAuthenticator("loom.example", "https://evil.example")
    phishing.key, phishing.credential_id, phishing.sign_count = key.key, key.credential_id, key.sign_count
    with pytest.raises(LoginFailed, match="WebAuthn assertion refused"):
        authn.verify_mfa(
            replay.challenge_id, CTX, webauthn=phishing.get(replay.webauthn_options or {}, user.id.encode())
        )


@pytest.fixture
def sms_gateway() -> Iterator[tuple[str, list[dict]]]:
    received: list[dict] = []

    class Gateway(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(202)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Gateway)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/send", received
    server.shutdown()
    server.server_close()


def test_sms_needs_a_gateway(make_authn: Callable[..., Authenticator]) -> None:
    with pytest.raises(AuthnConfigError, match="no SMS gateway configured"):
        make_authn(AuthnSettings(mfa={"methods": ["totp", "sms"]}))


def test_sms_codes_go_through_the_gateway(make_authn: Callable[..., Authenticator], sms_gateway) -> None:  # type: ignore[no-untyped-def]
    url, received = sms_gateway
    authn = make_authn(AuthnSettings(mfa={"methods": ["sms"], "sms_gateway_url": url}))
    authn.accounts.create_local("alice", PASSWORD)
    who = resolve(authn, authn.login("alice", PASSWORD, CTX).token, CTX)  # type: ignore[union-attr]
    confirm = SelfService(authn).sms_begin(who, "+15550100", CTX)
    code = received[-1]["message"].split()[-1]
    SelfService(authn).sms_confirm(who, confirm, code, CTX)
    pending = challenge(authn)
    assert pending.methods == ["sms"] and received[-1]["to"] == "+15550100"
    with pytest.raises(LoginFailed, match="invalid code"):
        authn.verify_mfa(pending.challenge_id, CTX, code="000000" if code != "000000" else "111111")
    assert authn.verify_mfa(pending.challenge_id, CTX, code=received[-1]["message"].split()[-1]).session


class Grants:
    """A RoleStore as authorization implements it, here over a dict."""

    def __init__(self) -> None:
        self.grants: dict[str, dict[str, list[str]]] = {}

    def roles_of(self, subject: str) -> Mapping[str, Sequence[str]]:
        return self.grants.get(subject, {})

    def grant_role(self, subject: str, team: str, role: str) -> None:
        self.grants.setdefault(subject, {}).setdefault(team, []).append(role)


def test_platform_admin_needs_recent_mfa(
    make_authn: Callable[..., Authenticator], clock: ManualClock
) -> None:
    grants = Grants()
    assert isinstance(grants, RoleStore)
    authn = make_authn(
        AuthnSettings(mfa={"grace_period_hours": 4}, tokens={"cache_ttl_s": 0}), role_store=grants
    )
    authn.accounts.create_local("alice", PASSWORD)
    grants.grant_role("alice", "*", "platform_admin")
    grants.grant_role("alice", "vision", "ml_engineer")

    grant = authn.login("alice", PASSWORD, CTX)
    who = resolve(authn, grant.token, CTX)  # type: ignore[union-attr]
    assert who.admin_needs_mfa and who.roles == {"vision": ["ml_engineer"]}
    with pytest.raises(Forbidden, match="must pass MFA"):
        SelfService(authn).create_token(who, "ci", None, 1, CTX)

    totp = enrol_totp(authn)
    clock.advance(seconds=30)
    grant = authn.verify_mfa(challenge(authn).challenge_id, CTX, code=totp.at(clock()))
    who = resolve(authn, grant.token, CTX)
    assert not who.admin_needs_mfa and who.roles["*"] == ["platform_admin"]
    SelfService(authn).create_token(who, "ci", None, 1, CTX)

    clock.advance(hours=4, seconds=1)
    who = resolve(authn, grant.token, CTX)  # type: ignore[union-attr]
    assert who.admin_needs_mfa and "*" not in who.roles
    clock.advance(seconds=30)
    authn.step_up(who, totp.at(clock()), CTX)
    assert not resolve(authn, grant.token, CTX).admin_needs_mfa  # type: ignore[union-attr]
