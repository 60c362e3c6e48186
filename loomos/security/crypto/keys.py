"""Key providers: where the keys that encrypt files and Temporal payloads come from.

Both providers keep a keyring: a JSON file of keys, each with an id and a creation time. New
data is always sealed with the newest key and names its key id (file header, payload
metadata); old data stays readable as long as its key id is in the keyring. Rotation adds a
key and never removes one.

    {"format": "loomos-keyring", "version": 1, "provider": "local",
     "keys": [{"id": "k-20261202-8f3a1c", "created": "2026-12-02T14:00:00Z", "secret": "<base64>"}]}

- `local` (development, single hosts): the 32-byte secrets themselves are in the file, which
  must be mode 0600 (checked on every load: a key file others can read is refused).
- `aws-kms` (loomos.security.crypto.kms): envelope encryption. Each key is a data key KMS
  generated (GenerateDataKey) and the file holds only its wrapped form ("wrapped", plus the
  KMS key that wrapped it); a process unwraps a key id once (Decrypt, bound to the key id by an
  encryption context) and keeps it in memory. Rotation adds a data key and re-wraps the older
  ones under the current KMS key (ReEncrypt), so retiring an old KMS key leaves nothing behind.

Why a keyring rather than a wrapped key in every file header: Temporal payloads are small and
many, and one KMS call each is out of the question; one keyring serves files and payloads
alike, and `loomos keys list` can show every key in use. Every process that reads or writes
encrypted data must see the same keyring (ship it like a certificate); a process that meets an
unknown key id reloads the file once before it fails, so a rotation elsewhere is picked up.

What callers use: `provider.current()` (newest key id and secret), `provider.secret(key_id)`,
`provider.keys()` (ids and creation times, never material), `provider.rotate()`.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import secrets
import stat
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from loomos.security.crypto.errors import KeyFileError, UnknownKeyId

KEYRING_FORMAT = "loomos-keyring"
KEYRING_VERSION = 1
SECRET_BYTES = 32


@dataclass(frozen=True)
class KeyInfo:
    """What may be shown about a key: never its material."""

    key_id: str
    created: datetime
    provider: str
    wrapped_by: str | None = None  # aws-kms: the KMS key its data key is wrapped under

    def age_days(self, now: datetime | None = None) -> float:
        return ((now or datetime.now(UTC)) - self.created).total_seconds() / 86400


def new_key_id(now: datetime | None = None) -> str:
    """k-<yyyymmdd>-<6 hex>: sortable by day, unique by chance (24 random bits a day)."""
    return f"k-{(now or datetime.now(UTC)):%Y%m%d}-{secrets.token_hex(3)}"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def unb64(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (ValueError, TypeError):
        raise KeyFileError(f"{what}: not valid base64") from None


class KeyringFile:
    """The keyring on disk: read with its mode checked, written atomically at mode 0600 under
    an exclusive lock (two `loomos keys rotate` at once do not lose a key)."""

    def __init__(self, path: str | Path, provider: str) -> None:
        self.path = Path(path).expanduser()
        self.provider = provider
        self._stamp: tuple[int, int] | None = None

    def describe(self) -> str:
        return f"key file {self.path}"

    def exists(self) -> bool:
        return self.path.exists()

    def changed_since_load(self) -> bool:
        try:
            st = self.path.stat()
        except OSError:
            return False
        return (st.st_mtime_ns, st.st_size) != self._stamp

    def load(self) -> list[dict[str, Any]]:
        """The keyring's entries, oldest first. Raises KeyFileError naming the file."""
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            raise KeyFileError(
                f"{self.describe()} does not exist (create the first key with `loomos keys rotate`, "
                "or point security.crypto.key_file / LOOMOS_CRYPTO_KEY_FILE at the keyring)"
            ) from None
        except OSError as exc:
            raise KeyFileError(f"{self.describe()}: cannot read ({exc.strerror})") from None
        with os.fdopen(fd, "rb") as fh:
            st = os.fstat(fh.fileno())
            if st.st_mode & 0o077:
                mode = stat.S_IMODE(st.st_mode)
                raise KeyFileError(
                    f"{self.describe()} is readable by others (mode {mode:04o}); run chmod 600 {self.path}"
                )
            raw = fh.read()
        self._stamp = (st.st_mtime_ns, st.st_size)
        try:
            doc = json.loads(raw)
        except ValueError as exc:
            raise KeyFileError(f"{self.describe()}: not valid JSON ({exc})") from None
        if not isinstance(doc, dict) or doc.get("format") != KEYRING_FORMAT:
            raise KeyFileError(f'{self.describe()}: not a LoomOS keyring (no "format": "{KEYRING_FORMAT}")')
        if doc.get("version") != KEYRING_VERSION:
            raise KeyFileError(f"{self.describe()}: keyring version {doc.get('version')!r} is not supported")
        if doc.get("provider") != self.provider:
            raise KeyFileError(
                f"{self.describe()} is a keyring of the {doc.get('provider')!r} provider, "
                f"security.crypto.key_provider is {self.provider!r}"
            )
        entries = doc.get("keys")
        if not isinstance(entries, list) or not all(isinstance(e, dict) and "id" in e for e in entries):
            raise KeyFileError(f'{self.describe()}: "keys" must be a list of keys with ids')
        return entries

    def save(self, entries: list[dict[str, Any]]) -> None:
        """Replace the keyring atomically (temp file at 0600, fsync, rename, fsync the folder)."""
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        doc = {"format": KEYRING_FORMAT, "version": KEYRING_VERSION, "provider": self.provider}
        doc["keys"] = entries
        tmp = self.path.with_name(f".{self.path.name}.tmp-{os.getpid()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w") as fh:
                json.dump(doc, fh, indent=2)
                fh.write("\n")
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        dir_fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """An exclusive lock for read-modify-write (a lock file next to the keyring)."""
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.path.with_name(f".{self.path.name}.lock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)


def parse_created(entry: dict[str, Any], where: str) -> datetime:
    try:
        created = datetime.fromisoformat(str(entry["created"]).replace("Z", "+00:00"))
    except (KeyError, ValueError):
        raise KeyFileError(f'{where}: key {entry.get("id")!r} has no valid "created" time') from None
    return created if created.tzinfo else created.replace(tzinfo=UTC)


def format_created(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class KeyProvider(ABC):
    """Keys by id, the newest for new data. Thread-safe; secrets are cached in memory."""

    name: str

    def __init__(self, keyring: KeyringFile, rotation_days: int = 90) -> None:
        self.keyring = keyring
        self.rotation = timedelta(days=rotation_days)
        self._lock = threading.Lock()
        self._entries: list[dict[str, Any]] | None = None
        self._secrets: dict[str, bytes] = {}

    # --- what subclasses do -------------------------------------------------------------------

    @abstractmethod
    def _unwrap(self, entry: dict[str, Any]) -> bytes:
        """The 32-byte secret of a keyring entry."""

    @abstractmethod
    def _new_entry(self, key_id: str, created: datetime) -> tuple[dict[str, Any], bytes]:
        """A new keyring entry and its secret."""

    def _rewrap(self, entries: list[dict[str, Any]]) -> int:
        """Re-wrap the entries under the current wrapping key, in place; how many changed."""
        return 0

    def _info(self, entry: dict[str, Any]) -> KeyInfo:
        return KeyInfo(entry["id"], parse_created(entry, self.keyring.describe()), self.name)

    # --- the interface -------------------------------------------------------------------------

    def describe(self) -> str:
        return self.keyring.describe()

    def _loaded(self, reload: bool = False) -> list[dict[str, Any]]:
        if self._entries is None or reload:
            self._entries = self.keyring.load()
        return self._entries

    def keys(self) -> list[KeyInfo]:
        """Every key, oldest first (ids and creation times only)."""
        with self._lock:
            entries = self._loaded(reload=True)
        return sorted((self._info(e) for e in entries), key=lambda k: k.created)

    def current(self) -> tuple[str, bytes]:
        """(key id, secret) of the newest key: what new data is sealed with."""
        with self._lock:
            entries = self._loaded()
            if not entries:
                raise KeyFileError(f"{self.describe()} holds no keys (create one with `loomos keys rotate`)")
            newest = max(entries, key=lambda e: parse_created(e, self.describe()))
            return newest["id"], self._secret_of(newest)

    def secret(self, key_id: str, context: str = "") -> bytes:
        """The secret of `key_id`; UnknownKeyId (naming the id and the file) if the keyring,
        reloaded once if it changed on disk, does not hold it."""
        with self._lock:
            cached = self._secrets.get(key_id)
            if cached is not None:
                return cached
            entries = self._loaded()
            entry = next((e for e in entries if e["id"] == key_id), None)
            if entry is None and self.keyring.changed_since_load():
                entries = self._loaded(reload=True)
                entry = next((e for e in entries if e["id"] == key_id), None)
            if entry is None:
                raise UnknownKeyId(key_id, self.describe(), [e["id"] for e in entries], context)
            return self._secret_of(entry)

    def _secret_of(self, entry: dict[str, Any]) -> bytes:
        key_id = entry["id"]
        if key_id not in self._secrets:
            secret = self._unwrap(entry)
            if len(secret) != SECRET_BYTES:
                raise KeyFileError(f"{self.describe()}: key {key_id!r} is not {SECRET_BYTES} bytes")
            self._secrets[key_id] = secret
        return self._secrets[key_id]

    def due_for_rotation(self, now: datetime | None = None) -> bool:
        """Whether the newest key is older than key_rotation_days (or there is none)."""
        keys = self.keys() if self.keyring.exists() else []
        return not keys or (now or datetime.now(UTC)) - keys[-1].created >= self.rotation

    def rotate(self, now: datetime | None = None) -> tuple[KeyInfo, int]:
        """Add a new newest key (creating the keyring if there is none) and re-wrap the older
        ones where the provider wraps them; returns the new key and how many were re-wrapped."""
        now = now or datetime.now(UTC)
        with self._lock, self.keyring.locked():
            entries = list(self.keyring.load()) if self.keyring.exists() else []
            known = {e["id"] for e in entries}
            key_id = new_key_id(now)
            while key_id in known:
                key_id = new_key_id(now)
            rewrapped = self._rewrap(entries)
            entry, secret = self._new_entry(key_id, now)
            entries.append(entry)
            self.keyring.save(entries)
            self._entries = entries
            self._secrets[key_id] = secret
        return self._info(entry), rewrapped


class LocalKeyProvider(KeyProvider):
    """Secrets in the keyring file itself (mode 0600): development and single hosts."""

    name = "local"

    def _unwrap(self, entry: dict[str, Any]) -> bytes:
        if "secret" not in entry:
            raise KeyFileError(f'{self.describe()}: key {entry["id"]!r} has no "secret"')
        return unb64(str(entry["secret"]), f"{self.describe()}: key {entry['id']!r}")

    def _new_entry(self, key_id: str, created: datetime) -> tuple[dict[str, Any], bytes]:
        secret = secrets.token_bytes(SECRET_BYTES)
        return {"id": key_id, "created": format_created(created), "secret": b64(secret)}, secret


def open_key_provider(
    provider: str,
    key_file: str | Path,
    *,
    kms_key_id: str | None = None,
    kms_region: str | None = None,
    kms_endpoint: str | None = None,
    rotation_days: int = 90,
) -> KeyProvider:
    """The provider by name, over its keyring. Nothing is read until a key is asked for."""
    if provider == "local":
        return LocalKeyProvider(KeyringFile(key_file, "local"), rotation_days)
    if provider == "aws-kms":
        from loomos.security.crypto.kms import KmsKeyProvider

        if not kms_key_id:
            raise KeyFileError("the aws-kms key provider needs a KMS key id (security.crypto.kms_key_id)")
        return KmsKeyProvider(
            KeyringFile(key_file, "aws-kms"), kms_key_id, region=kms_region, endpoint=kms_endpoint,
            rotation_days=rotation_days,
        )  # fmt: skip
    raise KeyFileError(f"unknown key provider {provider!r}: local or aws-kms")


def key_provider_from_settings(crypto: Any) -> KeyProvider:
    """open_key_provider for a CryptoSettings (security.crypto)."""
    return open_key_provider(
        crypto.key_provider, crypto.key_file, kms_key_id=crypto.kms_key_id, kms_region=crypto.kms_region,
        kms_endpoint=crypto.kms_endpoint, rotation_days=crypto.key_rotation_days,
    )  # fmt: skip
