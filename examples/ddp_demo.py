"""LoomOS demo: a tiny character-level transformer learns to add two-digit numbers, with DDP.

Runs on CPUs (gloo) or GPUs (NCCL), under LoomOS, plain `torchrun`, or plain `python`:

    torchrun --standalone --nproc-per-node 2 examples/ddp_demo.py --steps 80

The data ("12+34=46\\n" ...) is generated from (seed, step, rank), so a resumed run sees exactly
the batches it would have seen without the interruption. `--crash-at-step N --crash-rank R`
makes rank R fail at step N, on attempt 1 only, to show recovery from the last checkpoint.
Rank 0 prints `DEMO_RESULT {json}` at the end with the measured throughput.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel as DDP

from loomos import train as loom

VOCAB = "0123456789+=\n"
CHAR_TO_ID = {c: i for i, c in enumerate(VOCAB)}


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def non_negative_float(text: str) -> float:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=positive_int, default=80, help="optimizer steps in total")
    p.add_argument("--batch-size", type=positive_int, default=16, help="sequences per rank per step")
    p.add_argument("--seq-len", type=positive_int, default=48)
    p.add_argument("--d-model", type=positive_int, default=64)
    p.add_argument("--layers", type=positive_int, default=2)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--step-sleep", type=non_negative_float, default=0.0,
                   help="seconds to sleep per step, to imitate a slower model")
    p.add_argument("--print-every", type=positive_int, default=10)
    p.add_argument("--warmup-steps", type=int, default=5,
                   help="steps left out of the samples/s figure (start-up, allocator warm-up)")
    p.add_argument("--crash-at-step", type=positive_int, default=None,
                   help="fail at this step on attempt 1 (LOOMOS_ATTEMPT, 1 outside LoomOS)")
    p.add_argument("--crash-rank", type=int, default=1)
    p.add_argument("--crash-mode", choices=["raise", "exit", "kill"], default="raise",
                   help="raise an exception (exit 1), os._exit(1), or SIGKILL itself")
    args = p.parse_args(argv)
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if args.crash_at_step is not None and not 0 <= args.crash_rank < world_size:
        p.error(f"--crash-rank {args.crash_rank} is not a rank of this run (world size {world_size})")
    if args.warmup_steps < 0:
        p.error("--warmup-steps must be >= 0")
    return args


def make_batch(
    seed: int, step: int, rank: int, batch: int, seq_len: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Next-character prediction over a stream of "a+b=c" lines, deterministic in (seed, step, rank)."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + step * 1_009 + rank)
    rows = []
    for _ in range(batch):
        text = ""
        while len(text) < seq_len + 1:
            a, b = torch.randint(0, 100, (2,), generator=g).tolist()
            text += f"{a}+{b}={a + b}\n"
        start = int(torch.randint(0, len(text) - seq_len, (1,), generator=g))
        rows.append([CHAR_TO_ID[c] for c in text[start : start + seq_len + 1]])
    data = torch.tensor(rows, dtype=torch.long)
    return data[:, :-1], data[:, 1:]


class TinyCharTransformer(nn.Module):
    def __init__(self, vocab: int, d_model: int, layers: int, seq_len: int) -> None:
        super().__init__()
        self.tok = nn.Embedding(vocab, d_model)
        self.pos = nn.Embedding(seq_len, d_model)
        layer = nn.TransformerEncoderLayer(
            d_model, nhead=4, dim_feedforward=2 * d_model, dropout=0.0, batch_first=True
        )
        self.blocks = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.head = nn.Linear(d_model, vocab)
        mask = nn.Transformer.generate_square_subsequent_mask(seq_len)
        self.register_buffer("causal", mask, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = x.shape[1]
        h = self.tok(x) + self.pos(torch.arange(t, device=x.device))
        h = self.blocks(h, mask=self.causal[:t, :t], is_causal=True)
        return self.head(h)


def crash(mode: str, rank: int, step: int) -> None:
    message = f"simulated crash of rank {rank} at step {step} (attempt 1)"
    print(message, file=sys.stderr, flush=True)
    if mode == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    if mode == "exit":
        os._exit(1)
    raise RuntimeError(message)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    ctx = loom.init()
    device = torch.device(ctx.device)
    torch.manual_seed(args.seed)  # same initial weights everywhere (DDP also broadcasts rank 0's)

    model = TinyCharTransformer(len(VOCAB), args.d_model, args.layers, args.seq_len).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr)
    start_step = 0
    ckpt = loom.load_latest_checkpoint(map_location=device)
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        start_step = ckpt["step"]
    ddp = DDP(model, device_ids=[device.index] if device.type == "cuda" else None)

    if ctx.is_main:
        print(f"rank 0/{ctx.world_size} on {device} ({ctx.backend}), attempt {ctx.attempt}, "
              f"starting at step {start_step + 1} of {args.steps}", flush=True)

    crash_now = args.crash_at_step is not None and ctx.attempt == 1 and ctx.rank == args.crash_rank
    timed_from: float | None = None
    timed_steps = 0
    step = start_step
    loss_value = float("nan")
    stopped = False
    for step in range(start_step + 1, args.steps + 1):
        x, y = make_batch(args.seed, step, ctx.rank, args.batch_size, args.seq_len)
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        logits = ddp(x)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        loss_value = loss.item()
        if args.step_sleep:
            time.sleep(args.step_sleep)

        # Throughput excludes start-up: the clock starts after the warm-up steps of this attempt.
        done_here = step - start_step
        if done_here == args.warmup_steps:
            timed_from = time.perf_counter()
        elif timed_from is not None:
            timed_steps += 1
        loom.report(step, args.steps, loss=loss_value)
        if ctx.is_main and step % args.print_every == 0:
            print(f"step {step}/{args.steps} loss {loss_value:.4f}", flush=True)

        if crash_now and step == args.crash_at_step:
            crash(args.crash_mode, ctx.rank, step)

        if loom.should_checkpoint(step):
            loom.save_checkpoint({"model": model.state_dict(), "optimizer": opt.state_dict()}, step)
        if loom.stop_requested():
            stopped = True
            break

    if ctx.is_main:
        elapsed = time.perf_counter() - timed_from if timed_from is not None else 0.0
        samples = timed_steps * args.batch_size * ctx.world_size
        result = {
            "last_step": step,
            "start_step": start_step,
            "stopped": stopped,
            "loss": loss_value,
            "world_size": ctx.world_size,
            "device": str(device),
            "timed_steps": timed_steps,
            "samples_per_s": samples / elapsed if elapsed > 0 else None,
        }
        print("DEMO_RESULT " + json.dumps(result), flush=True)
    loom.finish()
    return 0


if __name__ == "__main__":
    sys.exit(main())
