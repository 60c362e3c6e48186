"""The streaming file format (loomos.security.crypto.stream, .header): round trips of every
size around the chunk boundaries, each classification's algorithm, compression when it pays,
and every way a stored file can be altered, each detected."""

from __future__ import annotations

import io
import os
import struct
import tracemalloc
from pathlib import Path

import pytest

from loomos.security.crypto.algorithms import Algorithm
from loomos.security.crypto.errors import FormatError, IntegrityError, KeyUnavailable, UnknownKeyId
from loomos.security.crypto.header import MAGIC, Compression, read_header
from loomos.security.crypto.stream import (
    RECORD,
    DecryptingReader,
    EncryptingWriter,
    decrypt_stream,
    encrypt_stream,
)

SMALL = 12  # 4 KiB chunks: many chunks from little data
CHUNK = 1 << SMALL


class Sequential(io.RawIOBase):
    """A source that cannot seek (a pipe, an S3 stream): the reader's sequential path."""

    def __init__(self, data: bytes) -> None:
        self._inner = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # type: ignore[no-untyped-def]
        got = self._inner.read(min(len(buffer), 1000))  # short reads, as pipes give
        buffer[: len(got)] = got
        return len(got)


def seal(data: bytes, provider, file_id: str = "f", **options) -> bytes:  # type: ignore[no-untyped-def]
    options.setdefault("chunk_shift", SMALL)
    out = io.BytesIO()
    encrypt_stream(io.BytesIO(data), out, provider, file_id, **options)
    return out.getvalue()


def open_all(stored: bytes, provider, file_id: str = "f", seekable: bool = True) -> bytes:  # type: ignore[no-untyped-def]
    src = io.BytesIO(stored) if seekable else Sequential(stored)
    out = io.BytesIO()
    decrypt_stream(src, out, provider, file_id)  # type: ignore[arg-type]
    return out.getvalue()


def records(stored: bytes) -> tuple[int, list[tuple[int, int]]]:
    """(header length, [(start, end) of each record])."""
    header, _ = read_header(io.BytesIO(stored))
    pos = len(header.body()) + 32
    spans = []
    while pos < len(stored):
        length, _flags = RECORD.unpack_from(stored, pos)
        spans.append((pos, pos + RECORD.size + length))
        pos += RECORD.size + length
    return spans[0][0], spans


@pytest.mark.parametrize("size", [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK, 5 * CHUNK + 17])
@pytest.mark.parametrize("seekable", [True, False], ids=["seekable", "sequential"])
def test_round_trip_at_every_chunk_boundary(provider, size: int, seekable: bool) -> None:
    data = os.urandom(size)
    stored = seal(data, provider)
    assert open_all(stored, provider, seekable=seekable) == data
    assert size < 64 or data[:64] not in stored
    _, spans = records(stored)
    assert len(spans) == max(1, -(-size // CHUNK))  # one record per chunk; an empty file has one


def test_random_access_reads_what_was_written(provider) -> None:
    data = os.urandom(7 * CHUNK + 5)
    reader = DecryptingReader(io.BytesIO(seal(data, provider)), provider, "f")
    assert reader.seekable() and reader.size == len(data)
    for at in (0, CHUNK - 3, 4 * CHUNK, len(data) - 2, len(data)):
        reader.seek(at)
        assert reader.read(10) == data[at : at + 10]
    reader.seek(-5, io.SEEK_END)
    assert reader.read() == data[-5:]


@pytest.mark.parametrize(
    ("classification", "algorithm"),
    [
        ("public", Algorithm.NONE),
        ("internal", Algorithm.AES_256_GCM),
        ("confidential", Algorithm.AES_256_GCM),
        ("restricted", Algorithm.CHACHA20_POLY1305),
    ],
)
def test_classification_decides_the_algorithm(provider, classification: str, algorithm: Algorithm) -> None:
    data = b"weights " * 2000
    stored = seal(data, provider, classification=classification, compress=False)
    header, tag = read_header(io.BytesIO(stored))
    assert header.algorithm == algorithm and stored[9] == int(algorithm)
    assert open_all(stored, provider) == data
    if algorithm == Algorithm.NONE:
        assert header.key_id == "" and tag == b"" and data[:CHUNK] in stored  # public: not encrypted
        assert open_all(stored, None) == data  # and needs no key
    else:
        assert header.key_id == provider.current()[0] and len(tag) == 32
        assert b"weights" not in stored


def test_compression_is_kept_only_when_it_pays(provider) -> None:
    text = b"step=000123 loss=0.4711 lr=3e-4\n" * 4000
    stored = seal(text, provider)
    assert len(stored) < len(text) // 5
    header, _ = read_header(io.BytesIO(stored))
    assert header.compression == Compression.ZSTD
    assert open_all(stored, provider) == text

    noise = os.urandom(40 * CHUNK)
    out = io.BytesIO()
    info = encrypt_stream(io.BytesIO(noise), out, provider, "f", chunk_shift=SMALL)
    assert info.compressed_chunks == 0 and info.chunks == 40
    assert len(out.getvalue()) - len(noise) < 40 * (RECORD.size + 16) + 200  # stored raw, no growth
    assert open_all(out.getvalue(), provider) == noise

    for data, compressed in ((os.urandom(6 << 20), 0), (text * 40, 5)):  # 1 MiB chunks: sampled first
        out = io.BytesIO()
        info = encrypt_stream(io.BytesIO(data), out, provider, "f")
        assert info.compressed_chunks == compressed and open_all(out.getvalue(), provider) == data

    mixed = noise[: 8 * CHUNK] + text[: 8 * CHUNK]  # pays later in the file: tried again, kept
    out = io.BytesIO()
    info = encrypt_stream(io.BytesIO(mixed), out, provider, "f", chunk_shift=SMALL)
    assert 0 < info.compressed_chunks < 8
    assert open_all(out.getvalue(), provider) == mixed


# --- tampering: each is detected -----------------------------------------------------------------


@pytest.fixture
def sealed(provider) -> tuple[bytes, bytes]:
    data = os.urandom(4 * CHUNK + 100)
    return data, seal(data, provider)


@pytest.mark.parametrize("seekable", [True, False], ids=["seekable", "sequential"])
def test_truncation_is_detected_wherever_the_file_is_cut(provider, sealed, seekable: bool) -> None:
    _, stored = sealed
    header_end, spans = records(stored)
    cuts = {header_end, len(stored) - 1, spans[1][0] + 3, spans[2][0] + 100, 20}
    cuts |= {start for start, _ in spans[1:]}  # at chunk boundaries: only the last flag tells
    for cut in sorted(cuts):
        with pytest.raises(IntegrityError, match="truncated"):
            open_all(stored[:cut], provider, seekable=seekable)


def test_a_cut_at_a_chunk_boundary_says_which_chunk_was_not_last(provider, sealed) -> None:
    _, stored = sealed
    _, spans = records(stored)
    with pytest.raises(IntegrityError, match="ends after chunk 2, which was not sealed as its last"):
        open_all(stored[: spans[3][0]], provider)


@pytest.mark.parametrize("seekable", [True, False], ids=["seekable", "sequential"])
def test_reordered_chunks_are_detected(provider, sealed, seekable: bool) -> None:
    _, stored = sealed
    header_end, spans = records(stored)
    chunk = [stored[a:b] for a, b in spans]
    swapped = stored[:header_end] + chunk[1] + chunk[0] + b"".join(chunk[2:])
    with pytest.raises(IntegrityError, match="chunk 0 does not authenticate"):
        open_all(swapped, provider, seekable=seekable)


@pytest.mark.parametrize("seekable", [True, False], ids=["seekable", "sequential"])
def test_duplicated_and_dropped_chunks_are_detected(provider, sealed, seekable: bool) -> None:
    _, stored = sealed
    header_end, spans = records(stored)
    chunk = [stored[a:b] for a, b in spans]
    duplicated = stored[:header_end] + chunk[0] + chunk[1] + chunk[1] + b"".join(chunk[2:])
    dropped = stored[:header_end] + chunk[0] + b"".join(chunk[2:])
    for altered in (duplicated, dropped):
        # A seekable reader authenticates the last record first, so it may name that one.
        with pytest.raises(IntegrityError, match=r"chunk \d does not authenticate"):
            open_all(altered, provider, seekable=seekable)
    appended = stored + chunk[1]
    with pytest.raises(IntegrityError):
        open_all(appended, provider, seekable=seekable)


def test_a_flipped_byte_anywhere_is_detected(provider) -> None:
    data = os.urandom(2 * CHUNK + 300)
    stored = seal(data, provider)
    key_id = range(44, 45 + len(provider.current()[0]))  # its length byte, then the id
    for at in range(len(stored)):  # every byte of header, record headers, ciphertext and tags
        altered = bytearray(stored)
        altered[at] ^= 0x01
        # A changed key id names a key the keyring lacks: an operator's problem, said as such.
        with pytest.raises(UnknownKeyId if at in key_id else IntegrityError):
            open_all(bytes(altered), provider)


def test_a_flipped_byte_is_detected_in_compressed_chunks_too(provider) -> None:
    text = b"epoch 1 loss 0.25\n" * 3000
    stored = seal(text, provider)
    for at in range(0, len(stored), 7):
        altered = bytearray(stored)
        altered[at] ^= 0x80
        with pytest.raises(IntegrityError):
            open_all(bytes(altered), provider)


def test_a_header_moved_onto_another_files_chunks_is_detected(provider) -> None:
    a, b = os.urandom(3 * CHUNK), os.urandom(3 * CHUNK)
    stored_a, stored_b = seal(a, provider, "ckpt"), seal(b, provider, "ckpt")
    end_a, _ = records(stored_a)
    end_b, _ = records(stored_b)
    swapped = stored_b[:end_b] + stored_a[end_a:]  # b's genuine header for the same file id
    with pytest.raises(IntegrityError, match=r"chunk \d does not authenticate"):
        open_all(swapped, provider, "ckpt")
    other = seal(b, provider, "other")
    end_o, _ = records(other)
    with pytest.raises(IntegrityError, match="header does not authenticate"):
        open_all(other[:end_o] + stored_a[end_a:], provider, "ckpt")


def test_a_header_field_changed_is_detected(provider, sealed) -> None:
    _, stored = sealed
    for at, value in ((9, 2), (10, 0), (11, 13)):  # algorithm, compression, chunk size
        altered = bytearray(stored)
        altered[at] = value
        with pytest.raises(IntegrityError, match="header does not authenticate"):
            open_all(bytes(altered), provider)


def test_the_wrong_file_id_is_detected(provider, sealed) -> None:
    data, stored = sealed
    assert open_all(stored, provider, "f") == data
    with pytest.raises(IntegrityError, match="for file id 'job-2/ckpt-00000020.pt'"):
        open_all(stored, provider, "job-2/ckpt-00000020.pt")


def test_not_a_stream_and_a_newer_version_are_format_errors(provider, sealed) -> None:
    _, stored = sealed
    with pytest.raises(FormatError, match="not a LoomOS encrypted stream"):
        open_all(b"PK\x03\x04 a plain torch zip", provider)
    newer = bytearray(stored)
    newer[8] = 2
    with pytest.raises(FormatError, match="format version 2"):
        open_all(bytes(newer), provider)
    assert stored.startswith(MAGIC)


def test_an_unknown_key_id_names_the_key_and_the_keyring(provider, sealed, tmp_path: Path) -> None:
    from loomos.security.crypto.keys import open_key_provider

    _, stored = sealed
    other = open_key_provider("local", tmp_path / "other.json")
    other.rotate()
    key_id = provider.current()[0]
    with pytest.raises(UnknownKeyId) as caught:
        open_all(stored, other)
    message = str(caught.value)
    assert key_id in message and str(tmp_path / "other.json") in message and "file id 'f'" in message
    with pytest.raises(KeyUnavailable, match="no key provider"):
        open_all(stored, None)


def test_a_writer_that_fails_leaves_no_valid_stream(provider) -> None:
    out = io.BytesIO()
    with pytest.raises(RuntimeError):
        with EncryptingWriter(out, provider, "f", chunk_shift=SMALL) as w:
            w.write(os.urandom(3 * CHUNK))
            raise RuntimeError("torch.save failed half-way")
    with pytest.raises(IntegrityError, match="truncated"):
        open_all(out.getvalue(), provider)


# --- large files, constant memory --------------------------------------------------------------


def test_a_file_of_many_chunks_streams_in_constant_memory(provider, tmp_path: Path) -> None:
    """48 MiB through 1 MiB chunks, file to file: the writer and reader hold a few chunks,
    never the file (the same code serves files past one-shot AES-GCM's ~2 GiB limit)."""
    size = 48 * (1 << 20) + 12345
    plain, stored, back = tmp_path / "plain.bin", tmp_path / "sealed.bin", tmp_path / "back.bin"
    with open(plain, "wb") as fh:
        for i in range(48):
            fh.write(struct.pack(">Q", i) * (1 << 17))  # distinct chunks (a swap would show)
        fh.write(os.urandom(12345))
    tracemalloc.start()
    try:
        with open(plain, "rb") as src, open(stored, "wb") as dst:
            info = encrypt_stream(src, dst, provider, "big", compress=False)
        _, write_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        with open(stored, "rb") as src, open(back, "wb") as dst:
            decrypt_stream(src, dst, provider, "big")
        _, read_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert info.chunks == 49 and info.plaintext_bytes == size
    assert write_peak < 12 * (1 << 20), f"writer peak {write_peak / 2**20:.1f} MiB"
    assert read_peak < 8 * (1 << 20), f"reader peak {read_peak / 2**20:.1f} MiB"
    assert plain.read_bytes() == back.read_bytes()
