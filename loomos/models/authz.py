"""The admin API's bodies (`/api/v1/admin/...`): roles, grants, users, the policy's state.
LoomCtl declares them and the CLI (`loomos roles|grants|users`) parses them."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from loomos.security.authz.settings import ROLE_NAME_PATTERN, SUBJECT_PATTERN, TEAM_NAME_PATTERN, Constraints

TEAM_OR_ALL = rf"^(\*|{TEAM_NAME_PATTERN.strip('^$')})$"


class Role(BaseModel):
    name: str
    description: str
    builtin: bool
    permissions: list[str] = Field(description="effective: inherited ones included")
    rules: list[str] = Field(description="permission patterns written for the role itself")
    inherits: list[str]
    constraints: Constraints = Field(description="with the operators' overrides (settings) applied")


class RoleList(BaseModel):
    roles: list[Role]
    policy_version: int


class RoleDefinition(BaseModel):
    """PUT /admin/roles/{name}: define or redefine a custom role."""

    model_config = ConfigDict(extra="forbid")

    permissions: list[str] = Field(default_factory=list, max_length=100)
    description: str = Field("", max_length=500)
    constraints: Constraints = Field(default_factory=Constraints)
    inherits: list[str] = Field(default_factory=list, max_length=20)


class Grant(BaseModel):
    model_config = ConfigDict(extra="forbid")

    subject: str = Field(pattern=SUBJECT_PATTERN)
    role: str = Field(pattern=ROLE_NAME_PATTERN)
    team: str = Field(pattern=TEAM_OR_ALL, description='a team, or "*" for every team')


class GrantList(BaseModel):
    grants: list[Grant]
    policy_version: int


class GrantChange(BaseModel):
    grant: Grant
    changed: bool = Field(description="False: it was already granted (or not granted, for a revocation)")
    policy_version: int


class User(BaseModel):
    subject: str
    roles: dict[str, list[str]] = Field(description="team -> roles stored for the user")
    account: str = Field(description="active, disabled, deleted, or unknown (no local account record)")


class UserList(BaseModel):
    users: list[User]


class UserRemoval(BaseModel):
    subject: str
    grants_removed: int
    policy_version: int


class PolicyState(BaseModel):
    version: int
    roles: int
    grants: int
    usage: dict[str, Any] | None = None
