"""An attempt's records on the node that ran it: its log and its progress file.

Both stay on the node, under the node's log root, one folder per job:
`<logs root>/<job id>/attempt-<attempt>-node-<node rank>.log` and `....progress.jsonl`. The
run activity writes them; the read activities find them again from a request that came over
the wire, so every path built from a request is checked to stay inside the log root.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

LOG_SUFFIX = ".log"
PROGRESS_SUFFIX = ".progress.jsonl"

# Job ids are validated upstream; this stricter check keeps a path built from one inside its
# folder whatever reaches the activity.
_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def is_safe_id(value: str) -> bool:
    """Whether `value` can name a folder or file under the log root (no separators, no `..`)."""
    return bool(_SAFE_ID.match(value)) and ".." not in value


def attempt_log_path(logs_root: str | Path, job_id: str, attempt: int, node_rank: int) -> Path:
    return Path(logs_root) / job_id / f"attempt-{attempt}-node-{node_rank}{LOG_SUFFIX}"


def attempt_progress_path(logs_root: str | Path, job_id: str, attempt: int, node_rank: int) -> Path:
    return Path(logs_root) / job_id / f"attempt-{attempt}-node-{node_rank}{PROGRESS_SUFFIX}"


def find_attempt_files(
    logs_root: str | Path, job_id: str, attempt: int, suffix: str
) -> list[tuple[int, Path]]:
    """(node rank, path) of one attempt's files with this suffix, sorted by node rank.

    A node may hold several node ranks of one attempt (a multi-node job placed twice on it).
    job_id must be a safe id (is_safe_id). Files reached through a symlink that leads outside
    the log root are left out.
    """
    root = Path(logs_root).resolve()
    folder = (root / job_id).resolve()
    pattern = re.compile(rf"^attempt-{attempt}-node-(\d+){re.escape(suffix)}$")
    files: list[tuple[int, Path]] = []
    if folder.is_relative_to(root) and folder.is_dir():
        for entry in folder.iterdir():
            m = pattern.match(entry.name)
            # resolve(): a symlink planted in the folder must not lead outside the log root.
            if m and entry.is_file() and entry.resolve().is_relative_to(root):
                files.append((int(m.group(1)), entry))
    return sorted(files)


def read_tail(path: Path, max_bytes: int) -> tuple[str, int]:
    """The last max_bytes of a file as text, and the file's size."""
    with open(path, "rb") as fh:
        fh.seek(0, os.SEEK_END)
        size = fh.tell()
        fh.seek(max(0, size - max_bytes))
        return fh.read().decode("utf-8", errors="replace"), size
