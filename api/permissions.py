"""What a route needs: every route but /healthz declares one permission.

    @router.get("/status", **requires(Permission.CLUSTER_READ))
    async def cluster_status(...): ...

    @router.post("", **requires(Permission.JOBS_CREATE))
    async def submit_job(caller: Annotated[Caller, require(Permission.JOBS_CREATE)], ...): ...

`requires(...)` puts the check in the route's dependencies and the permission in its OpenAPI
entry (`x-required-permission`), so clients, `/docs` and the tests can read it from the route.
A route that needs the caller (its identity, further checks on the object it touches) also
takes `require(...)` as a parameter: FastAPI runs the same dependency once per request.

The check authenticates the caller (loomos.api.identity.get_identity, 401 without
credentials), then asks the authorizer for (subject, team, permission) with the identity's
roles, narrowed by an API token's scope. A denial is a 403 whose detail names the permission
and the team: "missing permission jobs:create in team vision (roles data_scientist)". Every
decision, allowed or denied, becomes a LoomDB event through a batching writer, so the request
does not wait for the disk.
"""

from __future__ import annotations

import asyncio
import functools
import threading
from dataclasses import dataclass
from typing import Any

from fastapi import Depends, Request
from fastapi.routing import APIRoute

from loomos.api.deps import get_event_store
from loomos.api.errors import Forbidden, ServiceUnavailable
from loomos.api.identity import get_identity
from loomos.models.identity import Identity
from loomos.models.permissions import Permission
from loomos.security.authz.access import Access
from loomos.security.authz.audit import AccessContext
from loomos.security.authz.authorizer import Authorizer, shared_authorizer
from loomos.security.authz.engine import Decision

__all__ = ["Caller", "Forbidden", "require", "required_permission", "requires"]

OPENAPI_KEY = "x-required-permission"
_open_lock = threading.Lock()


@dataclass
class Caller:
    """The authenticated, authorized caller of a route."""

    identity: Identity
    access: Access
    decision: Decision  # the route's own check

    @property
    def subject(self) -> str:
        return self.identity.subject

    @property
    def team(self) -> str:
        return self.identity.team

    def allowed(
        self, permission: str, team: str | None = None, obj: str = "", *, record_denial: bool = True
    ) -> bool:
        return self.access.check(permission, team, obj, record_denial=record_denial).allowed

    def require(self, permission: str, team: str | None = None, obj: str = "") -> Decision:
        decision = self.access.check(permission, team, obj)
        if not decision.allowed:
            raise Forbidden(decision.message)
        return decision


def _authorizer(request: Request) -> Authorizer:
    state = request.app.state
    found = getattr(state, "authorizer", None)
    if found is not None:
        return found
    with _open_lock:
        found = getattr(state, "authorizer", None)
        if found is None:
            settings = state.settings
            try:
                found = shared_authorizer(settings, getattr(state, "security_db", None))
            except Exception as exc:  # unreachable Postgres, unwritable file: fail closed, say which
                where = settings.loomdb.url.split("@")[-1]
                raise ServiceUnavailable(
                    f"the authorization policy at {where} is unavailable: {exc}"
                ) from None
            state.authorizer = found
    return found


def _recorder(request: Request) -> Any:
    state = request.app.state
    found = getattr(state, "authz_audit", None)
    if found is not None:
        return found
    from loomos.security.authn.audit import AuditWriter

    store = get_event_store(request)
    with _open_lock:
        found = getattr(state, "authz_audit", None)
        if found is None:
            found = state.authz_audit = AuditWriter(store)
    return found


async def get_authorizer(request: Request) -> Authorizer:
    """The app's authorizer (opened on first use: migrations and seeding run off the loop)."""
    found = getattr(request.app.state, "authorizer", None)
    return found if found is not None else await asyncio.to_thread(_authorizer, request)


async def get_access(request: Request, identity: Identity) -> Access:
    authorizer = await get_authorizer(request)
    recorder = getattr(request.app.state, "authz_audit", None) or await asyncio.to_thread(_recorder, request)
    context = AccessContext(
        source_ip=identity.source_ip or (request.client.host if request.client else None),
        user_agent=identity.user_agent,
        request_id=identity.request_id or getattr(request.state, "request_id", None),
        session_id=identity.session_id,
        auth_method=str(identity.auth_method.value),
        route=f"{request.method} {request.url.path}"[:300],
    )
    return Access(authorizer, identity, recorder, context)


@functools.cache
def _dependency(permission: str) -> Any:
    async def authorize(request: Request, identity: Identity = Depends(get_identity)) -> Caller:
        access = await get_access(request, identity)
        decision = access.check(permission, identity.team, obj=f"{request.method} {request.url.path}")
        if not decision.allowed:
            raise Forbidden(decision.message)
        return Caller(identity, access, decision)

    authorize.__name__ = f"require_{permission.replace(':', '_')}"
    authorize.required_permission = permission  # type: ignore[attr-defined]
    return authorize


def require(permission: Permission | str) -> Any:
    """The dependency that authorizes `permission` in the caller's team; it answers a Caller."""
    return Depends(_dependency(Permission(permission).value))


def requires(permission: Permission | str) -> dict[str, Any]:
    """Route decorator arguments: the check, and the permission in the OpenAPI entry."""
    value = Permission(permission).value
    return {"dependencies": [require(value)], "openapi_extra": {OPENAPI_KEY: value}}


def required_permission(route: APIRoute) -> str | None:
    """The permission a route declares (None: a public route, such as /healthz)."""
    extra = route.openapi_extra or {}
    return extra.get(OPENAPI_KEY)
