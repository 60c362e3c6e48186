"""The package as users install it: one top-level name (`loomos`, the design card's folders
inside it), a light core, and every module importable from the installed copy alone."""

from __future__ import annotations

import email
import os
import subprocess
import sys
import textwrap
import tomllib
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import REPO

PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
SETUPTOOLS = PYPROJECT["tool"]["setuptools"]
PACKAGE_DIR: dict[str, str] = PYPROJECT["tool"]["setuptools"]["package-dir"]

# What a core install (`pip install loomos`) has; everything else belongs to an extra.
CORE_DISTRIBUTIONS = {"pydantic", "pydantic-settings", "httpx", "typer", "rich", "pyyaml", "numpy"}
# Import names of packages only extras bring; a core command must not need them.
EXTRA_ONLY_MODULES = (
    "temporalio", "fastapi", "uvicorn", "starlette", "sqlalchemy", "sqlmodel", "psycopg", "alembic",
    "casbin", "structlog", "jsonschema", "jsonschema_rs", "prometheus_client", "sse_starlette", "torch",
    "psutil", "boto3", "botocore", "google", "azure",
)  # fmt: skip


def _python(code: str, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    # -I: no PYTHONPATH, no user site, not the current folder: only the installed copy in `cwd`
    # (put first on sys.path by the code) and the venv's site-packages.
    return subprocess.run(
        [sys.executable, "-I", "-c", code, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "120"},
    )


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """`pip install --no-deps .` into a folder of its own (the same build a wheel gets)."""
    target = tmp_path_factory.mktemp("site")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-deps",
         "--no-build-isolation", "--target", str(target), str(REPO)],
        check=True, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    yield target


def test_only_loomos_is_installed_at_the_top_level(installed: Path) -> None:
    top = {p.name for p in installed.iterdir() if not p.name.endswith((".dist-info", "__pycache__"))}
    assert top - {"bin"} == {"loomos"}
    probe = f"import sys; sys.path.insert(0, {str(installed)!r}); import api"
    assert "No module named 'api'" in _python(probe, installed).stderr
    for folder in ("api", "workers", "workflows", "activities", "policies"):
        probe = f"import sys; sys.path.insert(0, {str(installed)!r}); import loomos.{folder} as m"
        probe += "; print(m.__file__)"
        done = _python(probe, installed)
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip().startswith(str(installed / "loomos" / folder)), done.stdout


def test_every_package_folder_is_listed_and_every_module_imports(installed: Path) -> None:
    listed = set(SETUPTOOLS["packages"])
    found = set()
    for package, folder in PACKAGE_DIR.items():
        for init in (REPO / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(REPO / folder)
            found.add(".".join([package, *rel.parts]))
    assert (found - listed) == set(), "packages missing from pyproject's list"
    modules = sorted(
        ".".join(p.relative_to(installed).with_suffix("").parts).removesuffix(".__init__")
        for p in (installed / "loomos").rglob("*.py")
        if "migrations" not in p.parts and p.name != "__main__.py"
    )
    probe = textwrap.dedent(
        f"""
        import importlib, sys
        sys.path.insert(0, {str(installed)!r})
        failed = []
        for name in sys.argv[1:]:
            try:
                module = importlib.import_module(name)
                assert module.__file__.startswith({str(installed)!r}), module.__file__
            except Exception as err:
                failed.append(f"{{name}}: {{err!r}}")
        print("\\n".join(failed))
        """
    )
    done = _python(probe, installed, *modules)
    assert done.returncode == 0 and not done.stdout.strip(), done.stdout + done.stderr


def test_core_requirements_are_light_and_torch_is_not_pinned() -> None:
    core = {r.split("[")[0].split(">")[0].split("=")[0].split("<")[0].strip().lower() for r in
            PYPROJECT["project"]["dependencies"]}  # fmt: skip
    assert core == CORE_DISTRIBUTIONS
    extras = PYPROJECT["project"]["optional-dependencies"]
    torch = [r for r in extras["node"] if r.startswith("torch")]
    assert torch and "==" not in torch[0], torch
    pinned = [r for reqs in extras.values() for r in reqs if "==" in r]
    assert not pinned, "exact pins belong in constraints.txt"
    assert "torch==" in (REPO / "constraints.txt").read_text()


def test_wheel_metadata_puts_heavy_packages_behind_extras(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--disable-pip-version-check", "--no-deps",
         "--no-build-isolation", "-w", str(tmp_path), str(REPO)],
        check=True, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    (wheel,) = tmp_path.glob("loomos-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        meta = email.message_from_bytes(zf.read(next(n for n in zf.namelist() if n.endswith("METADATA"))))
        tops = {n.split("/")[0] for n in zf.namelist()}
    assert {t for t in tops if not t.endswith(".dist-info")} == {"loomos"}
    requires = meta.get_all("Requires-Dist") or []
    unconditional = [r for r in requires if "extra ==" not in r]
    assert not [r for r in unconditional if r.split(">")[0].split("[")[0].lower() in {"torch", "temporalio"}]
    assert any(r.startswith("torch") and 'extra == "node"' in r for r in requires), requires
    assert set(meta.get_all("Provides-Extra") or []) >= {"server", "node", "aws", "gcp", "azure", "devstack"}


# Each command a data scientist runs with a core install, and what it must say. Extra-only
# packages are made unimportable, so a module-level import of one fails the command.
CORE_COMMANDS = [
    (["--help"], 0, "submit"),
    (["submit", "--help"], 0, "Job spec file"),
    (["jobs", "list", "--endpoint", "http://127.0.0.1:1"], 1, "cannot reach LoomCtl"),
    (["submit", "examples/ddp-demo.yaml", "--endpoint", "http://127.0.0.1:1"], 1, "cannot reach LoomCtl"),
    (["submit", "nope.yaml"], 2, "cannot read file"),
    (["market", "offers", "--gpu", "H100", "--count", "8"], 0, "8x H100"),
    (["config", "show"], 0, "comes with loomos[server] or loomos[node]"),
    (["events", "query"], 1, "loomos[server]"),
]


@pytest.mark.parametrize(
    ("args", "code", "needle"), CORE_COMMANDS, ids=[" ".join(c[0]) for c in CORE_COMMANDS]
)
def test_core_commands_need_no_extra(args: list[str], code: int, needle: str) -> None:
    blocker = textwrap.dedent(
        f"""
        import sys
        BLOCKED = {EXTRA_ONLY_MODULES!r}
        class Blocker:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in BLOCKED:
                    raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        sys.meta_path.insert(0, Blocker())
        sys.argv = ["loomos", *sys.argv[1:]]
        from loomos.cli import main
        main()
        """
    )
    done = _python(blocker, REPO, *args)
    output = done.stdout + done.stderr
    assert done.returncode == code, output
    assert needle in output, output
    assert "Traceback" not in output
