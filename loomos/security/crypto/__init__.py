"""Encryption: streaming AEAD for files, key providers and rotation, Temporal payload codec."""
