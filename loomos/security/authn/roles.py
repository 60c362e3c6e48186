"""The role grants authentication needs to read, and the one grant it makes, as an interface
that authorization (loomos.security.authz, Casbin per team) implements.

Authentication fills `Identity.roles` from `RoleStore.roles_of(subject)` merged with the roles
a directory grants at login (OIDC groups claim, LDAP groups, through `group_roles` in the
settings), and reads `platform_admin` from them for the MFA rule. `loomos dev` grants its
local admin `platform_admin` through `RoleStore.grant_role`.

The implementation is found at AUTHZ_ROLE_STORE ("module:callable", called with the settings
and the security database's engine). Until authorization provides it, `NoRoleStore` answers
no grants and refuses to grant, saying why.

A team of "*" in a grant means every team (a platform_admin is one everywhere).
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import structlog

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from loomos.settings import Settings

log = structlog.get_logger()

AUTHZ_ROLE_STORE = "loomos.security.authz.roles:open_role_store"
ANY_TEAM = "*"
PLATFORM_ADMIN = "platform_admin"


@runtime_checkable
class RoleStore(Protocol):
    def roles_of(self, subject: str) -> Mapping[str, Sequence[str]]:
        """Team -> role names granted to `subject` (a username)."""
        ...

    def grant_role(self, subject: str, team: str, role: str) -> None:
        """Grant `role` to `subject` in `team` (idempotent)."""
        ...


class RoleStoreUnavailable(RuntimeError):
    pass


class NoRoleStore:
    """Stands in while authorization has no role store: nobody holds a stored role."""

    reason = f"no role store at {AUTHZ_ROLE_STORE} (authorization not installed)"

    def roles_of(self, subject: str) -> Mapping[str, Sequence[str]]:
        return {}

    def grant_role(self, subject: str, team: str, role: str) -> None:
        raise RoleStoreUnavailable(f"cannot grant {role} in {team} to {subject}: {self.reason}")


def open_role_store(settings: Settings, engine: Engine) -> RoleStore:
    """Authorization's role store, or NoRoleStore when it does not exist (yet)."""
    module_name, _, attribute = AUTHZ_ROLE_STORE.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        if err.name and module_name.startswith(err.name):
            log.warning("role grants are not available", reason=NoRoleStore.reason)
            return NoRoleStore()
        raise
    factory: Any = getattr(module, attribute)
    return factory(settings, engine)  # type: ignore[no-any-return]


def grants_from_groups(groups: Iterable[str], mapping: Mapping[str, Sequence[str]]) -> dict[str, list[str]]:
    """Team -> roles that a directory's groups give, by `group_roles` ("team:role" strings)."""
    roles: dict[str, list[str]] = {}
    for group in groups:
        for grant in mapping.get(group, ()):
            team, _, role = grant.partition(":")
            if role not in roles.setdefault(team, []):
                roles[team].append(role)
    return roles


def merge_roles(*sources: Mapping[str, Sequence[str]]) -> dict[str, list[str]]:
    merged: dict[str, list[str]] = {}
    for source in sources:
        for team, names in source.items():
            have = merged.setdefault(team, [])
            have.extend(n for n in names if n not in have)
    return merged


def holds(roles: Mapping[str, Sequence[str]], role: str) -> bool:
    return any(role in names for names in roles.values())
