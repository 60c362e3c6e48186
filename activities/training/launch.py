"""What run_training launches: torchrun's command line and the ranks' environment, once the
request is checked against this node.

A request that cannot run anywhere (no working directory, a missing script, an unusable
checkpoint URI) fails as INVALID_JOB before anything starts, with the attempt's progress as
details, so the job fails at once instead of being retried on every node.
"""

from __future__ import annotations

import math
import os
import shutil
import sys
from pathlib import Path

from temporalio.exceptions import ApplicationError

from loomos.activities.training.processes import ENV_RUN_TOKEN
from loomos.models.jobs import FailureKind
from loomos.models.spec import RESERVED_ENV
from loomos.models.training import TrainingProgress, TrainingRequest
from loomos.security.crypto.settings import CryptoSettings
from loomos.settings import NodeSettings, Settings
from loomos.train import contract
from loomos.train.encryption import CheckpointEncryption
from loomos.train.stores import LocalCheckpointStore, open_store


def invalid_job(message: str, progress: TrainingProgress | None = None) -> ApplicationError:
    """The non-retryable failure of a request that cannot run (details: the progress, if any)."""
    details = [progress] if progress is not None else []
    return ApplicationError(message, *details, type=FailureKind.INVALID_JOB.value, non_retryable=True)


def under(path: Path, roots: list[str]) -> bool:
    """Whether `path`, symlinks resolved, lies in one of `roots` (resolved too)."""
    real = path.resolve()
    return any(real.is_relative_to(Path(root).resolve()) for root in roots)


def validate_request(
    req: TrainingRequest, node_id: str, progress: TrainingProgress, node: NodeSettings
) -> None:
    """Raise invalid_job() unless the request can run on this node as it stands: its paths
    inside node.allowed_roots (symlinks resolved), its program allowed."""
    spec = req.spec
    if not 0 <= req.node_rank < req.nnodes:
        raise invalid_job(f"node_rank {req.node_rank} is not in [0, {req.nnodes})", progress)
    if req.nproc_per_node < 1:
        raise invalid_job(f"nproc_per_node must be >= 1, got {req.nproc_per_node}", progress)
    if not 0 < req.master_port < 65536:
        raise invalid_job(f"master_port {req.master_port} is not a TCP port", progress)
    if not spec.working_directory:
        raise invalid_job("working_directory is not set (load_spec sets it from the spec file)", progress)
    wd = Path(spec.working_directory)
    if not wd.is_absolute():
        raise invalid_job(f"working_directory {wd} must be an absolute path on the node", progress)
    if not node.allowed_roots:
        unset = "node.allowed_roots is not set ($LOOMOS_NODE_ALLOWED_ROOTS)"
        raise invalid_job(f"node {node_id} runs no jobs: {unset}", progress)
    roots = ", ".join(node.allowed_roots)
    if not under(wd, node.allowed_roots):
        raise invalid_job(f"working_directory {wd} is outside node.allowed_roots ({roots})", progress)
    if not wd.is_dir():
        raise invalid_job(f"working_directory {wd} does not exist on node {node_id}", progress)
    if spec.entrypoint:
        script = wd / spec.entrypoint
        if not script.is_file():
            raise invalid_job(f"entrypoint {script} does not exist on node {node_id}", progress)
        if not under(script, node.allowed_roots):
            raise invalid_job(f"entrypoint {script} leads outside node.allowed_roots ({roots})", progress)
    elif spec.command and spec.command[0] != "-m":
        check_program(spec.command[0], spec.environment_variables, wd, node, node_id, progress)


def check_program(
    program: str,
    env: dict[str, str],
    wd: Path,
    node: NodeSettings,
    node_id: str,
    progress: TrainingProgress,
) -> None:
    """A `command:` job's program: a file under node.allowed_roots (a path, or a name found in
    the working directory), or a name on PATH that node.allowed_programs lists."""
    roots = ", ".join(node.allowed_roots)
    if "/" in program or (wd / program).is_file():
        candidate = Path(program) if Path(program).is_absolute() else wd / program
        if not candidate.is_file():
            raise invalid_job(f"command {program!r} is not found on node {node_id}", progress)
        if not under(candidate, node.allowed_roots):
            raise invalid_job(f"command {candidate} is outside node.allowed_roots ({roots})", progress)
        return
    on_path = shutil.which(program, path=env.get("PATH", os.environ.get("PATH", "")))
    if on_path is None:
        raise invalid_job(f"command {program!r} is not found on node {node_id}", progress)
    if program not in node.allowed_programs:
        raise invalid_job(
            f"command {program!r} ({on_path}) is not in node.allowed_programs and not a file under "
            f"node.allowed_roots ({roots})",
            progress,
        )


def checkpoint_location(req: TrainingRequest, settings: Settings) -> str:
    """LOOMOS_CHECKPOINT_DIR: a local directory (from a path or file:// URI) or an s3:// URI.

    A local directory must lie under node.allowed_roots or the node's own checkpoint root.
    Raises ValueError for a URI no store can use, or a directory outside those.
    """
    uri = req.checkpoint_uri or str(Path(settings.checkpoints.root) / req.job_id)
    if uri.startswith("s3://"):
        bucket = uri.removeprefix("s3://").split("/", 1)[0]
        if not bucket:
            raise ValueError(f"checkpoint URI {uri!r} names no bucket")
        return uri
    try:
        store = open_store(uri)
    except ValueError as exc:
        raise ValueError(f"checkpoint URI: {exc}") from None
    assert isinstance(store, LocalCheckpointStore)
    if not under(store.directory, [*settings.node.allowed_roots, settings.checkpoints.root]):
        raise ValueError(
            f"checkpoint directory {store.directory} is outside node.allowed_roots and the node's "
            f"checkpoint root ({settings.checkpoints.root})"
        )
    return str(store.directory)


def checkpoint_encryption(req: TrainingRequest, crypto: CryptoSettings) -> dict[str, str]:
    """The contract's encryption variables for a job with checkpoint_config.encryption_enabled
    (none otherwise): the classification and where this node's keyring is, never a key.

    Raises ValueError when the keyring cannot serve here (missing, unsafe mode, empty): better
    now than at the first checkpoint, after the steps before it were trained for nothing.
    """
    if not req.spec.checkpoint_config.encryption_enabled:
        return {}
    from loomos.security.crypto.errors import CryptoError
    from loomos.security.crypto.keys import key_provider_from_settings

    try:
        provider = key_provider_from_settings(crypto)
        if not provider.keys():
            raise ValueError(f"{provider.describe()} holds no keys (create one with `loomos keys rotate`)")
    except CryptoError as exc:
        raise ValueError(f"checkpoint encryption: {exc}") from None
    return CheckpointEncryption(
        classification=str(crypto.checkpoint_classification),
        provider=crypto.key_provider,
        key_file=str(provider.keyring.path),
        kms_key_id=crypto.kms_key_id,
        kms_region=crypto.kms_region,
        kms_endpoint=crypto.kms_endpoint,
    ).as_env()


def torchrun_command(req: TrainingRequest, cancel_grace_s: float) -> list[str]:
    """`python -m torch.distributed.run` for this node's ranks, then the job's script and args."""
    cmd = [
        sys.executable, "-m", "torch.distributed.run",
        "--nnodes", str(req.nnodes),
        "--node-rank", str(req.node_rank),
        "--nproc-per-node", str(req.nproc_per_node),
        "--max-restarts", "0",
        # torchrun's own wait between forwarding SIGTERM and SIGKILL (30 s by default) is
        # the node's grace period, so a slow final checkpoint is not cut short at 30 s.
        "--shutdown-timeout", str(max(1, math.ceil(cancel_grace_s))),
    ]
    if req.nnodes == 1:
        # A free port of its own, so jobs sharing a node never collide on 29500.
        cmd.append("--standalone")
    else:
        cmd += ["--master-addr", req.master_addr, "--master-port", str(req.master_port)]
    return cmd + req.spec.launch_target()


def secret_environment(req: TrainingRequest, crypto: CryptoSettings) -> dict[str, str]:
    """The job's secret variables opened with this node's keyring (LoomCtl sealed them for this
    job); ValueError naming the variable when one does not open here."""
    sealed = req.spec.secret_environment_variables
    if not sealed:
        return {}
    from loomos.security.crypto.errors import CryptoError
    from loomos.security.crypto.keys import key_provider_from_settings
    from loomos.security.crypto.sealed_values import unseal_all

    try:
        return unseal_all(sealed, job_id=req.job_id, provider=key_provider_from_settings(crypto))
    except CryptoError as exc:
        raise ValueError(f"secret variables: {exc}") from None


def rank_environment(
    req: TrainingRequest, node_id: str, ckpt_dir: str, progress_path: Path, token: str
) -> dict[str, str]:
    """The environment torchrun and the ranks run with: the LOOMOS_* contract of loomos.train."""
    # The node's own environment, minus anything that would confuse torchrun's rendezvous or
    # impersonate another attempt (a node worker itself started under torchrun or LoomOS).
    env = {
        k: v for k, v in os.environ.items()
        if k not in RESERVED_ENV and not k.startswith(("TORCHELASTIC_", "LOOMOS_"))
    }
    env.setdefault("PYTHONUNBUFFERED", "1")  # log lines reach the file before a crash
    env.update(req.spec.environment_variables)
    cc = req.spec.checkpoint_config
    env.update({
        contract.ENV_JOB_ID: req.job_id,
        contract.ENV_ATTEMPT: str(req.attempt),
        contract.ENV_NODE_ID: node_id,
        contract.ENV_CHECKPOINT_DIR: ckpt_dir,
        contract.ENV_CHECKPOINT_ENABLED: "1" if cc.enabled else "0",
        contract.ENV_MAX_CHECKPOINTS: str(cc.max_checkpoints),
        contract.ENV_PROGRESS_FILE: str(progress_path),
        ENV_RUN_TOKEN: token,
    })
    if cc.interval_steps is not None:
        env[contract.ENV_CHECKPOINT_INTERVAL_STEPS] = str(cc.interval_steps)
    if cc.interval_minutes is not None:
        env[contract.ENV_CHECKPOINT_INTERVAL_MINUTES] = repr(float(cc.interval_minutes))
    return env
