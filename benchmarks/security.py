"""Security benchmark: what encryption at rest costs a checkpoint write.

`checkpoint_encrypt_ratio`: throughput of sealing and fsync-writing a realistic checkpoint file
(a torch.save of random float32 tensors: 256 MiB, 64 MiB with --quick) through LoomOS's
streaming format (loomos.security.crypto.stream: AES-256-GCM for confidential data, zstd tried
per chunk, as checkpoints are written) as a ratio of a plain fsync'd write of the same bytes,
measured in the same run. Rounds alternate plain and sealed writes; the figure is the median of
the per-round ratios (shared machines drift, a ratio within a round does not). Goal >= 0.85.

Also reported: `torch_save_ratio` (torch.save straight into the sealing writer vs into a plain
file, both fsync'd: what a training script sees), MB/s of each algorithm with and without
compression (write + fsync) and of reading back (decrypt), and a compressible checkpoint's
stored size with zstd. Other security figures may be added as their own sections.

Prints one JSON object on its last line. `--quick` keeps it under a minute on 2 cores.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from loomos.security.crypto.keys import KeyProvider, open_key_provider  # noqa: E402
from loomos.security.crypto.stream import DecryptingReader, EncryptingWriter  # noqa: E402

MiB = 1 << 20
WRITE_BLOCK = 4 * MiB  # what a plain buffered writer hands the kernel at a time


def checkpoint_bytes(size_mib: int, compressible: bool = False) -> bytes:
    """torch.save of a model-like state: tensors of 4 MiB (random weights), or small ints."""
    torch.manual_seed(0)
    count = max(1, size_mib // 4)
    if compressible:
        state = {f"layer{i}.mask": torch.randint(0, 3, (MiB // 2,), dtype=torch.int64) for i in range(count)}
    else:
        state = {f"layer{i}.weight": torch.randn(MiB) for i in range(count)}
    buf = io.BytesIO()
    torch.save({"model": state, "step": 1000}, buf)
    return buf.getvalue()


def fsynced(path: Path, write: Callable[[Any], None]) -> float:
    """Seconds to write `path` with `write(fh)` and fsync it (file deleted first: no overwrite)."""
    path.unlink(missing_ok=True)
    start = time.perf_counter()
    with open(path, "wb") as fh:
        write(fh)
        fh.flush()
        os.fsync(fh.fileno())
    return time.perf_counter() - start


def plain_write(data: bytes) -> Callable[[Any], None]:
    def write(fh: Any) -> None:
        view = memoryview(data)
        for at in range(0, len(data), WRITE_BLOCK):
            fh.write(view[at : at + WRITE_BLOCK])

    return write


def sealed_write(
    data: bytes,
    provider: KeyProvider,
    classification: str = "confidential",
    compress: bool = True,
    pipelined: bool = False,
) -> Callable[[Any], None]:
    def write(fh: Any) -> None:
        view = memoryview(data)
        with EncryptingWriter(
            fh,
            provider,
            "bench/ckpt.pt",
            classification=classification,
            compress=compress,
            pipelined=pipelined,
        ) as out:
            for at in range(0, len(data), WRITE_BLOCK):
                out.write(view[at : at + WRITE_BLOCK])

    return write


def mb_s(nbytes: int, seconds: float) -> float:
    return round(nbytes / seconds / 1e6, 1)


def aes_ni() -> bool | None:
    try:
        flags = next(
            line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags")
        )
    except (OSError, StopIteration):
        return None
    return " aes " in f" {flags.split(':', 1)[1]} "


def run(size_mib: int, rounds: int, reps: int, folder: Path) -> dict[str, Any]:
    provider = open_key_provider("local", folder / "keyring.json")
    provider.rotate()
    data = checkpoint_bytes(size_mib)
    n = len(data)
    plain_path, sealed_path = folder / "plain.pt", folder / "sealed.pt"

    # Warm-up: the page cache, the allocator, the first file's extents.
    fsynced(plain_path, plain_write(data))
    fsynced(sealed_path, sealed_write(data, provider))

    # Each round writes the same bytes plainly, sealed, and sealed through the writer thread, in
    # a rotating order; ratios are taken within the round.
    variants = {
        "plain": (plain_path, plain_write(data)),
        "sealed": (sealed_path, sealed_write(data, provider)),
        "pipelined": (folder / "pipelined.pt", sealed_write(data, provider, pipelined=True)),
    }
    names = list(variants)
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        for name in names[r % 3 :] + names[: r % 3]:
            path, write = variants[name]
            times[name].append(fsynced(path, write))
    variants["pipelined"][0].unlink(missing_ok=True)
    ratios = [p / s for p, s in zip(times["plain"], times["sealed"], strict=True)]
    piped = [p / s for p, s in zip(times["plain"], times["pipelined"], strict=True)]

    state = torch.load(io.BytesIO(data), weights_only=True)
    save_ratios = []
    for _ in range(max(2, rounds // 2)):
        t_plain = fsynced(plain_path, lambda fh: torch.save(state, fh))
        t_sealed = fsynced(sealed_path, lambda fh: _torch_save_sealed(fh, state, provider))
        save_ratios.append(t_plain / t_sealed)

    algorithms: dict[str, dict[str, float]] = {}
    for classification, label in (("confidential", "AES-256-GCM"), ("restricted", "ChaCha20-Poly1305")):
        figures: dict[str, float] = {}
        for compress in (False, True):
            best = min(
                fsynced(sealed_path, sealed_write(data, provider, classification, compress))
                for _ in range(reps)
            )
            figures["write_zstd_mb_s" if compress else "write_mb_s"] = mb_s(n, best)
        read_best = float("inf")
        for _ in range(reps):
            start = time.perf_counter()
            with open(sealed_path, "rb") as fh:
                reader = DecryptingReader(fh, provider, "bench/ckpt.pt")
                while reader.read(4 * MiB):
                    pass
            read_best = min(read_best, time.perf_counter() - start)
        figures["read_mb_s"] = mb_s(n, read_best)
        algorithms[label] = figures

    squeezable = checkpoint_bytes(max(16, size_mib // 4), compressible=True)
    out = io.BytesIO()
    start = time.perf_counter()
    with EncryptingWriter(out, provider, "bench/masks.pt") as w:
        w.write(squeezable)
    compress_s = time.perf_counter() - start

    return {
        "checkpoint_mib": round(n / MiB, 1),
        "checkpoint_encrypt_ratio": round(statistics.median(ratios), 3),
        "ratio_rounds": [round(x, 3) for x in ratios],
        "plain_write_mb_s": mb_s(n, statistics.median(times["plain"])),
        "sealed_write_mb_s": mb_s(n, statistics.median(times["sealed"])),
        "pipelined_ratio": round(statistics.median(piped), 3),
        "torch_save_ratio": round(statistics.median(save_ratios), 3),
        "algorithms": algorithms,
        "compressible_checkpoint": {
            "mib": round(len(squeezable) / MiB, 1),
            "stored_fraction": round(len(out.getvalue()) / len(squeezable), 3),
            "seal_mb_s": mb_s(len(squeezable), compress_s),
        },
        "aes_ni": aes_ni(),
        "cpus": os.cpu_count(),
    }


def _torch_save_sealed(fh: Any, state: Any, provider: KeyProvider) -> None:
    with EncryptingWriter(fh, provider, "bench/ckpt.pt") as out:
        torch.save(state, out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="64 MiB checkpoint, fewer rounds")
    parser.add_argument("--size-mib", type=int, default=None)
    parser.add_argument("--dir", default=None, help="where the files are written (default: a temp folder)")
    args = parser.parse_args()
    size = args.size_mib or (64 if args.quick else 256)
    rounds, reps = (11, 2) if args.quick else (11, 3)
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="loomos-bench-security-") as folder:
        figures = run(size, rounds, reps, Path(folder))
    figures["quick"] = args.quick
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
