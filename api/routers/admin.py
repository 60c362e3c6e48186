"""The authorization admin API (`/api/v1/admin`): roles, role grants per team, users.

Reading is security:audit, changing is security:admin (in the caller's team for the route; the
service then checks the grant's own team, or every team for roles and user removal). A grant of
a role that does not exist is a 400 naming it; one the caller may not make is a 403 saying what
they lack; changing a built-in role or deleting one still in use is a 409.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query

from loomos.api.permissions import Caller, require, requires
from loomos.api.services import admin
from loomos.models import authz as m
from loomos.models.permissions import Permission
from loomos.security.authz.settings import ROLE_NAME_PATTERN, SUBJECT_PATTERN, TEAM_NAME_PATTERN

router = APIRouter(prefix="/admin", tags=["admin"])

AUDIT = Permission.SECURITY_AUDIT
ADMIN = Permission.SECURITY_ADMIN
RoleName = Annotated[str, Path(pattern=ROLE_NAME_PATTERN)]
Subject = Annotated[str, Path(pattern=SUBJECT_PATTERN)]
_TEAM_OR_ALL = m.TEAM_OR_ALL


@router.get(
    "/roles", response_model=m.RoleList, summary="Every role: permissions, constraints", **requires(AUDIT)
)
async def list_roles(caller: Annotated[Caller, require(AUDIT)]) -> m.RoleList:
    return admin.list_roles(caller.access.authorizer)


@router.get("/roles/{name}", response_model=m.Role, summary="One role", **requires(AUDIT))
async def get_role(name: RoleName, caller: Annotated[Caller, require(AUDIT)]) -> m.Role:
    return admin.get_role(caller.access.authorizer, name)


@router.put(
    "/roles/{name}",
    response_model=m.Role,
    summary="Define or redefine a custom role (its permissions within your own)",
    **requires(ADMIN),
)
async def put_role(
    name: RoleName, body: m.RoleDefinition, caller: Annotated[Caller, require(ADMIN)]
) -> m.Role:
    return admin.put_role(caller.access, name, body)


@router.delete(
    "/roles/{name}", status_code=204, summary="Delete a custom role nobody holds", **requires(ADMIN)
)
async def delete_role(name: RoleName, caller: Annotated[Caller, require(ADMIN)]) -> None:
    admin.delete_role(caller.access, name)


@router.get("/grants", response_model=m.GrantList, summary="Role grants, by user and team", **requires(AUDIT))
async def list_grants(
    caller: Annotated[Caller, require(AUDIT)],
    subject: Annotated[str | None, Query(pattern=SUBJECT_PATTERN)] = None,
    team: Annotated[str | None, Query(pattern=_TEAM_OR_ALL)] = None,
) -> m.GrantList:
    return admin.list_grants(caller.access.authorizer, subject, team)


@router.post(
    "/grants",
    status_code=201,
    response_model=m.GrantChange,
    summary="Grant a role to a user in a team (* for every team)",
    responses={400: {"description": "unknown role"}, 403: {"description": "not yours to grant"}},
    **requires(ADMIN),
)
async def grant(body: m.Grant, caller: Annotated[Caller, require(ADMIN)]) -> m.GrantChange:
    return admin.grant(caller.access, body)


@router.delete("/grants", response_model=m.GrantChange, summary="Revoke a role grant", **requires(ADMIN))
async def revoke(
    caller: Annotated[Caller, require(ADMIN)],
    subject: Annotated[str, Query(pattern=SUBJECT_PATTERN)],
    role: Annotated[str, Query(pattern=ROLE_NAME_PATTERN)],
    team: Annotated[str, Query(pattern=_TEAM_OR_ALL)],
) -> m.GrantChange:
    return admin.revoke(caller.access, m.Grant(subject=subject, role=role, team=team))


@router.get(
    "/users", response_model=m.UserList, summary="Users, their grants and accounts", **requires(AUDIT)
)
async def list_users(caller: Annotated[Caller, require(AUDIT)]) -> m.UserList:
    return admin.list_users(caller.access.authorizer)


@router.delete(
    "/users/{subject}/grants",
    response_model=m.UserRemoval,
    summary="A user is gone: remove every grant, and stop honouring roles their identities carry",
    **requires(ADMIN),
)
async def remove_user(subject: Subject, caller: Annotated[Caller, require(ADMIN)]) -> m.UserRemoval:
    return admin.remove_user(caller.access, subject)


@router.get(
    "/policy",
    response_model=m.PolicyState,
    summary="The policy's version, and a team's usage",
    **requires(AUDIT),
)
async def policy_state(
    caller: Annotated[Caller, require(AUDIT)],
    team: Annotated[str | None, Query(pattern=TEAM_NAME_PATTERN)] = None,
) -> m.PolicyState:
    authorizer = caller.access.authorizer
    if team is not None and team != caller.team:
        caller.require(AUDIT, team, obj=f"usage of team {team}")
    return admin.policy_state(authorizer, team)
