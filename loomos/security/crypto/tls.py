"""TLS for LoomCtl (`loomos api` with api.tls_cert and api.tls_key): TLS 1.3 only, and HSTS.

TLS 1.3 only, because every client LoomOS has (httpx, browsers, the Temporal UI's fetch) speaks
it, and it removes the legacy cipher and renegotiation choices 1.2 leaves to configure: its
suites are all AEAD with forward secrecy (TLS_AES_256_GCM_SHA384, TLS_CHACHA20_POLY1305_SHA256,
TLS_AES_128_GCM_SHA256). HSTS tells browsers to use https only for this host from now on; it
is sent only over HTTPS (over plain HTTP it would be ignored, and it must not be sent by a
server that may be reached without TLS).

Standard library only (ssl): `loomos api` needs no extra package for it.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

HSTS_VALUE = "max-age=31536000; includeSubDomains"


class TLSConfigError(ValueError):
    """A certificate or key LoomCtl cannot serve with; the message names the setting."""


def server_ssl_context(cert_file: str | Path, key_file: str | Path) -> ssl.SSLContext:
    """A server context that accepts TLS 1.3 only, with this certificate chain and key."""
    for key, path in (("api.tls_cert", cert_file), ("api.tls_key", key_file)):
        try:
            Path(path).open("rb").close()
        except OSError as exc:
            raise TLSConfigError(f"{key}: cannot read {path} ({exc.strerror})") from None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_3
    try:
        context.load_cert_chain(str(cert_file), str(key_file))
    except ssl.SSLError as exc:
        raise TLSConfigError(
            f"api.tls_cert / api.tls_key: {cert_file} and {key_file} are not a PEM certificate and its "
            f"private key ({exc.reason or exc})"
        ) from None
    return context


def uvicorn_tls_options(tls_cert: str | None, tls_key: str | None, hsts: bool = True) -> dict[str, Any]:
    """uvicorn.run's keyword arguments for HTTPS (none without a certificate): the context above
    through ssl_context_factory, and HSTS on every answer through uvicorn's default headers."""
    if not tls_cert and not tls_key:
        return {}
    if not (tls_cert and tls_key):
        missing = "api.tls_key" if tls_cert else "api.tls_cert"
        raise TLSConfigError(f"{missing}: missing; HTTPS needs api.tls_cert and api.tls_key together")
    context = server_ssl_context(tls_cert, tls_key)  # checked now: a bad file fails at start
    options: dict[str, Any] = {
        "ssl_certfile": tls_cert,
        "ssl_keyfile": tls_key,
        "ssl_context_factory": lambda config, default: context,
    }
    if hsts:
        options["headers"] = [("Strict-Transport-Security", HSTS_VALUE)]
    return options
