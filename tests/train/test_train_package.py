"""loomos.train as a package: cheap to import, and the API scripts use is all there."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from loomos import train as loom
from tests.helpers import REPO


@pytest.mark.parametrize(
    ("module", "heavy"),
    [
        ("loomos.train", ["torch", "boto3"]),
        ("loomos.train.contract", ["torch", "boto3"]),
        ("loomos.activities.training", ["torch"]),
    ],
)
def test_importing_does_not_import_torch(module: str, heavy: list[str]) -> None:
    # The node worker imports loomos.train's constants (and its training activities) without
    # paying seconds and hundreds of MB for torch; a script pays for it at init().
    code = f"import json, sys, {module}; print(json.dumps([m for m in {heavy!r} if m in sys.modules]))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == []


def _names_used(text: str) -> set[str]:
    return set(re.findall(r"\bloom\.([A-Za-z_]\w*)", text))


def test_every_name_the_demo_and_the_readme_use_is_exported() -> None:
    demo = (REPO / "examples" / "ddp_demo.py").read_text()
    readme = (REPO / "README.md").read_text()
    # The README's training snippet (its SDK example also calls a client `loom`).
    snippet = next(block for block in readme.split("```") if "from loomos import train as loom" in block)
    used = _names_used(demo) | _names_used(snippet)
    assert {"init", "report", "should_checkpoint", "save_checkpoint", "stop_requested"} <= used
    assert used <= set(loom.__all__), used - set(loom.__all__)


def test_the_exports_exist() -> None:
    assert all(hasattr(loom, name) for name in loom.__all__)
