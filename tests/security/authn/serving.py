"""LoomCtl served for real (uvicorn on a free loopback port, its own thread) around an
Authenticator the test made, so SDK and CLI tests speak HTTP to the production app."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Iterator

import uvicorn
from fastapi import FastAPI

from loomos.api.app import create_app
from loomos.security.authn.audit import AuditWriter
from loomos.security.authn.authenticator import Authenticator
from loomos.security.authn.settings import AuthnSettings
from loomos.security.db import open_security_db
from loomos.settings import Settings
from tests.security.authn.conftest import cheap_passwords


def app_with_authn(db_url: str, authn_settings: AuthnSettings | None = None, **authn_kw: object) -> FastAPI:
    settings = Settings.model_validate({"loomdb": {"url": db_url}})
    if authn_settings is not None:
        settings.security.authn = authn_settings
    app = create_app(settings)
    from loomos.loomdb import open_event_store

    app.state.loomdb = open_event_store(db_url)
    app.state.authn = Authenticator(
        settings.security.authn,
        open_security_db(db_url),
        audit=AuditWriter(app.state.loomdb, interval_s=0.01),
        passwords=cheap_passwords(),
        **authn_kw,  # type: ignore[arg-type]
    )
    return app


@contextlib.contextmanager
def serve(app: FastAPI) -> Iterator[str]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=lambda: asyncio.run(server.serve(sockets=[sock])), daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("LoomCtl did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()
        app.state.authn.close()
