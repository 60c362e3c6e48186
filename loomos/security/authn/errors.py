"""Authentication's failures, each with the HTTP status LoomCtl answers it with and a message
that says what to do; the API maps them in loomos.api.services.auth."""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar


class AuthnError(Exception):
    status: ClassVar[int] = 401

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotAuthenticated(AuthnError):
    """No credentials, or credentials that are not (or no longer) valid."""


class LoginFailed(AuthnError):
    """Wrong username or password, or an MFA code that does not verify."""


class AccountLocked(AuthnError):
    status = 423

    def __init__(self, until: datetime) -> None:
        super().__init__(
            f"account locked after too many failed logins; try again after {until:%Y-%m-%d %H:%M:%S} UTC"
        )
        self.until = until


class RateLimited(AuthnError):
    status = 429

    def __init__(self, retry_after_s: float) -> None:
        super().__init__(f"too many login attempts from this address; try again in {retry_after_s:.0f} s")
        self.retry_after_s = retry_after_s


class Forbidden(AuthnError):
    status = 403


class BadAuthnRequest(AuthnError):
    status = 400


class NotFound(AuthnError):
    status = 404


class AuthnConfigError(ValueError):
    """Settings that cannot work (an SMS method without a gateway): refused at start."""
