"""`loomos api`: serve LoomCtl, the REST API (OpenAPI at /docs). A production entry point: run any
number of copies, on any hosts, behind a load balancer, against one Temporal cluster
(TEMPORAL_ADDRESS) and one LoomDB (LOOMOS_DB_URL)."""

from __future__ import annotations

from typing import Annotated

import typer

from loomos.cli.errors import reported_errors
from loomos.settings import ConfigError, Settings, load_settings

api_app = typer.Typer(add_completion=False)


def settings_with(**overrides: object) -> Settings:
    """temporal-dev.yaml + environment, then the command line's options (dotted keys)."""
    settings = load_settings()
    data = settings.model_dump()
    for dotted, value in overrides.items():
        if value is None:
            continue
        section, key = dotted.split("__", 1)
        data[section][key] = value
    try:
        return Settings.model_validate(data)
    except Exception as err:  # pydantic's message names the option's key
        raise ConfigError(str(err).replace("\n", " ")) from None


@api_app.command("api", help="Serve LoomCtl, the REST API (OpenAPI at /docs).")
def api(
    host: Annotated[str | None, typer.Option(help="Interface to listen on (api.host).")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on (api.port).")] = None,
    tls_cert: Annotated[
        str | None, typer.Option(help="Serve HTTPS, TLS 1.3 only: certificate chain, PEM (api.tls_cert).")
    ] = None,
    tls_key: Annotated[str | None, typer.Option(help="Its private key, PEM (api.tls_key).")] = None,
) -> None:
    import uvicorn

    from loomos.api.app import create_app
    from loomos.devstack.stack import StackError, port_is_free
    from loomos.security.crypto.tls import TLSConfigError, uvicorn_tls_options
    from loomos.structured_logging import configure_logging

    with reported_errors():
        settings = settings_with(api__host=host, api__port=port, api__tls_cert=tls_cert, api__tls_key=tls_key)
        try:
            tls = uvicorn_tls_options(settings.api.tls_cert, settings.api.tls_key, settings.api.hsts)
        except TLSConfigError as err:
            raise ConfigError(str(err)) from None
        if not port_is_free(settings.api.host, settings.api.port):
            raise StackError(
                f"api.port: port {settings.api.port} on {settings.api.host} is already in use "
                "(choose another with --port or LOOMOS_API_PORT)"
            )
        configure_logging(settings.logs.format)
        uvicorn.run(
            create_app(settings), host=settings.api.host, port=settings.api.port,
            log_level="warning", log_config=None, **tls,
        )  # fmt: skip
