"""What a directory (OIDC provider, LDAP server) says about a user who proved who they are,
and the failures a provider reports, shared by loomos.security.authn.oidc and .ldap."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime


@dataclass(frozen=True)
class ExternalUser:
    username: str
    display_name: str | None = None
    email: str | None = None
    groups: list[str] = field(default_factory=list)
    team: str | None = None
    # OIDC: when the provider authenticated the user with a second factor (its `amr` says so).
    mfa_at: datetime | None = None


class ProviderError(Exception):
    """A provider refused the credentials; `reason` is for the audit trail and the answer."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class UnknownUser(ProviderError):
    """The provider does not know the user: the next provider may."""


class BadCredentials(ProviderError):
    """The provider knows the user and refused the password."""


class ProviderUnavailable(ProviderError):
    """The provider could not be asked (down, misconfigured): the next provider may answer."""


class TokenInvalid(ProviderError):
    """A bearer token that is not (or no longer) acceptable."""


class TokenExpired(TokenInvalid):
    pass
