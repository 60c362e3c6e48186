"""The writing half of the streaming format (loomos.security.crypto.stream): EncryptingWriter."""

from __future__ import annotations

import io
import queue
import threading
from typing import Any, BinaryIO

from loomos.security.crypto.algorithms import TAG_BYTES, Algorithm, aead, algorithm_for
from loomos.security.crypto.chunks import FLAG_ZSTD, RECORD, ZSTD_LEVEL, StreamInfo, chunk_nonce
from loomos.security.crypto.header import DEFAULT_CHUNK_SHIFT, Compression, Header, derive_keys, write_header
from loomos.security.crypto.settings import Classification

_WRITE_QUEUE_DEPTH = 4
_MAX_SKIP = 63
_SAMPLE = 16 * 1024


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
