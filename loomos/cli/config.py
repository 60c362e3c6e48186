"""`loomos config show|vars`: the settings in effect, where each value came from, and the
environment variables that set them.

Both read what the processes read (loomos/settings.py's load_settings and ENV_VARS,
loomos/temporal/client.py's temporal_connection), so what they print is what a worker started
here would use. Secrets are masked: API keys, gRPC metadata values, passwords in URLs. A bad
configuration is one `error: ...` line and exit code 2, as for the other commands.
"""

from __future__ import annotations

import json
import re
from typing import Annotated, Any

import typer
from pydantic import SecretStr
from rich.markup import escape
from rich.table import Table

from loomos.cli.errors import console, reported_errors
from loomos.settings import ENV_VARS, Settings, leaf_keys, load_settings

config_app = typer.Typer(no_args_is_help=True, add_completion=False)

MASK = "****"
# scheme://user:password@host -> scheme://user:****@host
_URL_PASSWORD = re.compile(r"^(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^:/@]*):[^@/]*@")

JsonOpt = Annotated[bool, typer.Option("--json", help="print JSON instead of a table")]


def masked(value: Any) -> Any:
    """`value` fit to print: secrets replaced by ****, mappings and lists masked within."""
    if isinstance(value, SecretStr):
        return MASK
    if isinstance(value, str):
        return _URL_PASSWORD.sub(rf"\g<head>:{MASK}@", value)
    if isinstance(value, dict):
        return {k: masked(v) for k, v in value.items()}
    return value


def source_of(settings: Settings, key: str) -> str:
    """default, file or $VARIABLE."""
    origin = settings.origins.get(key)
    if origin is None:
        return "default"
    return origin if origin.startswith("$") else "file"


def _nested(settings: Settings) -> dict[str, Any]:
    data: dict[str, Any] = {}
    for key in leaf_keys():
        *sections, name = key.split(".")
        node = data
        for section in sections:
            node = node.setdefault(section, {})
        node[name] = masked(settings.get(key))
    return data


NO_TEMPORALIO = (
    "the Temporal connection is resolved by temporalio, which comes with loomos[server] or loomos[node]"
)


def _connection(settings: Settings) -> dict[str, Any] | None:
    """The Temporal connection connect_temporal would make: each argument and its origin; None
    on a core install (no temporalio), where nothing here connects to Temporal."""
    try:
        from loomos.temporal.client import temporal_connection
    except ModuleNotFoundError as err:
        if (err.name or "").split(".")[0] != "temporalio":
            raise
        return None

    conn = temporal_connection(settings)
    c = conn.config
    tls = c.get("tls", False)
    if tls is True:
        tls_text = "on (system CAs)"
    elif tls is False:
        tls_text = "off"
    else:
        parts = [
            "client certificate" if tls.client_cert else "",
            "server CA" if tls.server_root_ca_cert else "system CAs",
            f"server name {tls.domain}" if tls.domain else "",
        ]
        tls_text = "on (" + ", ".join(p for p in parts if p) + ")"
    values: dict[str, Any] = {
        "profile": conn.profile,
        "target_host": c.get("target_host"),
        "namespace": c.get("namespace"),
        "tls": tls_text,
        "api_key": MASK if c.get("api_key") else None,
        "rpc_metadata": {k: MASK for k in c.get("rpc_metadata", {})},
    }
    origins = {"profile": "temporal.envconfig is false"} | conn.origins
    return {"values": values, "origins": origins}


def _text(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return json.dumps(value)
    return str(value)


@config_app.command("show")
def show(
    as_json: JsonOpt = False,
    sources: Annotated[
        bool, typer.Option("--sources", help="say where each value came from: default, file or $VARIABLE")
    ] = False,
) -> None:
    """The settings in effect here (temporal-dev.yaml and the environment) and the Temporal
    connection they make; secrets masked."""
    with reported_errors():
        settings = load_settings()
        connection = _connection(settings)
        file = str(settings.source_file) if settings.source_file else None
        if as_json:
            out: dict[str, Any] = {"file": file, "settings": _nested(settings)}
            if sources:
                out["sources"] = {key: source_of(settings, key) for key in leaf_keys()}
            out["temporal_connection"] = connection["values"] if connection else None
            if sources and connection:
                out["temporal_connection_sources"] = connection["origins"]
            print(json.dumps(out, indent=2))
            return
        title = f"settings from {file or 'defaults (no temporal-dev.yaml found)'}"
        table = Table(title=title, title_justify="left")
        table.add_column("key", no_wrap=True)
        table.add_column("value", overflow="fold")
        if sources:
            table.add_column("source", no_wrap=True)
        for key in leaf_keys():
            row = [key, escape(_text(masked(settings.get(key))))]
            if sources:
                origin = source_of(settings, key)
                row.append(f"[dim]{origin}[/]" if origin == "default" else escape(origin))
            table.add_row(*row)
        console.print(table)
        if connection is None:
            console.print(f"[dim]{escape(NO_TEMPORALIO)}[/]")
            return
        conn = Table(title="Temporal connection (connect_temporal)", title_justify="left")
        conn.add_column("argument", no_wrap=True)
        conn.add_column("value", overflow="fold")
        if sources:
            conn.add_column("from", overflow="fold")
        for name, value in connection["values"].items():
            if name == "rpc_metadata" and not value:
                continue
            row = [name, escape(_text(value))]
            if sources:
                row.append(escape(connection["origins"].get(name, "")))
            conn.add_row(*row)
        console.print(conn)


@config_app.command("vars")
def variables(as_json: JsonOpt = False) -> None:
    """Every environment variable LoomOS reads for its settings: name, key, description."""
    if as_json:
        print(json.dumps([{"name": v.name, "key": v.key, "description": v.description} for v in ENV_VARS]))
        return
    table = Table(title="LoomOS settings variables (over temporal-dev.yaml)", title_justify="left")
    table.add_column("variable", no_wrap=True)
    table.add_column("key", no_wrap=True)
    table.add_column("description", overflow="fold")
    for var in ENV_VARS:
        table.add_row(var.name, var.key, escape(var.description))
    console.print(table)
    console.print(
        "[dim]Beneath them, when connecting, Temporal's own client config is read (temporalio.envconfig): "
        "TEMPORAL_PROFILE, TEMPORAL_CONFIG_FILE, TEMPORAL_API_KEY, TEMPORAL_TLS, TEMPORAL_TLS_*_PATH|_DATA, "
        "TEMPORAL_TLS_SERVER_NAME, TEMPORAL_GRPC_META_*.[/]",
        highlight=False,
    )
