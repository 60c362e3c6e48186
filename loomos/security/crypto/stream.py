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
"""

from __future__ import annotations

import io
import queue
import struct
import threading
from array import array
from dataclasses import dataclass, field
from typing import Any, BinaryIO

from loomos.security.crypto.algorithms import TAG_BYTES, Algorithm, aead, algorithm_for
from loomos.security.crypto.errors import IntegrityError
from loomos.security.crypto.header import (
    DEFAULT_CHUNK_SHIFT,
    MAGIC,
    Compression,
    FileKeys,
    Header,
    check_header_tag,
    derive_keys,
    read_header,
    write_header,
)
from loomos.security.crypto.settings import Classification

RECORD = struct.Struct(">IB")
FLAG_ZSTD = 0x01
ZSTD_LEVEL = 1
_WRITE_QUEUE_DEPTH = 4
_MAX_SKIP = 63
_SAMPLE = 16 * 1024


def is_encrypted_stream(head: bytes) -> bool:
    """Whether bytes start a LoomOS encrypted stream (give at least 8 bytes)."""
    return head[: len(MAGIC)] == MAGIC


def chunk_nonce(index: int, last: bool) -> bytes:
    return index.to_bytes(11, "big") + (b"\x01" if last else b"\x00")


@dataclass
class StreamInfo:
    """What a writer or reader saw: for logs, benchmarks and tests."""

    header: Header
    plaintext_bytes: int = 0
    stored_bytes: int = 0
    chunks: int = 0
    compressed_chunks: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


def _secret_for(provider: Any, key_id: str, file_id: bytes) -> bytes:
    if provider is None:
        from loomos.security.crypto.errors import KeyUnavailable

        raise KeyUnavailable(
            f"file id {file_id.decode(errors='replace')!r} is sealed under key {key_id!r}, "
            "and no key provider was given"
        )
    return provider.secret(key_id, context=f"file id {file_id.decode(errors='replace')!r}")


class EncryptingWriter(io.RawIOBase):
    """A write-only file object that seals what is written to it into `dst` (any object with
    write()). close() seals the last chunk; it does not close `dst`. torch.save writes into it.

        with EncryptingWriter(fh, provider, file_id="job-1/ckpt-00000020.pt") as out:
            torch.save(state, out)

    Each record is sealed in place (encrypt_into) into a reused buffer, prefix included, and
    written with one write() call: no allocation and no extra copy per chunk, so sealing costs
    the AEAD pass and little else. `pipelined` hands the records to a writer thread instead
    (measured on the 2-core machines it does not pay: the AEAD and the kernel's copy into the
    page cache compete for the same memory bandwidth; see benchmarks/security.py).
    """

    def __init__(
        self,
        dst: BinaryIO,
        provider: Any,
        file_id: str,
        *,
        classification: Classification | str = Classification.CONFIDENTIAL,
        compress: bool = True,
        chunk_shift: int = DEFAULT_CHUNK_SHIFT,
        pipelined: bool = False,
    ) -> None:
        super().__init__()
        algorithm = algorithm_for(classification)
        self._file_id = file_id.encode()
        key_id, secret = provider.current() if algorithm != Algorithm.NONE else ("", b"")
        compression = Compression.ZSTD if compress else Compression.NONE
        self.header = Header.new(algorithm, key_id, compression, chunk_shift)
        keys = derive_keys(secret, self.header) if self.header.encrypted else None
        self._aead = aead(algorithm, keys.chunk_key) if keys else None
        self._tag = TAG_BYTES if self._aead is not None else 0
        self._aad = (b"\x00" + self._file_id, bytes([FLAG_ZSTD]) + self._file_id)
        self._zstd: Any = None
        if compress:
            import zstandard

            self._zstd = zstandard.ZstdCompressor(level=ZSTD_LEVEL)
        self._chunk = self.header.chunk_size
        self._pending = bytearray(self._chunk)  # plaintext not sealed yet
        self._fill = 0
        self._index = 0
        self._skip = self._misses = 0
        self._dst = dst
        self.info = StreamInfo(self.header)
        self._error: BaseException | None = None
        record_size = RECORD.size + self._chunk + self._tag
        self._free: queue.SimpleQueue[bytearray] = queue.SimpleQueue()
        self._queue: queue.Queue[tuple[bytearray, int] | None] | None = None
        self._thread: threading.Thread | None = None
        for _ in range(_WRITE_QUEUE_DEPTH + 2 if pipelined else 1):
            self._free.put(bytearray(record_size))
        if pipelined:
            self._queue = queue.Queue(_WRITE_QUEUE_DEPTH)
            self._thread = threading.Thread(target=self._write_loop, name="loomos-seal-writer", daemon=True)
            self._thread.start()
        self.info.stored_bytes = write_header(dst, self.header, keys, self._file_id)

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        if self.closed:
            raise ValueError("write to a closed EncryptingWriter")
        view = memoryview(data).cast("B")
        size, pos, chunk = len(view), 0, self._chunk
        while pos < size:
            if self._fill == chunk:  # more is coming, so the buffered chunk is not the last
                self._seal(memoryview(self._pending), last=False)
                self._fill = 0
            if not self._fill and size - pos > chunk:
                # Whole chunks straight from the caller's buffer (sealed before we return), always
                # keeping one byte back: only close() knows which chunk is the last.
                self._seal(view[pos : pos + chunk], last=False)
                pos += chunk
                continue
            take = min(chunk - self._fill, size - pos)
            self._pending[self._fill : self._fill + take] = view[pos : pos + take]
            self._fill += take
            pos += take
        self.info.plaintext_bytes += size
        return size

    def _try_compress(self) -> bool:
        if self._skip:
            self._skip -= 1
            return False
        return True

    def _sample_pays(self, chunk: memoryview) -> bool:
        """Whether 3 slices of 16 KiB (start, middle, end) compress by an eighth: a 1/21 of the
        cost of compressing a 1 MiB chunk that then does not pay (random weights never do)."""
        if len(chunk) <= 4 * _SAMPLE:
            return True
        mid = len(chunk) // 2
        sample = b"".join((chunk[:_SAMPLE], chunk[mid : mid + _SAMPLE], chunk[-_SAMPLE:]))
        if len(self._zstd.compress(sample)) <= len(sample) - len(sample) // 8:
            return True
        self._misses += 1
        self._skip = min((1 << self._misses) - 1, _MAX_SKIP)
        return False

    def _seal(self, chunk: memoryview, last: bool) -> None:
        if self._error is not None:
            raise self._error
        flags, body = 0, chunk
        if self._zstd is not None and len(chunk) and self._try_compress() and self._sample_pays(chunk):
            packed = self._zstd.compress(chunk)
            if len(packed) <= len(chunk) - len(chunk) // 8:
                flags, body = FLAG_ZSTD, packed
                self._misses = 0
                self.info.compressed_chunks += 1
            else:
                self._misses += 1
                self._skip = min((1 << self._misses) - 1, _MAX_SKIP)
        sealed_len = len(body) + self._tag
        record = self._free.get()
        RECORD.pack_into(record, 0, sealed_len, flags)
        out = memoryview(record)[RECORD.size : RECORD.size + sealed_len]
        if self._aead is not None:
            self._aead.encrypt_into(chunk_nonce(self._index, last), body, self._aad[flags], out)
        else:
            out[:] = body
        self._index += 1
        self.info.chunks += 1
        length = RECORD.size + sealed_len
        self.info.stored_bytes += length
        if self._queue is not None:
            self._queue.put((record, length))
        else:
            try:
                self._dst.write(memoryview(record)[:length])
            finally:
                self._free.put(record)

    def _write_loop(self) -> None:
        assert self._queue is not None
        while True:
            item = self._queue.get()
            if item is None:
                return
            record, length = item
            if self._error is None:
                try:
                    self._dst.write(memoryview(record)[:length])
                except BaseException as exc:  # reported to the caller on its next write or close
                    self._error = exc
            self._free.put(record)

    def close(self) -> None:
        """Seal the last chunk and wait for every record to reach `dst` (not closed here)."""
        if self.closed:
            return
        try:
            self._seal(memoryview(self._pending)[: self._fill], last=True)
            self._fill = 0
        finally:
            if self._queue is not None and self._thread is not None:
                self._queue.put(None)
                self._thread.join()
            super().close()
        if self._error is not None:
            raise self._error

    def abort(self) -> None:
        """Stop without sealing a last chunk (what is in `dst` is then not a valid stream)."""
        if self._queue is not None and self._thread is not None and self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()
        super().close()

    def __exit__(self, kind: Any, exc: Any, tb: Any) -> None:
        if kind is not None:
            self.abort()
        else:
            self.close()


class DecryptingReader(io.RawIOBase):
    """A read-only file object of a stream's plaintext; every chunk is authenticated before a
    byte of it is returned. Seekable when `src` is (torch.load needs that), sequential else.
    IntegrityError for anything that is not exactly what was sealed for `file_id`."""

    def __init__(self, src: BinaryIO, provider: Any, file_id: str) -> None:
        super().__init__()
        self._src = src
        self._file_id = file_id.encode()
        self.header, tag = read_header(src)
        self._aead: Any = None
        if self.header.encrypted:
            secret = _secret_for(provider, self.header.key_id, self._file_id)
            keys: FileKeys = derive_keys(secret, self.header)
            check_header_tag(keys, self.header, tag, self._file_id)
            self._aead = aead(self.header.algorithm, keys.chunk_key)
        self._aad = (b"\x00" + self._file_id, bytes([FLAG_ZSTD]) + self._file_id)
        self._chunk_size = self.header.chunk_size
        self._max_sealed = self._chunk_size + (TAG_BYTES if self.header.encrypted else 0)
        self._zstd: Any = None
        self._pos = 0
        self._current: tuple[int, bytes] | None = None  # (index, plaintext)
        self._seekable = _is_seekable(src)
        if self._seekable:
            self._index_records()
        else:
            self._lookahead = self._read_prefix(0)
            self._next_index = 0
            self._current_start = 0
            self._ended = False

    # --- records ------------------------------------------------------------------------------

    def _read_prefix(self, index: int) -> tuple[int, int] | None:
        raw = self._src.read(RECORD.size)
        if not raw:
            return None
        while len(raw) < RECORD.size:
            more = self._src.read(RECORD.size - len(raw))
            if not more:
                raise IntegrityError(f"truncated: the stream ends inside the record of chunk {index}")
            raw += more
        sealed_len, flags = RECORD.unpack(raw)
        if sealed_len > self._max_sealed or flags & ~FLAG_ZSTD:
            raise IntegrityError(f"chunk {index}: record header is not valid (altered or not a chunk)")
        return sealed_len, flags

    def _read_sealed(self, index: int, length: int) -> bytes:
        data = self._src.read(length)
        while len(data) < length:
            more = self._src.read(length - len(data))
            if not more:
                raise IntegrityError(f"truncated: the stream ends inside chunk {index}")
            data += more
        return data

    def _open(self, index: int, flags: int, sealed: bytes, last: bool) -> bytes:
        body = sealed
        if self._aead is not None:
            from cryptography.exceptions import InvalidTag

            try:
                body = self._aead.decrypt(chunk_nonce(index, last), sealed, self._aad[flags])
            except InvalidTag:
                if last and self._opens_as(index, flags, sealed, last=False):
                    raise IntegrityError(
                        f"truncated: the stream ends after chunk {index}, which was not sealed as its last"
                    ) from None
                raise IntegrityError(
                    f"chunk {index} does not authenticate: altered, moved, repeated, or from another file"
                ) from None
        if flags & FLAG_ZSTD:
            body = self._decompress(index, body)
        if len(body) > self._chunk_size or (not last and len(body) != self._chunk_size):
            raise IntegrityError(f"chunk {index} holds {len(body)} bytes; chunks hold {self._chunk_size}")
        if last and not body and index:
            raise IntegrityError(f"chunk {index}: an empty last chunk after others")
        return body

    def _opens_as(self, index: int, flags: int, sealed: bytes, last: bool) -> bool:
        from cryptography.exceptions import InvalidTag

        try:
            self._aead.decrypt(chunk_nonce(index, last), sealed, self._aad[flags])
        except InvalidTag:
            return False
        return True

    def _decompress(self, index: int, body: bytes) -> bytes:
        if self.header.compression != Compression.ZSTD:
            raise IntegrityError(f"chunk {index} is compressed, the header says no compression")
        if self._zstd is None:
            import zstandard

            self._zstd = zstandard.ZstdDecompressor()
        try:
            return self._zstd.decompress(body, max_output_size=self._chunk_size)
        except Exception as exc:  # zstandard.ZstdError
            raise IntegrityError(f"chunk {index} does not decompress: {exc}") from None

    # --- seekable sources: an index of the records --------------------------------------------

    def _index_records(self) -> None:
        self._offsets = array("q")
        self._flags = bytearray()
        self._lengths = array("q")
        index = 0
        while True:
            at = self._src.tell()
            prefix = self._read_prefix(index)
            if prefix is None:
                break
            self._offsets.append(at + RECORD.size)
            self._lengths.append(prefix[0])
            self._flags.append(prefix[1])
            self._src.seek(prefix[0], io.SEEK_CUR)  # past the end of a truncated file: caught below
            index += 1
        self._src.seek(0, io.SEEK_END)
        if index == 0:
            raise IntegrityError("truncated: the stream has a header and no chunk")
        if self._offsets[-1] + self._lengths[-1] > self._src.tell():
            raise IntegrityError(f"truncated: the stream ends inside chunk {index - 1}")
        self._verified = bytearray(index)
        last = self._chunk_at(index - 1)
        self.size = (index - 1) * self._chunk_size + len(last)

    def _chunk_at(self, index: int) -> bytes:
        if self._current is not None and self._current[0] == index:
            return self._current[1]
        self._src.seek(self._offsets[index])
        sealed = self._read_sealed(index, self._lengths[index])
        plain = self._open(index, self._flags[index], sealed, last=index == len(self._offsets) - 1)
        self._verified[index] = 1
        self._current = (index, plain)
        return plain

    def verify_unread(self) -> None:
        """Authenticate every chunk not read yet (a seekable reader only opens what is read)."""
        if not self._seekable:
            while self._next_sequential() is not None:
                pass
            return
        for index, done in enumerate(self._verified):
            if not done:
                self._chunk_at(index)

    # --- sequential sources ---------------------------------------------------------------------

    def _next_sequential(self) -> bytes | None:
        if self._ended:
            return None
        index = self._next_index
        if self._lookahead is None:
            if index == 0:
                raise IntegrityError("truncated: the stream has a header and no chunk")
            self._ended = True
            return None
        sealed_len, flags = self._lookahead
        sealed = self._read_sealed(index, sealed_len)
        self._lookahead = self._read_prefix(index + 1)
        last = self._lookahead is None
        plain = self._open(index, flags, sealed, last)
        self._next_index += 1
        self._ended = last
        return plain

    # --- the file object ------------------------------------------------------------------------

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return self._seekable

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if not self._seekable:
            raise io.UnsupportedOperation("the encrypted source is not seekable")
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self.size}[whence]
        if base + offset < 0:
            raise ValueError("negative seek position")
        self._pos = base + offset
        return self._pos

    def readinto(self, buffer: Any) -> int:
        """Fill `buffer` across chunks until it is full or the stream ends (torch's zip reader
        takes a short read for a broken file, so reads are never short before the end)."""
        view = memoryview(buffer).cast("B")
        done = 0
        while done < len(view):
            n = self._read_some(view[done:])
            if not n:
                break
            done += n
        return done

    def _read_some(self, view: memoryview) -> int:
        if self._seekable:
            if self._pos >= self.size or not len(view):
                return 0
            index, within = divmod(self._pos, self._chunk_size)
            plain = self._chunk_at(index)
        else:
            if self._current is None or self._pos - self._current_start >= len(self._current[1]):
                start = self._pos
                chunk = self._next_sequential()
                if chunk is None:
                    return 0
                self._current, self._current_start = (self._next_index - 1, chunk), start
            plain, within = self._current[1], self._pos - self._current_start
        n = min(len(view), len(plain) - within)
        view[:n] = plain[within : within + n]
        self._pos += n
        return n

    def readall(self) -> bytes:
        out = bytearray()
        while chunk := self.read(self._chunk_size):
            out += chunk
        return bytes(out)


def _is_seekable(src: Any) -> bool:
    try:
        return bool(src.seekable())
    except (AttributeError, ValueError, OSError):
        return False


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
