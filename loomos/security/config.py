"""The `security` section of LoomOS's settings: one subsection per concern."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from loomos.security.authn.settings import VARIABLES as AUTHN_VARIABLES
from loomos.security.authn.settings import AuthnSettings
from loomos.security.authz.settings import VARIABLES as AUTHZ_VARIABLES
from loomos.security.authz.settings import AuthzSettings
from loomos.security.crypto.settings import VARIABLES as CRYPTO_VARIABLES
from loomos.security.crypto.settings import CryptoSettings
from loomos.settings_vars import EnvVar


class SecuritySettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    authn: AuthnSettings = Field(default_factory=AuthnSettings)
    authz: AuthzSettings = Field(default_factory=AuthzSettings)
    crypto: CryptoSettings = Field(default_factory=CryptoSettings)


VARIABLES: tuple[EnvVar, ...] = (*AUTHN_VARIABLES, *AUTHZ_VARIABLES, *CRYPTO_VARIABLES)
