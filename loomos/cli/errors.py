"""How every `loomos` command reports failure: one red `error: ...` line on stderr, never a
traceback, and one exit-code rule for all of them:

- 2 (EXIT_BAD_INPUT): what the user gave is wrong and must be fixed: a spec, an option, a
  filter, a file named on the command line, a setting (temporal-dev.yaml or a variable), a
  request the server refused as invalid (400/422);
- 1 (EXIT_FAILED): the command was fine but something else failed: the job, the server, an
  unreachable LoomCtl, Temporal or database, a service that would not start;
- 130: interrupted (Ctrl-C).

`reported_errors()` classifies exceptions by type without importing the modules that define
them (a module not yet imported cannot have raised), so commands stay quick to start.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from typing import NoReturn

import typer
from rich.console import Console
from rich.markup import escape

EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130

console = Console()
err_console = Console(stderr=True)

# (module, class) of errors that mean "fix your input", checked with isinstance.
_BAD_INPUT_TYPES = (
    ("loomos.models.spec", "SpecError"),
    ("loomos.settings", "ConfigError"),
    ("pydantic", "ValidationError"),
    ("loomos.loomdb.errors", "LoomDBError"),
    ("loomos.marketplace.catalog", "CatalogError"),
    ("loomos.marketplace.optimizer", "MarketInputError"),
    ("loomos.temporal.client", "SearchAttributeConflict"),
    ("loomos.workers.node_capacity", "NodeConfigError"),
)
_DATABASE_MODULES = ("sqlalchemy", "psycopg")
# Which extra brings a package a command may need (`pip install loomos` is the light core).
EXTRA_FOR_MODULE = {
    **dict.fromkeys(
        ("sqlalchemy", "sqlmodel", "psycopg", "alembic", "fastapi", "uvicorn", "starlette", "casbin",
         "jsonschema", "jsonschema_rs", "prometheus_client", "sse_starlette", "structlog", "argon2", "jwt",
         "ldap3", "pyotp", "webauthn", "segno", "rfc8785"),
        "server",
    ),
    "temporalio": "server",
    "torch": "node",
    "psutil": "node",
    "boto3": "aws",
    "botocore": "aws",
    "google": "gcp",
    "azure": "azure",
}  # fmt: skip
# Errors whose message may span several lines (a service's log tail): the first line is the
# error, the rest is printed dimmed below it.
_MULTILINE_TYPES = (
    ("loomos.devstack.stack", "StackError"),
    ("loomos.devstack.binaries", "BinaryNotFound"),
)


def one_line(message: str) -> str:
    """Multi-line messages (YAML parser errors with a caret, log excerpts) as one line."""
    parts = [line.strip() for line in message.splitlines()]
    return " ".join(p for p in parts if p and set(p) != {"^"})


def fail(message: str, code: int = EXIT_FAILED) -> NoReturn:
    err_console.print(f"[red]error:[/red] {escape(one_line(message))}", soft_wrap=True, highlight=False)
    raise typer.Exit(code)


def _is(err: BaseException, kinds: tuple[tuple[str, str], ...]) -> bool:
    for module, name in kinds:
        loaded = sys.modules.get(module)
        cls = getattr(loaded, name, None) if loaded is not None else None
        if isinstance(cls, type) and isinstance(err, cls):
            return True
    return False


def _message(err: BaseException) -> str:
    """Pydantic's errors as `field.path: problem; ...`, everything else as its text."""
    errors = getattr(err, "errors", None)
    if _is(err, (("pydantic", "ValidationError"),)) and callable(errors):
        return "; ".join(
            f"{'.'.join(map(str, e['loc']))}: {str(e['msg']).removeprefix('Value error, ')}" for e in errors()
        )
    text = str(err)
    return text if text else type(err).__name__


def exit_code_for(err: BaseException) -> int:
    """The exit code the rule above gives an exception."""
    if isinstance(err, KeyboardInterrupt):
        return EXIT_INTERRUPTED
    if _is(err, (("loomos.devstack.stack", "StartInterrupted"),)):
        return EXIT_INTERRUPTED
    if _is(err, (("loomos.client", "LoomOSError"),)):
        return EXIT_BAD_INPUT if err.is_bad_input else EXIT_FAILED  # type: ignore[attr-defined]
    if _is(err, _BAD_INPUT_TYPES):
        return EXIT_BAD_INPUT
    return EXIT_FAILED


def _is_expected(err: BaseException) -> bool:
    """Failures a user can act on, as opposed to bugs (which still get one line, and a hint)."""
    if isinstance(err, OSError | KeyboardInterrupt):
        return True
    module = type(err).__module__
    if module.startswith((*_DATABASE_MODULES, "httpx", "botocore", "boto3")):
        return True
    return exit_code_for(err) != EXIT_FAILED or _is(
        err, (*_MULTILINE_TYPES, ("loomos.client", "LoomOSError"), ("loomos.devstack.stack", "StackError"))
    )


@contextlib.contextmanager
def reported_errors(context: str = "") -> Iterator[None]:
    """Turn every expected failure into one error line and its exit code.

    `context` prefixes database and network errors that would not say what they are about
    (e.g. "cannot use LoomDB").
    """
    try:
        yield
    except (typer.Exit, typer.Abort):
        raise
    except KeyboardInterrupt:
        fail("interrupted", EXIT_INTERRUPTED)
    except ModuleNotFoundError as err:
        missing = (err.name or "").split(".")[0]
        extra = EXTRA_FOR_MODULE.get(missing)
        if extra is None:
            raise
        fail(f"this command needs {missing}, which comes with loomos[{extra}]: pip install 'loomos[{extra}]'")
    except Exception as err:
        if not _is_expected(err):
            if os.environ.get("LOOMOS_DEBUG"):
                raise
            fail(f"unexpected {type(err).__name__}: {err} (set LOOMOS_DEBUG=1 for a traceback)")
        message = _message(err)
        if _is(err, _MULTILINE_TYPES):
            first, _, rest = message.partition("\n")
            if rest:
                err_console.print(escape(rest), style="dim", highlight=False)
            message = first
        elif context and (isinstance(err, OSError) or type(err).__module__.startswith(_DATABASE_MODULES)):
            message = f"{context}: {message.splitlines()[0]}"
        fail(message, exit_code_for(err))
