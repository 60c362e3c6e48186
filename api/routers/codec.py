"""The Temporal UI's codec server: POST /api/v1/codec/decode and /encode (loomos.api.services
.codec holds the protocol, the CORS rules and the audit).

Decoding needs jobs:read, encoding jobs:update, in the caller's team (loomos.api.permissions).
Point the UI at `<LoomCtl>/api/v1/codec` (`loomos dev` does: --ui-codec-endpoint). A browser
calls it across origins with the user's LoomCtl credentials, so every answer of these routes,
errors included, carries the CORS headers of an allowed origin, and preflights are answered
here without credentials (browsers send none with them).
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Annotated, Any

from fastapi import APIRouter, Header, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute

from loomos.api.deps import SettingsDep, StoreDep
from loomos.api.errors import LoomCtlError
from loomos.api.permissions import Caller, require, requires
from loomos.api.services import codec as service
from loomos.models.permissions import Permission


class CodecRoute(APIRoute):
    """Adds the CORS headers to every answer, the errors of dependencies (401, 403) included:
    without them the UI could only report a network error."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def with_cors(request: Request) -> Response:
            try:
                response = await handler(request)
            except LoomCtlError as exc:
                response = JSONResponse(status_code=exc.status_code, content={"detail": exc.detail})
            except RequestValidationError as exc:
                errors = [{"loc": list(e.get("loc", [])), "msg": e.get("msg", "")} for e in exc.errors()]
                response = JSONResponse(status_code=422, content={"detail": errors})
            settings = request.app.state.settings
            response.headers.update(service.cors_headers(settings, request.headers.get("origin")))
            return response

        return with_cors


router = APIRouter(prefix="/codec", tags=["codec"], route_class=CodecRoute)
Namespace = Annotated[str | None, Header(alias="X-Namespace", description="the Temporal namespace")]


@router.options("/{operation}", include_in_schema=False)
async def preflight(operation: str, request: Request, settings: SettingsDep) -> Response:
    headers = service.preflight_headers(settings, request.headers.get("origin"))
    if operation not in ("decode", "encode") or headers is None:
        return Response(status_code=403, headers={"Vary": "Origin"})
    return Response(status_code=204, headers=headers)


@router.post(
    "/decode",
    summary="Decrypt Temporal payloads for the Temporal UI (audited)",
    **requires(Permission.JOBS_READ),
)
async def decode(
    body: service.CodecPayloads,
    request: Request,
    caller: Annotated[Caller, require(Permission.JOBS_READ)],
    settings: SettingsDep,
    store: StoreDep,
    namespace: Namespace = None,
) -> dict[str, Any]:
    namespace = service.check_namespace(settings, namespace)
    codec = service.payload_codec(request.app.state, settings)
    return await service.decode(codec, body, namespace, caller.identity, store)


# Encoding makes ciphertext the workers accept (a workflow started or signalled from the UI):
# a write, so jobs:update.
@router.post(
    "/encode", summary="Encrypt Temporal payloads for the Temporal UI", **requires(Permission.JOBS_UPDATE)
)
async def encode(
    body: service.CodecPayloads,
    request: Request,
    settings: SettingsDep,
    namespace: Namespace = None,
) -> dict[str, Any]:
    service.check_namespace(settings, namespace)
    codec = service.payload_codec(request.app.state, settings)
    return await service.encode(codec, body, settings)
