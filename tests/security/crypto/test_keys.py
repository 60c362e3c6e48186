"""Key providers (loomos.security.crypto.keys, .kms): the local keyring file and AWS KMS
envelope encryption against moto's KMS served over HTTP (boto3 with an endpoint, as in
production), rotation, and the one-line errors for a keyring that cannot serve."""

from __future__ import annotations

import base64
import io
import json
import os
import stat
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws

from loomos.security.crypto.errors import KeyFileError, KeyUnavailable, UnknownKeyId
from loomos.security.crypto.header import read_header
from loomos.security.crypto.keys import KeyringFile, LocalKeyProvider, open_key_provider
from loomos.security.crypto.kms import KmsKeyProvider
from loomos.security.crypto.stream import decrypt_stream, encrypt_stream


def seal(data: bytes, provider, file_id: str = "f") -> bytes:  # type: ignore[no-untyped-def]
    out = io.BytesIO()
    encrypt_stream(io.BytesIO(data), out, provider, file_id)
    return out.getvalue()


def unseal(stored: bytes, provider, file_id: str = "f") -> bytes:  # type: ignore[no-untyped-def]
    out = io.BytesIO()
    decrypt_stream(io.BytesIO(stored), out, provider, file_id)
    return out.getvalue()


# --- the local keyring -----------------------------------------------------------------------


def test_rotate_creates_a_private_keyring_and_new_data_uses_the_newest_key(keyring_path: Path) -> None:
    provider = open_key_provider("local", keyring_path)
    assert not keyring_path.exists()
    first, rewrapped = provider.rotate()
    assert rewrapped == 0 and stat.S_IMODE(keyring_path.stat().st_mode) == 0o600
    old = seal(b"written under the first key", provider)
    second, _ = provider.rotate(now=datetime.now(UTC) + timedelta(seconds=1))
    assert [k.key_id for k in provider.keys()] == [first.key_id, second.key_id]
    assert provider.current()[0] == second.key_id
    new = seal(b"written under the second key", provider)
    assert read_header(io.BytesIO(old))[0].key_id == first.key_id
    assert read_header(io.BytesIO(new))[0].key_id == second.key_id
    fresh = open_key_provider("local", keyring_path)  # another process: both stay readable
    assert unseal(old, fresh) == b"written under the first key"
    assert unseal(new, fresh) == b"written under the second key"


def test_the_keyring_holds_ids_times_and_secrets(provider: LocalKeyProvider, keyring_path: Path) -> None:
    doc = json.loads(keyring_path.read_text())
    assert doc["format"] == "loomos-keyring" and doc["version"] == 1 and doc["provider"] == "local"
    (entry,) = doc["keys"]
    assert set(entry) == {"id", "created", "secret"} and entry["id"].startswith("k-")
    assert (info := provider.keys()[0]).key_id == entry["id"] and info.age_days() < 1


def test_a_keyring_others_can_read_is_refused(provider: LocalKeyProvider, keyring_path: Path) -> None:
    keyring_path.chmod(0o640)
    refused = rf"{keyring_path} is readable by others \(mode 0640\); run chmod 600"
    with pytest.raises(KeyFileError, match=refused):
        open_key_provider("local", keyring_path).current()


def test_a_missing_or_unreadable_keyring_names_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.json"
    with pytest.raises(KeyFileError, match=rf"key file {missing} does not exist .*loomos keys rotate"):
        open_key_provider("local", missing).current()
    garbled = tmp_path / "garbled.json"
    garbled.write_text("{not json")
    garbled.chmod(0o600)
    with pytest.raises(KeyFileError, match=rf"key file {garbled}: not valid JSON"):
        open_key_provider("local", garbled).current()
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"format": "loomos-keyring", "version": 1, "provider": "aws-kms"}))
    other.chmod(0o600)
    with pytest.raises(KeyFileError, match="keyring of the 'aws-kms' provider"):
        open_key_provider("local", other).current()
    if os.geteuid() != 0:  # root reads anything
        locked = tmp_path / "locked.json"
        locked.write_text("{}")
        locked.chmod(0)
        with pytest.raises(KeyFileError, match=rf"key file {locked}: cannot read"):
            open_key_provider("local", locked).current()


def test_an_unknown_key_id_reloads_the_keyring_once(provider: LocalKeyProvider, keyring_path: Path) -> None:
    reader = open_key_provider("local", keyring_path)
    reader.current()  # loaded now, before the rotation below
    elsewhere = open_key_provider("local", keyring_path)
    newer, _ = elsewhere.rotate(now=datetime.now(UTC) + timedelta(seconds=1))
    sealed = seal(b"from a process that rotated", elsewhere)
    assert unseal(sealed, reader) == b"from a process that rotated"  # picked up without restart
    with pytest.raises(UnknownKeyId) as caught:
        reader.secret("k-19990101-000000", context="file id 'x'")
    assert "k-19990101-000000" in str(caught.value) and newer.key_id in str(caught.value)
    assert str(keyring_path) in str(caught.value)


def test_rotation_is_due_after_key_rotation_days(keyring_path: Path) -> None:
    provider = open_key_provider("local", keyring_path, rotation_days=30)
    assert provider.due_for_rotation()  # no key yet
    provider.rotate(now=datetime.now(UTC) - timedelta(days=31))
    assert provider.due_for_rotation()
    provider.rotate()
    assert not provider.due_for_rotation()
    assert provider.due_for_rotation(now=datetime.now(UTC) + timedelta(days=30))


# --- AWS KMS (moto's, over HTTP) ---------------------------------------------------------------


@pytest.fixture
def kms(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """moto's KMS, in this process: boto3's real client and calls, answered by moto."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(name, "testing")
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    with mock_aws():
        yield boto3.client("kms", region_name="us-east-1")


def kms_provider(path: Path, key_id: str) -> KmsKeyProvider:
    made = open_key_provider("aws-kms", path, kms_key_id=key_id, kms_region="us-east-1")
    assert isinstance(made, KmsKeyProvider)
    return made


def test_kms_keys_are_data_keys_wrapped_by_kms(kms: Any, keyring_path: Path) -> None:
    cmk = kms.create_key(Description="loomos test")["KeyMetadata"]["Arn"]
    provider = kms_provider(keyring_path, cmk)
    info, _ = provider.rotate()
    assert info.provider == "aws-kms" and info.wrapped_by == cmk
    (entry,) = json.loads(keyring_path.read_text())["keys"]
    assert set(entry) == {"id", "created", "kms_key_id", "wrapped"}  # no plaintext key on disk
    secret = provider.current()[1]
    text = keyring_path.read_text()
    assert secret.hex() not in text and base64.b64encode(secret).decode() not in text
    sealed = seal(b"checkpoint bytes", provider)
    fresh = kms_provider(keyring_path, cmk)  # unwraps through KMS
    assert unseal(sealed, fresh) == b"checkpoint bytes"


def test_kms_rotation_rewraps_older_keys_under_the_current_kms_key(kms, keyring_path: Path) -> None:
    old = kms.create_key()["KeyMetadata"]
    old_cmk = old["Arn"]
    first = kms_provider(keyring_path, old_cmk)
    first.rotate(now=datetime.now(UTC) - timedelta(days=100))
    old_data = seal(b"sealed before the move", first)

    new_cmk = kms.create_key()["KeyMetadata"]["Arn"]
    moved = kms_provider(keyring_path, new_cmk)
    info, rewrapped = moved.rotate()
    assert rewrapped == 1 and info.wrapped_by == new_cmk
    assert {e["kms_key_id"] for e in json.loads(keyring_path.read_text())["keys"]} == {new_cmk}
    kms.disable_key(KeyId=old["KeyId"])  # the old KMS key can go: nothing needs it any more
    fresh = kms_provider(keyring_path, new_cmk)
    assert unseal(old_data, fresh) == b"sealed before the move"
    assert read_header(io.BytesIO(seal(b"new", fresh)))[0].key_id == info.key_id


def test_a_wrapped_key_moved_to_another_entry_does_not_unwrap(kms, keyring_path: Path) -> None:
    cmk = kms.create_key()["KeyMetadata"]["Arn"]
    provider = kms_provider(keyring_path, cmk)
    provider.rotate(now=datetime.now(UTC) - timedelta(seconds=5))
    provider.rotate()
    doc = json.loads(keyring_path.read_text())
    a, b = doc["keys"]
    a["wrapped"], b["wrapped"] = b["wrapped"], a["wrapped"]  # encryption context binds each to its id
    KeyringFile(keyring_path, "aws-kms").save(doc["keys"])
    refused = rf"KMS would not unwrap key id '{a['id']}' of key file {keyring_path}"
    with pytest.raises(KeyUnavailable, match=refused):
        kms_provider(keyring_path, cmk).secret(a["id"])


def test_kms_refusing_names_the_key_id(kms: Any, keyring_path: Path) -> None:
    cmk = kms.create_key()["KeyMetadata"]["Arn"]
    provider = kms_provider(keyring_path, cmk)
    info, _ = provider.rotate()
    doc = json.loads(keyring_path.read_text())
    doc["keys"][0]["kms_key_id"] = kms.create_key()["KeyMetadata"]["Arn"]  # not the key that wrapped it
    KeyringFile(keyring_path, "aws-kms").save(doc["keys"])
    refused = rf"KMS would not unwrap key id '{info.key_id}' of key file {keyring_path}: AccessDenied"
    with pytest.raises(KeyUnavailable, match=refused):
        kms_provider(keyring_path, cmk).current()
    with pytest.raises(KeyFileError, match="needs a KMS key id"):
        open_key_provider("aws-kms", keyring_path)
