"""init() and finish(): the start and end of a training process.

init() installs the SIGTERM handler, selects the CUDA device of the local rank and creates the
default process group; finish() flushes the progress channel and tears the group down.
"""

from __future__ import annotations

from loomos.train.context import Context
from loomos.train.state import get_state
from loomos.train.stop import install_sigterm_handler


def init(*, init_process_group: bool = True) -> Context:
    """Context, plus: SIGTERM handler, CUDA device selection, and the default process group.

    Under torchrun the group uses the usual env:// rendezvous. Launched with plain `python`,
    a one-process group is created on an in-memory store, so DDP code runs unchanged.
    """
    st = get_state()
    ctx = st.ctx
    install_sigterm_handler()
    import torch

    if ctx.device.startswith("cuda"):
        if ctx.local_rank >= torch.cuda.device_count():
            raise RuntimeError(
                f"LOCAL_RANK={ctx.local_rank} but only {torch.cuda.device_count()} CUDA device(s) are visible"
            )
        torch.cuda.set_device(ctx.local_rank)
    if init_process_group:
        import torch.distributed as dist

        if not dist.is_initialized():
            if ctx.launched_by_torchrun:
                dist.init_process_group(backend=ctx.backend)
            else:
                dist.init_process_group(backend=ctx.backend, store=dist.HashStore(), rank=0, world_size=1)
    return ctx


def finish() -> None:
    """Flush the progress channel and tear down the default process group."""
    st = get_state()
    if st.channel is not None:
        st.channel.flush()
    import torch.distributed as dist

    if dist.is_initialized():
        if dist.get_world_size() > 1:
            # Tearing down while a peer is still finishing its last collective can abort the
            # process in gloo's teardown (seen as SIGABRT after a finished run): meet first.
            dist.barrier()
        dist.destroy_process_group()
