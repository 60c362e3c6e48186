"""Authentication's RoleStore (loomos.security.authn.roles), implemented by authorization:
`roles_of(subject)` (team -> stored roles, "*" for every team) and `grant_role(subject, team,
role)` (as LoomOS itself: the dev stack's admin). Found by authentication at
AUTHZ_ROLE_STORE = "loomos.security.authz.roles:open_role_store".

Removing a user's grants when the user is deleted: `remove_subject(subject)`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from loomos.security.authz.authorizer import Authorizer, shared_authorizer

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from loomos.settings import Settings


class AuthzRoleStore:
    def __init__(self, authorizer: Authorizer) -> None:
        self.authorizer = authorizer

    def roles_of(self, subject: str) -> dict[str, list[str]]:
        return self.authorizer.roles_of(subject)

    def grant_role(self, subject: str, team: str, role: str) -> None:
        self.authorizer.grant_role(subject, team, role)

    def remove_subject(self, subject: str) -> int:
        """The user was deleted: their grants go, and no identity of theirs counts any more."""
        from loomos.security.authz.administration import PolicyAdmin

        return PolicyAdmin(self.authorizer).remove_subject(subject, by=None)


def open_role_store(settings: Settings, engine: Engine) -> AuthzRoleStore:
    return AuthzRoleStore(shared_authorizer(settings, engine))
