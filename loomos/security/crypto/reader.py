"""The reading half of the streaming format (loomos.security.crypto.stream): DecryptingReader."""

from __future__ import annotations

import io
from array import array
from typing import Any, BinaryIO

from loomos.security.crypto.algorithms import TAG_BYTES, aead
from loomos.security.crypto.chunks import FLAG_ZSTD, RECORD, chunk_nonce, secret_for
from loomos.security.crypto.errors import IntegrityError
from loomos.security.crypto.header import Compression, FileKeys, check_header_tag, derive_keys, read_header


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
            secret = secret_for(provider, self.header.key_id, self._file_id)
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
