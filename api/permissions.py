"""What a route needs: `Depends(require(Permission.JOBS_CREATE))` on every route but /healthz.

The dependency authenticates the caller (loomos.api.identity) and asks the authorizer; a
denial is a 403 whose detail names the missing permission and the team. The permission is
declared in the route's OpenAPI entry, so `loomos api list-endpoints` can show it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from loomos.models.permissions import Permission


def require(permission: Permission) -> Callable[..., Any]:
    raise NotImplementedError("authorization is not wired yet")
