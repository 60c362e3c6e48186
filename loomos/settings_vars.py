"""EnvVar: one environment variable of LoomOS's settings and the dotted key it sets (its own
module so that settings sections defined elsewhere, such as loomos.security's, can list theirs)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class EnvVar:
    name: str
    key: str
    description: str
