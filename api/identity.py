"""Who is calling: the FastAPI dependency that turns a request's credentials (a bearer OIDC
token, an API token, a session token or cookie) into an Identity, or answers 401.

Routes declare what they need with loomos.api.permissions.require(...), which depends on this.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from loomos.api.errors import LoomCtlError
from loomos.models.identity import Identity


class NotAuthenticated(LoomCtlError):
    """No credentials, or credentials that are not (or no longer) valid (401)."""

    status_code = 401


async def get_identity(request: Request) -> Identity:
    raise NotAuthenticated("not logged in: authentication is not wired yet")


IdentityDep = Annotated[Identity, Depends(get_identity)]
