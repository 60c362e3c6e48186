"""API tokens: scoped to Permission values, expiring, stored hashed, revoked at once in this
process (the cache is dropped), refused for a deleted owner; creation and revocation audited."""

from __future__ import annotations

import pytest

from loomos.loomdb import EventStore
from loomos.security.authn.authenticator import Authenticator
from loomos.security.authn.errors import BadAuthnRequest, NotAuthenticated, NotFound
from loomos.security.authn.resolver import resolve
from loomos.security.authn.self_service import SelfService
from tests.security.authn.conftest import CTX, PASSWORD, ManualClock, audited


def owner(authn: Authenticator, name: str = "alice"):  # type: ignore[no-untyped-def]
    authn.accounts.create_local(name, PASSWORD)
    return resolve(authn, authn.login(name, PASSWORD, CTX).token, CTX)  # type: ignore[union-attr]


def test_token_lifecycle_is_audited(authn: Authenticator, event_store: EventStore) -> None:
    who = owner(authn)
    service = SelfService(authn)
    secret, token = service.create_token(who, "ci", ["jobs:read"], 7, CTX)
    as_token = resolve(authn, secret, CTX)
    assert (as_token.subject, as_token.permissions, as_token.token_id) == ("alice", ["jobs:read"], token.id)
    assert [t.id for t in service.list_tokens(who)] == [token.id]
    service.revoke_token(who, token.id, CTX)
    with pytest.raises(NotAuthenticated, match="token revoked"):  # the cached answer was dropped
        resolve(authn, secret, CTX)
    assert service.list_tokens(who) == []
    [created] = audited(authn, event_store, "security.token.created")
    [revoked] = audited(authn, event_store, "security.token.revoked")
    assert created["data"]["token_prefix"] == secret[:15] and created["data"]["scopes"] == ["jobs:read"]
    assert revoked["data"]["token_id"] == token.id
    assert secret not in str(created) + str(revoked)


def test_tokens_expire_and_die_with_their_owner(authn: Authenticator, clock: ManualClock) -> None:
    who = owner(authn)
    secret, _ = SelfService(authn).create_token(who, "short", None, 1, CTX)
    assert resolve(authn, secret, CTX).permissions is None  # unscoped: the owner's permissions
    clock.advance(days=1, seconds=1)
    authn.cache.clear()
    with pytest.raises(NotAuthenticated, match="token expired"):
        resolve(authn, secret, CTX)
    secret, _ = SelfService(authn).create_token(who, "other", None, 30, CTX)
    user = authn.accounts.get("alice")
    assert user is not None
    authn.accounts.delete(user)
    authn.cache.clear()
    with pytest.raises(NotAuthenticated, match="user disabled or deleted"):
        resolve(authn, secret, CTX)


def test_bad_token_requests(authn: Authenticator) -> None:
    who = owner(authn)
    service = SelfService(authn)
    with pytest.raises(BadAuthnRequest, match="unknown permission"):
        service.create_token(who, "x", ["jobs:everything"], 1, CTX)
    with pytest.raises(BadAuthnRequest, match="expiry must be 1 to 365 days"):
        service.create_token(who, "x", None, 10_000, CTX)
    other = owner(authn, "bob")
    _, token = service.create_token(other, "bobs", None, 1, CTX)
    with pytest.raises(NotFound):  # someone else's token: not yours to revoke, not even to see
        service.revoke_token(who, token.id, CTX)
