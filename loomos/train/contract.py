"""The contract between the node worker and a training script: environment and progress events.

The node worker (loomos.activities.training) starts torchrun with these LOOMOS_* variables and
reads the progress channel, a JSON-lines file rank 0 appends to, one event a line:

    {"event": "progress", "step": 12, "total_steps": 80, "time": ..., "metrics": {"loss": 0.4}}
    {"event": "checkpoint", "step": 10, "uri": "file:///...", "time": ..., "metrics": {...}}
    {"event": "resumed", "step": 10, "uri": "s3://...", "time": ...}

Both sides import these names from here; this module imports nothing, so the node worker pays
nothing for it.
"""

from __future__ import annotations

ENV_JOB_ID = "LOOMOS_JOB_ID"
ENV_ATTEMPT = "LOOMOS_ATTEMPT"
ENV_NODE_ID = "LOOMOS_NODE_ID"
ENV_CHECKPOINT_DIR = "LOOMOS_CHECKPOINT_DIR"  # a local path or an s3://bucket/prefix URI
ENV_CHECKPOINT_ENABLED = "LOOMOS_CHECKPOINT_ENABLED"  # "1" or "0"
ENV_CHECKPOINT_INTERVAL_STEPS = "LOOMOS_CHECKPOINT_INTERVAL_STEPS"
ENV_CHECKPOINT_INTERVAL_MINUTES = "LOOMOS_CHECKPOINT_INTERVAL_MINUTES"
ENV_MAX_CHECKPOINTS = "LOOMOS_MAX_CHECKPOINTS"
ENV_PROGRESS_FILE = "LOOMOS_PROGRESS_FILE"
# Encrypted checkpoints (checkpoint_config.encryption_enabled): the classification they are
# sealed for (internal, confidential, restricted), and where the key is, by reference only:
# the keyring file and, with aws-kms, the KMS key and endpoint. Never key bytes.
ENV_CHECKPOINT_ENCRYPTION = "LOOMOS_CHECKPOINT_ENCRYPTION"
ENV_KEY_PROVIDER = "LOOMOS_KEY_PROVIDER"
ENV_KEY_FILE = "LOOMOS_KEY_FILE"
ENV_KMS_KEY_ID = "LOOMOS_KMS_KEY_ID"
ENV_KMS_REGION = "LOOMOS_KMS_REGION"
ENV_KMS_ENDPOINT = "LOOMOS_KMS_ENDPOINT"

EVENT_PROGRESS = "progress"
EVENT_CHECKPOINT = "checkpoint"
EVENT_RESUMED = "resumed"
