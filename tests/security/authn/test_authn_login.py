"""Password logins against the provider chain, sessions, lockout and rate limit, on SQLite
and Postgres, with the audit trail read back from LoomDB."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from loomos.loomdb import EventStore
from loomos.security.authn.audit import RequestContext
from loomos.security.authn.authenticator import Authenticator, SessionGrant
from loomos.security.authn.errors import (
    AccountLocked,
    BadAuthnRequest,
    LoginFailed,
    NotAuthenticated,
    RateLimited,
)
from loomos.security.authn.resolver import resolve
from loomos.security.authn.settings import AuthnSettings
from tests.security.authn.conftest import CTX, PASSWORD, ManualClock, audited


def login(authn: Authenticator, username: str = "alice", password: str = PASSWORD) -> SessionGrant:
    grant = authn.login(username, password, CTX)
    assert isinstance(grant, SessionGrant)
    return grant


def test_local_login_opens_a_session_and_audits_it(authn: Authenticator, event_store: EventStore) -> None:
    authn.accounts.create_local("alice", PASSWORD, display_name="Alice", default_team="vision")
    grant = login(authn)
    assert grant.token.startswith("loomos_sess_")
    assert grant.session.auth_method == "local" and grant.session.source_ip == CTX.source_ip
    who = resolve(authn, grant.token, CTX)
    assert (who.subject, who.default_team, who.session_id) == ("alice", "vision", grant.session.id)
    [event] = audited(authn, event_store, "security.authentication.succeeded")
    assert event["data"]["subject"] == "alice" and event["data"]["method"] == "local"
    assert event["context"]["source_ip"] == CTX.source_ip and event["context"]["request_id"] == "req-1"
    assert PASSWORD not in str(event) and grant.token not in str(event)


@pytest.mark.parametrize(("username", "password"), [("alice", "Guess-9f2c!x"), ("nobody", PASSWORD)])
def test_wrong_password_or_unknown_user_answer_the_same(
    authn: Authenticator, event_store: EventStore, username: str, password: str
) -> None:
    authn.accounts.create_local("alice", PASSWORD)
    with pytest.raises(LoginFailed, match="^invalid username or password$"):
        authn.login(username, password, CTX)
    [event] = audited(authn, event_store, "security.authentication.failed")
    assert event["data"]["subject"] == username and event["data"]["reason"]
    assert password not in str(event)


def test_oversized_credentials_are_refused_before_hashing(
    authn: Authenticator, event_store: EventStore
) -> None:
    with pytest.raises(BadAuthnRequest):
        authn.login("alice", "x" * 1_000_000, CTX)
    with pytest.raises(BadAuthnRequest):
        authn.login("a" * 10_000, PASSWORD, CTX)
    assert len(audited(authn, event_store, "security.authentication.failed")) == 2


def test_guessing_locks_the_account_until_the_lockout_ends(
    make_authn: Callable[..., Authenticator], event_store: EventStore, clock: ManualClock
) -> None:
    authn = make_authn(AuthnSettings(lockout={"max_failures": 3, "lockout_minutes": 10}))
    authn.accounts.create_local("alice", PASSWORD)
    for _ in range(3):
        with pytest.raises(LoginFailed):
            authn.login("alice", "guess", CTX)
    with pytest.raises(AccountLocked, match="account locked after too many failed logins") as locked:
        authn.login("alice", PASSWORD, CTX)  # even the right password, while locked
    assert locked.value.status == 423
    [event] = audited(authn, event_store, "security.account.locked")
    assert event["data"]["subject"] == "alice" and "3 failed logins" in event["data"]["reason"]
    clock.advance(minutes=10, seconds=1)
    login(authn)  # released on time
    with pytest.raises(LoginFailed):  # and counting starts afresh
        authn.login("alice", "guess", CTX)
    login(authn)


def test_unknown_usernames_lock_too(make_authn: Callable[..., Authenticator]) -> None:
    authn = make_authn(AuthnSettings(lockout={"max_failures": 2}))
    for _ in range(2):
        with pytest.raises(LoginFailed):
            authn.login("ghost", "guess", CTX)
    with pytest.raises(AccountLocked):
        authn.login("ghost", "guess", CTX)


def test_attempts_per_address_are_rate_limited(
    make_authn: Callable[..., Authenticator], event_store: EventStore
) -> None:
    authn = make_authn(AuthnSettings(lockout={"attempts_per_minute": 3, "max_failures": 100}))
    for _ in range(3):
        with pytest.raises(LoginFailed):
            authn.login("bob", "guess", CTX)
    with pytest.raises(RateLimited, match="too many login attempts from this address") as limited:
        authn.login("bob", "guess", CTX)
    assert limited.value.status == 429
    with pytest.raises(LoginFailed):  # another address is not affected
        authn.login("bob", "guess", RequestContext(source_ip="198.51.100.1"))
    reasons = [e["data"]["reason"] for e in audited(authn, event_store, "security.authentication.failed")]
    assert "rate limited" in reasons


def test_disabled_and_deleted_users_cannot_log_in_or_use_sessions(authn: Authenticator) -> None:
    user = authn.accounts.create_local("alice", PASSWORD)
    grant = login(authn)
    authn.accounts.set_disabled(user, True)
    authn.cache.clear()
    with pytest.raises(NotAuthenticated, match="user disabled or deleted"):
        resolve(authn, grant.token, CTX)
    with pytest.raises(LoginFailed, match="user disabled or deleted"):
        authn.login("alice", PASSWORD, CTX)
    authn.accounts.set_disabled(user, False)
    authn.accounts.delete(user)
    with pytest.raises(LoginFailed):
        authn.login("alice", PASSWORD, CTX)


def test_sessions_expire_and_slide(make_authn: Callable[..., Authenticator], clock: ManualClock) -> None:
    authn = make_authn(AuthnSettings(sessions={"timeout_minutes": 30}, tokens={"cache_ttl_s": 0}))
    authn.accounts.create_local("alice", PASSWORD)
    grant = login(authn)
    for _ in range(3):  # used every 20 minutes: slides past the first 30
        clock.advance(minutes=20)
        resolve(authn, grant.token, CTX)
    clock.advance(minutes=31)
    with pytest.raises(NotAuthenticated, match="session expired"):
        resolve(authn, grant.token, CTX)

    fixed = make_authn(AuthnSettings(sessions={"timeout_minutes": 30, "sliding_expiration": False}))
    grant = login(fixed)
    clock.advance(minutes=20)
    resolve(fixed, grant.token, CTX)
    clock.advance(minutes=11)
    fixed.cache.clear()
    with pytest.raises(NotAuthenticated, match="session expired"):
        resolve(fixed, grant.token, CTX)


def test_the_oldest_session_goes_past_the_concurrent_limit(
    make_authn: Callable[..., Authenticator], clock: ManualClock
) -> None:
    authn = make_authn(AuthnSettings(sessions={"concurrent_sessions_limit": 2}))
    authn.accounts.create_local("alice", PASSWORD)
    first = login(authn)
    resolve(authn, first.token, CTX)  # cached: the limit must drop it from the cache too
    clock.advance(seconds=1)
    second = login(authn)
    clock.advance(seconds=1)
    third = login(authn)
    with pytest.raises(NotAuthenticated, match="token revoked .concurrent_sessions_limit"):
        resolve(authn, first.token, CTX)
    assert resolve(authn, second.token, CTX).session_id == second.session.id
    assert resolve(authn, third.token, CTX).session_id == third.session.id


def test_logout_and_refresh_revoke_the_old_token(authn: Authenticator, event_store: EventStore) -> None:
    authn.accounts.create_local("alice", PASSWORD)
    grant = login(authn)
    renewed = authn.refresh_session(resolve(authn, grant.token, CTX), CTX)
    with pytest.raises(NotAuthenticated, match="token revoked"):
        resolve(authn, grant.token, CTX)
    who = resolve(authn, renewed.token, CTX)
    authn.logout(who, CTX)
    with pytest.raises(NotAuthenticated, match="token revoked .logout"):
        resolve(authn, renewed.token, CTX)
    [event] = audited(authn, event_store, "security.token.revoked")
    assert event["data"]["kind"] == "session" and event["data"]["reason"] == "logout"


@pytest.mark.parametrize(
    ("bearer", "message"),
    [
        ("loomos_sess_" + "A" * 43, "unknown session"),
        ("loomos_pat_" + "A" * 43, "unknown token"),
        ("not-a-token", "unrecognised token"),
        ("x" * 100_000, "malformed credentials"),
        ("a.b.c", "OIDC tokens are not accepted here"),
    ],
)
def test_bad_bearers_are_refused_and_audited(
    authn: Authenticator, event_store: EventStore, bearer: str, message: str
) -> None:
    with pytest.raises(NotAuthenticated, match=message):
        resolve(authn, bearer, CTX)
    [event] = audited(authn, event_store, "security.authentication.failed")
    assert message in event["data"]["reason"] and bearer[:20] not in str(event["data"])
