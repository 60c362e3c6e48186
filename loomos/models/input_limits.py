"""Bounds on what a user may put in a JobSpec, and the checks that enforce them.

A spec travels into Temporal (a payload is at most 2 MB), into a node's process table (argv and
environment share the kernel's ARG_MAX), and into LoomDB's audit trail; and parts of it name
paths on shared hosts. Each bound here keeps one of those from being abused: an oversized or
deeply nested spec, a path that climbs out of the folder it is taken relative to, a variable
that would change how the node's own launcher runs (not just the job), a YAML alias bomb.
Pure: workflow code imports the models that use these.
"""

from __future__ import annotations

import json
from pathlib import PurePosixPath
from typing import Any

MAX_PATH_CHARS = 4096
MAX_ARGS = 4096
MAX_ARG_CHARS = 32 * 1024
MAX_ARGV_BYTES = 256 * 1024  # all args together: well under Linux's ARG_MAX (2 MiB with the environment)
MAX_COMMAND_ITEMS = 256
MAX_ENV_VARS = 1024
MAX_ENV_VALUE_CHARS = 32 * 1024
MAX_METADATA_BYTES = 64 * 1024
MAX_NESTING = 16
MAX_TAGS = 64
MAX_TAG_CHARS = 128
# A spec file; and the whole spec as it is sent (Temporal refuses payloads over 2 MB and warns
# at 256 KB; the job workflow's input is the spec plus a little).
MAX_SPEC_FILE_BYTES = 1024 * 1024
MAX_SPEC_BYTES = 1024 * 1024
# Nodes a YAML document may expand to, aliases counted each time they are used (billion laughs).
MAX_YAML_NODES = 100_000

# Variables that change how the node's launcher (torchrun, started with the job's environment)
# or the dynamic loader behaves, not just the job's own code: a job could load code into
# LoomOS's process, or into every process it starts. Refused; use working_directory (it is on
# the script's sys.path) or a package in it instead of PYTHONPATH.
FORBIDDEN_ENV = frozenset(
    {"PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "PYTHONUSERBASE", "PYTHONEXECUTABLE", "BASH_ENV", "ENV"}
)
FORBIDDEN_ENV_PREFIXES = ("LD_", "DYLD_")


def check_text(value: str, what: str, max_chars: int) -> str:
    if "\x00" in value:
        raise ValueError(f"{what} must not contain NUL characters")
    if len(value) > max_chars:
        raise ValueError(f"{what} is {len(value)} characters; at most {max_chars}")
    return value


def check_no_parent_parts(value: str, what: str) -> str:
    """A path (or URI path) without `..` parts: it names a place, it does not climb from one."""
    check_text(value, what, MAX_PATH_CHARS)
    if ".." in PurePosixPath(value).parts:
        raise ValueError(f"{what} must not contain '..': {value!r}")
    return value


def check_env_name(name: str) -> None:
    if name in FORBIDDEN_ENV or name.startswith(FORBIDDEN_ENV_PREFIXES):
        raise ValueError(
            f"{name!r} would change how LoomOS's launcher or the dynamic loader runs on the node, "
            "so jobs may not set it (put modules in working_directory instead of PYTHONPATH)"
        )


def check_args(args: list[str]) -> list[str]:
    if len(args) > MAX_ARGS:
        raise ValueError(f"{len(args)} args; at most {MAX_ARGS}")
    total = 0
    for i, arg in enumerate(args):
        check_text(arg, f"args[{i}]", MAX_ARG_CHARS)
        total += len(arg.encode()) + 1
    if total > MAX_ARGV_BYTES:
        raise ValueError(f"args take {total} bytes; at most {MAX_ARGV_BYTES}")
    return args


def nesting_depth(value: Any, limit: int) -> int:
    """How deeply `value` nests mappings and lists (stops counting past `limit`)."""
    stack = [(value, 1)]
    deepest = 0
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, depth)
            if deepest > limit:
                return deepest
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)
    return deepest


def check_json_value(value: Any, what: str, max_bytes: int) -> Any:
    if nesting_depth(value, MAX_NESTING) > MAX_NESTING:
        raise ValueError(f"{what} nests deeper than {MAX_NESTING} levels")
    try:
        size = len(json.dumps(value, allow_nan=False))
    except ValueError as exc:  # NaN or infinity somewhere inside
        raise ValueError(f"{what}: {exc}") from None
    if size > max_bytes:
        raise ValueError(f"{what} is {size} bytes as JSON; at most {max_bytes}")
    return value
