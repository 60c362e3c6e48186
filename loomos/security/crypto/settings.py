"""The `security.crypto` section of LoomOS's settings (pure pydantic: loomos.settings imports it).

Every key here needs its environment variable in VARIABLES (loomos.settings reads, documents
and passes them on to `loomos dev`'s children from that one list).

Keys never appear here, only where they are: a keyring file (`key_file`: the keys themselves
with the local provider, KMS-wrapped data keys with aws-kms) and a KMS key id. Every process
that encrypts or decrypts (LoomCtl, control and node workers, training processes through the
node) must see the same keyring.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from loomos.settings_vars import EnvVar


class Classification(StrEnum):
    """How sensitive data is; it decides the algorithm (loomos.security.crypto.algorithms)."""

    PUBLIC = "public"
    INTERNAL = "internal"
    CONFIDENTIAL = "confidential"
    RESTRICTED = "restricted"


KeyProviderName = Literal["local", "aws-kms"]


class CryptoSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    key_provider: KeyProviderName = "local"
    # The keyring (JSON, mode 0600). Relative paths are taken from temporal-dev.yaml's folder.
    key_file: str = ".loomos/keys/keyring.json"
    # aws-kms: the KMS key that wraps the keyring's data keys (id, ARN or alias/...).
    kms_key_id: str | None = Field(None, min_length=1)
    kms_region: str | None = Field(None, min_length=1)
    kms_endpoint: str | None = Field(None, min_length=1)  # a KMS-compatible endpoint (tests: moto)
    # Keys older than this are "due": `loomos keys list` says so, `loomos keys rotate --if-due`
    # rotates, processes warn at start. New data always uses the newest key.
    key_rotation_days: int = Field(90, ge=1, le=3650)
    # Encrypt Temporal payloads (workflow/activity inputs, results, headers) in every process.
    payload_encryption: bool = False
    # Checkpoints of jobs with checkpoint_config.encryption_enabled: their classification.
    checkpoint_classification: Classification = Classification.CONFIDENTIAL
    # Origins (scheme://host:port) allowed to call the codec endpoint with credentials: the
    # Temporal UI's. Never "*". Empty: the dev stack's UI (settings.ui_url) only.
    codec_cors_origins: list[str] = Field(default_factory=list)

    @field_validator("codec_cors_origins")
    @classmethod
    def _exact_origins(cls, v: list[str]) -> list[str]:
        for origin in v:
            if "*" in origin or not origin.startswith(("http://", "https://")) or origin.count("/") != 2:
                raise ValueError(f"{origin!r}: an exact origin, scheme://host[:port] without a path or *")
        return v

    @model_validator(mode="after")
    def _kms_needs_key(self) -> CryptoSettings:
        if self.key_provider == "aws-kms" and not self.kms_key_id:
            raise ValueError("key_provider aws-kms needs kms_key_id")
        if self.checkpoint_classification == Classification.PUBLIC:
            raise ValueError("checkpoint_classification public would not encrypt: use internal or above")
        return self


def _var(name: str, key: str, description: str) -> EnvVar:
    return EnvVar(f"LOOMOS_CRYPTO_{name}", f"security.crypto.{key}", description)


VARIABLES: tuple[EnvVar, ...] = (
    _var("KEY_PROVIDER", "key_provider", "local (a keyring file) or aws-kms (data keys wrapped by KMS)"),
    _var("KEY_FILE", "key_file", "the keyring file (JSON, mode 0600): keys or KMS-wrapped data keys"),
    _var("KMS_KEY_ID", "kms_key_id", "aws-kms: the KMS key that wraps data keys (id, ARN or alias/...)"),
    _var("KMS_REGION", "kms_region", "aws-kms: region (empty: boto3's default)"),
    _var("KMS_ENDPOINT", "kms_endpoint", "aws-kms: endpoint URL (empty: AWS's)"),
    _var("KEY_ROTATION_DAYS", "key_rotation_days", "age at which the newest key is due for rotation"),
    _var("PAYLOAD_ENCRYPTION", "payload_encryption", "encrypt Temporal payloads and headers (all processes)"),
    _var(
        "CHECKPOINT_CLASSIFICATION", "checkpoint_classification",
        "encrypted checkpoints: internal/confidential (AES-256-GCM) or restricted (ChaCha20-Poly1305)",
    ),
    _var("CODEC_CORS_ORIGINS", "codec_cors_origins", "Temporal UI origins for the codec endpoint, JSON list"),
)  # fmt: skip
