"""`loomos keys list|rotate`: the keyring that encrypts checkpoints and Temporal payloads
(security.crypto: key_provider, key_file, kms_key_id; see loomos.security.crypto.keys).

`list` shows each key's id, creation time, age and what wraps it, never key material.
`rotate` adds a new newest key (creating the keyring if there is none) and, with aws-kms,
re-wraps the older data keys under the current KMS key; old data stays readable by key id.
`rotate --if-due` rotates only when the newest key is older than key_rotation_days (for cron).

After a rotation, ship the keyring to every host that encrypts or decrypts (LoomCtl, control
and node workers); processes pick the new key up without a restart.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from loomos.cli.errors import EXIT_BAD_INPUT, EXIT_FAILED, console, fail, reported_errors
from loomos.settings import load_settings

keys_app = typer.Typer(no_args_is_help=True, add_completion=False, help="The encryption keyring.")


@contextlib.contextmanager
def _keyring_errors() -> Iterator[None]:
    """Key problems as one line: a keyring to fix is bad input (2), a KMS refusing is a failure (1)."""
    try:
        yield
    except ModuleNotFoundError as err:
        if (err.name or "").split(".")[0] not in ("cryptography", "zstandard"):
            raise
        fail(f"this command needs {err.name}, which comes with loomos[server] or loomos[node]")
    except Exception as err:
        from loomos.security.crypto.errors import CryptoError, KeyFileError, UnknownKeyId

        if not isinstance(err, CryptoError):
            raise
        fail(str(err), EXIT_BAD_INPUT if isinstance(err, KeyFileError | UnknownKeyId) else EXIT_FAILED)


def _provider():  # type: ignore[no-untyped-def]
    from loomos.security.crypto.keys import key_provider_from_settings

    return key_provider_from_settings(load_settings().security.crypto)


@keys_app.command("list", help="Key ids, creation times and ages (never key material).")
def list_keys(json_out: Annotated[bool, typer.Option("--json", help="print JSON")] = False) -> None:
    with reported_errors(), _keyring_errors():
        provider = _provider()
        keys = provider.keys()
        now = datetime.now(UTC)
        due = provider.due_for_rotation(now)
        rows = [
            {
                "key_id": k.key_id,
                "created": k.created.isoformat(),
                "age_days": round(k.age_days(now), 1),
                "provider": k.provider,
                "wrapped_by": k.wrapped_by,
                "newest": i == len(keys) - 1,
            }
            for i, k in enumerate(keys)
        ]
        if json_out:
            print(json.dumps({"keyring": str(provider.keyring.path), "rotation_due": due, "keys": rows}))
            return
        table = Table(title=f"keyring {escape(str(provider.keyring.path))}", title_justify="left")
        for column in ("key id", "created (UTC)", "age (days)", "provider", "wrapped by", ""):
            table.add_column(column, no_wrap=column in ("key id", "created (UTC)"))
        for row in rows:
            mark = "newest" + (" (rotation due)" if due else "") if row["newest"] else ""
            table.add_row(
                row["key_id"], row["created"][:19].replace("T", " "), f"{row['age_days']:.1f}",
                row["provider"], escape(row["wrapped_by"] or "-"), mark,
            )  # fmt: skip
        console.print(table)
        rotation = provider.rotation.days
        if due:
            console.print(f"the newest key is older than {rotation} days: run `loomos keys rotate`")


@keys_app.command("rotate", help="Add a new newest key (and re-wrap older data keys with aws-kms).")
def rotate(
    if_due: Annotated[
        bool, typer.Option("--if-due", help="only when the newest key is older than key_rotation_days")
    ] = False,
) -> None:
    with reported_errors(), _keyring_errors():
        provider = _provider()
        if if_due and not provider.due_for_rotation():
            newest = provider.keys()[-1]
            console.print(f"not due: the newest key {newest.key_id} is {newest.age_days():.1f} days old")
            return
        created = not provider.keyring.exists()
        info, rewrapped = provider.rotate()
        verb = "created the keyring with" if created else "added"
        console.print(f"{verb} key {info.key_id} ({info.provider}) in {escape(str(provider.keyring.path))}")
        if rewrapped:
            console.print(f"re-wrapped {rewrapped} older data key(s) under KMS key {info.wrapped_by}")
        if not created:
            console.print("new data uses it from now on; copy the keyring to every host that reads it")
