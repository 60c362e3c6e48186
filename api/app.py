"""LoomCtl: the FastAPI app. One router per resource parses requests and answers; the logic is
in loomos.api.services, which raise the domain errors of loomos.api.errors, mapped to HTTP here
in one place. The Temporal client and the event store live on app.state (loomos.api.deps).

Run it with

    uvicorn --factory loomos.api.app:create_app --host 127.0.0.1 --port 8080

(`uvicorn loomos.api.app:app` works too: `app` is built on first access, not at import.)

Every error answers `{"detail": "..."}`; request validation errors keep FastAPI's list of
`{"loc", "msg", "type"}` under `detail`, with `loc` naming the field (`["body", "resources",
"gpu_count"]`). Temporal being unreachable is a 503 that says so.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from temporalio.client import Client
from temporalio.service import RPCError

from loomos.api.body_limit import BodyLimit
from loomos.api.errors import LoomCtlError
from loomos.api.routers import admin, auth, cluster, codec, compliance, events, health, jobs, marketplace
from loomos.api.services.temporal import UNREACHABLE_CODES, TemporalConnection, TemporalUnavailable
from loomos.settings import Settings, load_settings

API_VERSION = "0.1.0"
API_PREFIX = "/api/v1"
log = structlog.get_logger()


def create_app(settings: Settings | None = None, temporal_client: Client | None = None) -> FastAPI:
    """Build LoomCtl. `settings` default to temporal-dev.yaml + environment; pass
    `temporal_client` to share an existing connection (tests, embedding)."""
    settings = settings or load_settings()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Warm the connection in the background so the first request does not pay for it,
        # without making start-up wait for (or fail on) Temporal.
        warm = asyncio.create_task(_warm_up(app.state.temporal_connection))
        try:
            yield
        finally:
            warm.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await warm
            # Access decisions still queued (loomos.api.permissions) reach LoomDB before exit.
            audit = getattr(app.state, "authz_audit", None)
            if audit is not None and hasattr(audit, "close"):
                await asyncio.to_thread(audit.close)

    app = FastAPI(
        title="LoomCtl",
        version=API_VERSION,
        description="LoomOS control API: submit, watch and cancel PyTorch DDP training jobs.",
        lifespan=lifespan,
    )
    # Set here, not in the lifespan, so the app also works under transports that skip it.
    app.state.settings = settings
    app.state.temporal = temporal_client
    app.state.temporal_connection = TemporalConnection(settings, temporal_client, app.state)
    _install_error_handlers(app)
    app.add_middleware(BodyLimit)

    app.include_router(health.router)
    for resource in (jobs, cluster, events, compliance, marketplace, codec, admin):
        app.include_router(resource.router, prefix=API_PREFIX)
    app.include_router(auth.router, prefix=API_PREFIX)
    return app


async def _warm_up(connection: TemporalConnection) -> None:
    try:
        await connection.client()
    except TemporalUnavailable as err:
        log.warning("temporal not reachable yet; will retry on first request", error=str(err))


def _clean_validation_errors(errors: Any) -> list[dict[str, Any]]:
    """FastAPI's errors minus `input`/`ctx` (they echo whole request bodies back), with
    pydantic's 'Value error, ' prefix dropped and unknown fields said plainly."""
    cleaned = []
    for err in errors:
        loc = list(err.get("loc", []))
        msg = str(err.get("msg", ""))
        if err.get("type") == "extra_forbidden":
            msg = "unknown field"
        elif err.get("type") == "json_invalid":
            # FastAPI puts the character offset in `loc`; say it in words instead.
            reason = (err.get("ctx") or {}).get("error", "")
            at = f" at character {loc[1]}" if len(loc) > 1 else ""
            loc, msg = loc[:1], f"not valid JSON{at}: {reason}".rstrip(": ")
        msg = msg.removeprefix("Value error, ")
        cleaned.append({"loc": loc, "msg": msg, "type": err.get("type", "")})
    return cleaned


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse(status_code=422, content={"detail": _clean_validation_errors(exc.errors())})

    @app.exception_handler(LoomCtlError)
    async def _domain(request: Request, exc: LoomCtlError) -> JSONResponse:
        # The services' errors (loomos.api.errors): each class knows its status code.
        return JSONResponse(status_code=exc.status_code, content={"detail": exc.detail})

    @app.exception_handler(RPCError)
    async def _rpc(request: Request, exc: RPCError) -> JSONResponse:
        # Services turn the errors they expect (NOT_FOUND, ...) into domain errors; what is
        # left is Temporal failing under us.
        connection: TemporalConnection = request.app.state.temporal_connection
        if exc.status in UNREACHABLE_CODES:
            return JSONResponse(status_code=503, content={"detail": str(connection.unreachable(exc.message))})
        log.error("temporal call failed", path=request.url.path, status=exc.status.name, error=exc.message)
        return JSONResponse(
            status_code=502,
            content={"detail": f"Temporal rejected the request ({exc.status.name}): {exc.message}"},
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", path=request.url.path)
        return JSONResponse(
            status_code=500, content={"detail": f"internal error ({type(exc).__name__}); see the API log"}
        )


def __getattr__(name: str) -> FastAPI:
    # `uvicorn loomos.api.app:app` support without loading settings when the module is imported.
    if name == "app":
        built = globals()["app"] = create_app()
        return built
    raise AttributeError(name)
