"""The `security.crypto` section of LoomOS's settings (pure pydantic: loomos.settings imports it).

Every key here needs its environment variable in VARIABLES (loomos.settings reads, documents
and passes them on to `loomos dev`'s children from that one list)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from loomos.settings_vars import EnvVar


class CryptoSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")


VARIABLES: tuple[EnvVar, ...] = ()
