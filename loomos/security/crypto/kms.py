"""The aws-kms key provider: envelope encryption with AWS KMS through boto3.

Each key of the keyring is a 256-bit data key that KMS generated (GenerateDataKey); the file
keeps only its wrapped form (the CiphertextBlob) and the KMS key that wrapped it, so the keyring
is useless without kms:Decrypt on that key. Every KMS call carries the encryption context
{"loomos:key-id": <id>}: a wrapped key moved to another entry of the keyring does not unwrap.

Rotation generates a new data key and re-wraps the older ones under the current kms_key_id
(ReEncrypt, which never exposes the plaintext to this process): after `loomos keys rotate` with a
new kms_key_id, the old KMS key can be disabled without losing any data. KMS's own automatic
rotation of a key's backing material needs nothing from us (old material stays usable by KMS).

Unwrapped keys stay in this process's memory, so KMS sees one Decrypt per key id per process.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from loomos.security.crypto.errors import KeyFileError, KeyUnavailable
from loomos.security.crypto.keys import KeyInfo, KeyProvider, KeyringFile, b64, format_created, unb64

ENCRYPTION_CONTEXT_KEY = "loomos:key-id"


class KmsKeyProvider(KeyProvider):
    name = "aws-kms"

    def __init__(
        self,
        keyring: KeyringFile,
        kms_key_id: str,
        *,
        region: str | None = None,
        endpoint: str | None = None,
        rotation_days: int = 90,
        client: Any = None,
    ) -> None:
        super().__init__(keyring, rotation_days)
        self.kms_key_id = kms_key_id
        self.region = region
        self.endpoint = endpoint
        self._client = client

    def describe(self) -> str:
        return f"{self.keyring.describe()} (data keys wrapped by KMS key {self.kms_key_id})"

    @property
    def client(self) -> Any:
        if self._client is None:
            try:
                import boto3
            except ImportError:
                raise KeyUnavailable(
                    "the aws-kms key provider needs boto3: pip install 'loomos[aws]'"
                ) from None
            self._client = boto3.client("kms", region_name=self.region, endpoint_url=self.endpoint)
        return self._client

    def _context(self, key_id: str) -> dict[str, str]:
        return {ENCRYPTION_CONTEXT_KEY: key_id}

    def _kms_error(self, action: str, key_id: str, exc: Exception) -> KeyUnavailable:
        detail = getattr(exc, "response", {}).get("Error", {})
        code = detail.get("Code") or type(exc).__name__
        message = detail.get("Message") or str(exc)
        return KeyUnavailable(
            f"KMS would not {action} key id {key_id!r} of {self.keyring.describe()}: {code}"
            + (f": {message}" if message else "")
        )

    def _info(self, entry: dict[str, Any]) -> KeyInfo:
        info = super()._info(entry)
        return KeyInfo(info.key_id, info.created, self.name, wrapped_by=entry.get("kms_key_id"))

    def _unwrap(self, entry: dict[str, Any]) -> bytes:
        key_id = entry["id"]
        if "wrapped" not in entry:
            raise KeyFileError(f'{self.keyring.describe()}: key {key_id!r} has no "wrapped" data key')
        blob = unb64(str(entry["wrapped"]), f"{self.keyring.describe()}: key {key_id!r}")
        kwargs: dict[str, Any] = {"CiphertextBlob": blob, "EncryptionContext": self._context(key_id)}
        if entry.get("kms_key_id"):
            kwargs["KeyId"] = entry["kms_key_id"]  # only that key may unwrap it
        try:
            return bytes(self.client.decrypt(**kwargs)["Plaintext"])
        except KeyUnavailable:
            raise
        except Exception as exc:  # botocore's ClientError, EndpointConnectionError, NoCredentialsError
            raise self._kms_error("unwrap", key_id, exc) from None

    def _new_entry(self, key_id: str, created: datetime) -> tuple[dict[str, Any], bytes]:
        try:
            made = self.client.generate_data_key(
                KeyId=self.kms_key_id, KeySpec="AES_256", EncryptionContext=self._context(key_id)
            )
        except KeyUnavailable:
            raise
        except Exception as exc:
            raise self._kms_error("generate", key_id, exc) from None
        entry = {
            "id": key_id,
            "created": format_created(created),
            "kms_key_id": made["KeyId"],
            "wrapped": b64(made["CiphertextBlob"]),
        }
        return entry, bytes(made["Plaintext"])

    def _rewrap(self, entries: list[dict[str, Any]]) -> int:
        """ReEncrypt every older data key under the current KMS key (the plaintext never leaves
        KMS); entries already under it are re-wrapped too, which costs one call each and keeps
        the rule simple: after a rotation, all of the keyring is under kms_key_id."""
        for entry in entries:
            key_id = entry["id"]
            blob = unb64(str(entry.get("wrapped", "")), f"{self.keyring.describe()}: key {key_id!r}")
            try:
                done = self.client.re_encrypt(
                    CiphertextBlob=blob,
                    SourceEncryptionContext=self._context(key_id),
                    DestinationKeyId=self.kms_key_id,
                    DestinationEncryptionContext=self._context(key_id),
                )
            except Exception as exc:
                raise self._kms_error("re-wrap", key_id, exc) from None
            entry["wrapped"] = b64(done["CiphertextBlob"])
            entry["kms_key_id"] = done["KeyId"]
        return len(entries)
