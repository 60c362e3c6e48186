"""A value for each `security.crypto` key's variable and what the key reads then, for
tests/settings' check that every variable sets its key."""

from __future__ import annotations

SAMPLES: dict[str, tuple[str, object]] = {
    # aws-kms alone would need kms_key_id as well; each variable is checked on its own.
    "security.crypto.key_provider": ("local", "local"),
    "security.crypto.key_file": ("/etc/loomos/keyring.json", "/etc/loomos/keyring.json"),
    "security.crypto.kms_key_id": ("alias/loomos", "alias/loomos"),
    "security.crypto.kms_region": ("eu-west-1", "eu-west-1"),
    "security.crypto.kms_endpoint": ("http://127.0.0.1:5000", "http://127.0.0.1:5000"),
    "security.crypto.key_rotation_days": ("30", 30),
    "security.crypto.payload_encryption": ("true", True),
    "security.crypto.checkpoint_classification": ("restricted", "restricted"),
    "security.crypto.codec_cors_origins": ('["https://temporal.example"]', ["https://temporal.example"]),
}
