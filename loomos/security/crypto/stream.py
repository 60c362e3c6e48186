"""Streaming authenticated encryption of files: the construction of age's STREAM and Tink's
streaming AEAD, in constant memory, for files of any size.

One-shot AES-GCM is capped near 2 GiB a message in `cryptography` (and checkpoints grow past
that), so a stream is cut into chunks of 1 MiB of plaintext, each sealed on its own:

    stream  = header (loomos.security.crypto.header) || record 0 || record 1 || ... || record N
    record  = sealed_len (u32, big-endian) || flags (u8) || sealed (sealed_len bytes)
    sealed  = AEAD(chunk key, nonce, body, aad)            (the body as is when algorithm is none)
    nonce   = chunk index (11 bytes, big-endian) || last (1 byte: 1 for record N, else 0)
    aad     = flags || file id
    body    = the chunk's plaintext, or its zstd frame when flags bit 0 is set

Every chunk but the last holds exactly chunk_size bytes of plaintext; the last holds 0..chunk_size
(0 only for an empty file). What each part buys:

- the index in the nonce: a chunk moved, dropped or repeated does not open at its new place;
- the last flag: a stream cut at a chunk boundary has no chunk sealed as last (truncation);
- the file id in the aad (and the header tag): a genuine file presented under another name
  (ckpt-20 as ckpt-30, another job's checkpoint) does not open;
- the per-file key (random salt): nonces never repeat under a key, and a header moved onto
  another file's chunks opens nothing.

Compression (zstd, level 1) is tried chunk by chunk and kept only when it saves at least an
eighth: first on a 48 KiB sample of the chunk, then on the chunk if the sample pays; after a
chunk where it did not pay, the next 1, 3, 7, ... 63 chunks are not tried, so incompressible data
(random weights) costs almost nothing. The flag is authenticated (aad).
Compressing before encrypting lets chunk lengths reveal how compressible the data is; that is
the price of the feature, as everywhere.

A writer seals each record in place into a reused buffer and writes it with one call. A reader
over a seekable source indexes the records at open (reading 5 bytes a chunk), authenticates the
last chunk at once (a truncated file fails at open), and then decrypts chunks on demand:
torch.load needs random access.

Modules: header (the header, per-file keys), chunks (records, nonces), writer
(EncryptingWriter), reader (DecryptingReader); this one holds the file-to-file functions.
"""

from __future__ import annotations

from typing import Any, BinaryIO

from loomos.security.crypto.chunks import RECORD, StreamInfo
from loomos.security.crypto.header import DEFAULT_CHUNK_SHIFT, MAGIC
from loomos.security.crypto.reader import DecryptingReader
from loomos.security.crypto.settings import Classification
from loomos.security.crypto.writer import EncryptingWriter

__all__ = [
    "RECORD",
    "DecryptingReader",
    "EncryptingWriter",
    "StreamInfo",
    "decrypt_stream",
    "encrypt_stream",
    "is_encrypted_stream",
]


def is_encrypted_stream(head: bytes) -> bool:
    """Whether bytes start a LoomOS encrypted stream (give at least 8 bytes)."""
    return head[: len(MAGIC)] == MAGIC


def encrypt_stream(
    src: BinaryIO,
    dst: BinaryIO,
    provider: Any,
    file_id: str,
    *,
    classification: Classification | str = Classification.CONFIDENTIAL,
    compress: bool = True,
    chunk_shift: int = DEFAULT_CHUNK_SHIFT,
) -> StreamInfo:
    """Seal everything `src` yields into `dst`, a chunk at a time."""
    with EncryptingWriter(
        dst, provider, file_id, classification=classification, compress=compress, chunk_shift=chunk_shift
    ) as out:
        while block := src.read(out.header.chunk_size):
            out.write(block)
    return out.info


def decrypt_stream(src: BinaryIO, dst: BinaryIO, provider: Any, file_id: str) -> StreamInfo:
    """Write the plaintext of `src` to `dst`, a chunk at a time, each authenticated first. On an
    IntegrityError `dst` may hold the chunks before the bad one: write to a temp file and keep
    it only when this returns."""
    reader = DecryptingReader(src, provider, file_id)
    info = StreamInfo(reader.header)
    while block := reader.read(reader.header.chunk_size):
        dst.write(block)
        info.plaintext_bytes += len(block)
    reader.verify_unread()
    return info
