"""The header of a LoomOS encrypted stream (format version 1) and the per-file keys it names.

A stream is this header, then chunk records (loomos.security.crypto.stream). All integers are
big-endian.

    offset  size  field
    0       8     magic        89 4C 4F 4F 4D 45 4E 43  ("\\x89LOOMENC": the high byte catches
                               7-bit transfers, and no text file starts with it)
    8       1     version      1
    9       1     algorithm    0 none (public data), 1 AES-256-GCM, 2 ChaCha20-Poly1305
    10      1     compression  0 none, 1 zstd (chunks compressed one by one, when it pays)
    11      1     chunk_shift  log2 of the plaintext chunk size (20: 1 MiB), 12..26
    12      32    salt         random per file (HKDF salt); zeros when algorithm is none
    44      1     key_id_len   n, 0..64 (0 when algorithm is none)
    45      n     key_id       ASCII: the keyring's key this file was sealed under
    45+n    32    header_tag   HMAC-SHA256(header key, bytes 0..45+n || file id); absent for none

Per-file keys: HKDF-SHA256(ikm = the key id's secret, salt = salt, info = "loomos-stream-v1" ||
bytes 0..45+n), 64 bytes: the chunk key (first 32) and the header key (last 32). A fresh random
salt makes every file's key unique, so chunk nonces can be plain counters, and every header
field is bound into the key: a changed algorithm, compression or chunk size decrypts nothing.
The header tag lets a reader say "wrong header or wrong file id" before touching a chunk.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import struct
from dataclasses import dataclass
from typing import BinaryIO

from loomos.security.crypto.algorithms import KEY_BYTES, Algorithm
from loomos.security.crypto.errors import FormatError, IntegrityError

MAGIC = b"\x89LOOMENC"
VERSION = 1
SALT_BYTES = 32
TAG_BYTES = 32
MAX_KEY_ID = 64
DEFAULT_CHUNK_SHIFT = 20  # 1 MiB
MIN_CHUNK_SHIFT, MAX_CHUNK_SHIFT = 12, 26
_FIXED = struct.Struct(">8sBBBB32sB")  # magic .. key_id_len: 45 bytes
HKDF_INFO = b"loomos-stream-v1"


class Compression:
    NONE = 0
    ZSTD = 1
    LABELS = {0: "none", 1: "zstd"}


@dataclass(frozen=True)
class Header:
    algorithm: Algorithm
    compression: int
    chunk_shift: int
    salt: bytes
    key_id: str

    @property
    def chunk_size(self) -> int:
        return 1 << self.chunk_shift

    @property
    def encrypted(self) -> bool:
        return self.algorithm != Algorithm.NONE

    def body(self) -> bytes:
        """Bytes 0..45+n: what the key derivation and the header tag cover."""
        key_id = self.key_id.encode("ascii")
        fixed = _FIXED.pack(
            MAGIC, VERSION, int(self.algorithm), self.compression, self.chunk_shift, self.salt, len(key_id)
        )
        return fixed + key_id

    @classmethod
    def new(cls, algorithm: Algorithm, key_id: str, compression: int, chunk_shift: int) -> Header:
        if not MIN_CHUNK_SHIFT <= chunk_shift <= MAX_CHUNK_SHIFT:
            raise ValueError(f"chunk_shift must be in [{MIN_CHUNK_SHIFT}, {MAX_CHUNK_SHIFT}]")
        if algorithm == Algorithm.NONE:
            return cls(algorithm, compression, chunk_shift, bytes(SALT_BYTES), "")
        if not key_id or len(key_id) > MAX_KEY_ID or not key_id.isascii():
            raise ValueError(f"key id {key_id!r}: 1..{MAX_KEY_ID} ASCII characters")
        return cls(algorithm, compression, chunk_shift, os.urandom(SALT_BYTES), key_id)


@dataclass(frozen=True)
class FileKeys:
    chunk_key: bytes
    header_key: bytes


def derive_keys(secret: bytes, header: Header) -> FileKeys:
    """The per-file chunk key and header key (see the module's docstring)."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    okm = HKDF(
        algorithm=hashes.SHA256(), length=2 * KEY_BYTES, salt=header.salt, info=HKDF_INFO + header.body()
    ).derive(secret)
    return FileKeys(okm[:KEY_BYTES], okm[KEY_BYTES:])


def header_tag(keys: FileKeys, header: Header, file_id: bytes) -> bytes:
    return hmac.new(keys.header_key, header.body() + file_id, hashlib.sha256).digest()


def write_header(dst: BinaryIO, header: Header, keys: FileKeys | None, file_id: bytes) -> int:
    """Write the header (with its tag when encrypted); returns its length."""
    data = header.body()
    if header.encrypted:
        assert keys is not None
        data += header_tag(keys, header, file_id)
    dst.write(data)
    return len(data)


def _read_exactly(src: BinaryIO, n: int, what: str) -> bytes:
    data = b""
    while len(data) < n:
        got = src.read(n - len(data))
        if not got:
            raise FormatError(f"truncated header: {what} ends after {len(data)} of {n} bytes")
        data += got
    return data


def read_header(src: BinaryIO) -> tuple[Header, bytes]:
    """The header and its tag (b"" when not encrypted). Checks the format, not the tag."""
    fixed = src.read(_FIXED.size)
    if len(fixed) < len(MAGIC) or fixed[: len(MAGIC)] != MAGIC:
        raise FormatError("not a LoomOS encrypted stream (no \\x89LOOMENC magic)")
    if len(fixed) < _FIXED.size:
        fixed += _read_exactly(src, _FIXED.size - len(fixed), "fixed header")
    magic, version, algorithm, compression, shift, salt, key_id_len = _FIXED.unpack(fixed)
    if version != VERSION:
        raise FormatError(f"format version {version} is not one this LoomOS reads (it reads {VERSION})")
    try:
        alg = Algorithm(algorithm)
    except ValueError:
        raise FormatError(f"unknown algorithm code {algorithm}") from None
    if compression not in Compression.LABELS:
        raise FormatError(f"unknown compression code {compression}")
    if not MIN_CHUNK_SHIFT <= shift <= MAX_CHUNK_SHIFT:
        raise FormatError(f"chunk_shift {shift} is out of range")
    if key_id_len > MAX_KEY_ID or (alg == Algorithm.NONE) != (key_id_len == 0):
        raise FormatError(f"key id length {key_id_len} does not fit algorithm {alg.label}")
    raw_id = _read_exactly(src, key_id_len, "key id")
    try:
        key_id = raw_id.decode("ascii")
    except UnicodeDecodeError:
        raise FormatError("the key id is not ASCII") from None
    header = Header(alg, compression, shift, salt, key_id)
    tag = _read_exactly(src, TAG_BYTES, "header tag") if header.encrypted else b""
    return header, tag


def check_header_tag(keys: FileKeys, header: Header, tag: bytes, file_id: bytes) -> None:
    if not hmac.compare_digest(header_tag(keys, header, file_id), tag):
        raise IntegrityError(
            f"the header does not authenticate for file id {file_id.decode(errors='replace')!r}: the header "
            "was altered or comes from another file, the file id is not the one it was written for, or the "
            f"key {header.key_id!r} is not the one that sealed it"
        )
