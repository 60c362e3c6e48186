"""Changing the policy, with the checks that keep it an allow-list nobody can climb out of:

- a grant (or revocation) in a team needs `security:admin` in that team (team "*": a global
  `security:admin`), and every permission of the role must be one the granter holds there:
  nobody hands out (or takes from others) more than they have;
- only roles that exist can be granted (UnknownRole, which the API answers 400, names it);
- defining or deleting a role needs a global `security:admin`, and the same subset rule for
  the role's permissions; built-in roles are read-only (their constraints are tuned through
  `security.authz.role_constraints`);
- a revocation is remembered (authz_revocations), so an identity that still carries the role
  (a session, a queued job's header) is not honoured for it; removing a user revokes all.

`by=None` is LoomOS itself (seeding, bootstrap admins, authentication's dev admin): unchecked.
Every check is handed to `on_decision` (the API audits it). Each change is one transaction that
also moves the policy version, then this process reloads at once; the others within their
reload interval.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from loomos.models.identity import Identity
from loomos.models.permissions import Permission
from loomos.security.authz.authorizer import Authorizer
from loomos.security.authz.engine import Decision
from loomos.security.authz.policy_files import (
    ANY_TEAM,
    ROLE_PREFIX,
    USER_PREFIX,
    RoleDefinition,
    is_permission_pattern,
)
from loomos.security.authz.settings import (
    ROLE_NAME_PATTERN,
    SUBJECT_PATTERN,
    TEAM_NAME_PATTERN,
    Constraints,
)

_ROLE = re.compile(ROLE_NAME_PATTERN)
_TEAM = re.compile(TEAM_NAME_PATTERN)
_SUBJECT = re.compile(SUBJECT_PATTERN)


class PolicyInputError(ValueError):
    """A name, team or permission that is not valid (400)."""


class UnknownRole(PolicyInputError):
    def __init__(self, role: str) -> None:
        super().__init__(f"unknown role {role!r}")
        self.role = role


class NotPermitted(PermissionError):
    """The actor may not make this change (403); the message says what was missing."""


class PolicyConflict(RuntimeError):
    """The change contradicts the policy's state: a built-in role, a role still in use (409)."""


@dataclass(frozen=True)
class RoleInfo:
    name: str
    description: str
    builtin: bool
    permissions: list[str]  # effective, inherited ones included
    rules: list[str]  # as written for the role itself
    inherits: list[str]
    constraints: Constraints


def check_subject(subject: str) -> str:
    if not _SUBJECT.match(subject):
        raise PolicyInputError(f"{subject!r} is not a valid user name")
    return subject


def check_team(team: str) -> str:
    if team != ANY_TEAM and not _TEAM.match(team):
        raise PolicyInputError(f"{team!r} is not a team name (or * for every team)")
    return team


def check_role_name(role: str) -> str:
    if not _ROLE.match(role):
        raise PolicyInputError(f"{role!r} is not a valid role name ({ROLE_NAME_PATTERN})")
    return role


class PolicyAdmin:
    def __init__(
        self, authorizer: Authorizer, on_decision: Callable[[Decision, str], None] | None = None
    ) -> None:
        self.authorizer = authorizer
        self.on_decision = on_decision

    # --- checks ----------------------------------------------------------------------------

    def _require(self, by: Identity, team: str, permission: str, what: str) -> None:
        decision = self.authorizer.decide(by.subject, team, permission, by.roles, by.permissions)
        if self.on_decision is not None:
            self.on_decision(decision, what)
        if not decision.allowed:
            raise NotPermitted(f"{what}: {decision.reason}")

    def _require_superset(self, by: Identity, team: str, permissions: set[str], what: str) -> None:
        held = self.authorizer.view.permissions_of(by.subject, team, by.roles, by.permissions)
        missing = sorted(permissions - held)
        if missing:
            raise NotPermitted(
                f"{what}: it carries {', '.join(missing)}, which you do not hold in team {team}"
            )

    def _check_grant(self, subject: str, role: str, team: str, by: Identity | None, verb: str) -> None:
        check_subject(subject)
        check_team(team)
        check_role_name(role)
        self.authorizer.reload_if_changed()
        if role not in self.authorizer.view.roles:
            raise UnknownRole(role)
        if by is not None:
            what = f"{verb} {role} to {subject} in team {team}"
            self._require(by, team, Permission.SECURITY_ADMIN, what)
            self._require_superset(by, team, self.authorizer.view.role_permissions(role), what)

    # --- grants ----------------------------------------------------------------------------

    def grant(self, subject: str, role: str, team: str, *, by: Identity | None) -> bool:
        """Grant `role` to `subject` in `team`; False when it was already granted."""
        self._check_grant(subject, role, team, by, "grant")
        with self.authorizer.store.change(by.subject if by else None) as change:
            if not change.role_exists(role):  # deleted meanwhile
                raise UnknownRole(role)
            added = change.add_rule("g", [USER_PREFIX + subject, ROLE_PREFIX + role, team])
            change.forget_revocation(subject, team, role)
        self.authorizer.reload()
        return added

    def revoke(self, subject: str, role: str, team: str, *, by: Identity | None) -> bool:
        """Take `role` in `team` from `subject`; False when no stored grant was there (the
        revocation is recorded anyway: an identity carrying the role stops counting)."""
        self._check_grant(subject, role, team, by, "revoke")
        with self.authorizer.store.change(by.subject if by else None) as change:
            removed = change.remove_rule("g", [USER_PREFIX + subject, ROLE_PREFIX + role, team])
            change.record_revocation(subject, team, role)
        self.authorizer.reload()
        return removed

    def remove_subject(self, subject: str, *, by: Identity | None) -> int:
        """A user is gone: every grant of theirs goes, and no identity of theirs counts any
        more (until someone grants them a role again). The number of grants removed."""
        check_subject(subject)
        if by is not None:
            self._require(by, ANY_TEAM, Permission.SECURITY_ADMIN, f"remove user {subject}")
        with self.authorizer.store.change(by.subject if by else None) as change:
            rows = change.rules("g", 0, USER_PREFIX + subject)
            change.remove_rules("g", 0, USER_PREFIX + subject)
            change.record_revocation(subject, ANY_TEAM, "*")
        self.authorizer.reload()
        return len(rows)

    # --- roles -----------------------------------------------------------------------------

    def role_info(self, name: str) -> RoleInfo:
        view = self.authorizer.view
        definition = view.roles.get(name)
        if definition is None:
            raise UnknownRole(name)
        return RoleInfo(
            name=name,
            description=definition.description,
            builtin=self._builtin(name),
            permissions=sorted(view.role_permissions(name)),
            rules=view.direct_rules(name),
            inherits=view.inherits(name),
            constraints=self.authorizer.constraints_for([name]),
        )

    def roles(self) -> list[RoleInfo]:
        return [self.role_info(name) for name in sorted(self.authorizer.view.roles)]

    def _builtin(self, name: str) -> bool:
        from sqlalchemy import select

        from loomos.security.authz import tables as t

        with self.authorizer.engine.connect() as conn:
            return bool(conn.execute(select(t.roles.c.builtin).where(t.roles.c.name == name)).scalar())

    def put_role(
        self,
        name: str,
        permissions: Sequence[str],
        *,
        description: str = "",
        constraints: Constraints | None = None,
        inherits: Sequence[str] = (),
        by: Identity | None,
    ) -> RoleInfo:
        """Define (or redefine) a custom role."""
        check_role_name(name)
        bad = [p for p in permissions if not is_permission_pattern(p)]
        if bad:
            raise PolicyInputError(f"unknown permission {', '.join(map(repr, bad))}")
        self.authorizer.reload_if_changed()
        view = self.authorizer.view
        for parent in inherits:
            if parent not in view.roles:
                raise UnknownRole(parent)
            if parent == name or name in self._ancestors(parent):
                raise PolicyInputError(f"role {name} cannot inherit {parent}: that would be a cycle")
        if name in view.roles and self._builtin(name):
            raise PolicyConflict(
                f"role {name} is built in; tune its limits with security.authz.role_constraints"
            )
        effective: set[str] = set()
        for pattern in permissions:
            effective |= {p.value for p in Permission if _covers(pattern, p.value)}
        for parent in inherits:
            effective |= view.role_permissions(parent)
        if by is not None:
            what = f"define role {name}"
            self._require(by, ANY_TEAM, Permission.SECURITY_ADMIN, what)
            self._require_superset(by, ANY_TEAM, effective, what)
        role = RoleDefinition(name, description, constraints or Constraints())
        with self.authorizer.store.change(by.subject if by else None) as change:
            change.put_role(role)
            change.remove_rules("p", 0, ROLE_PREFIX + name)
            for row in change.rules("g", 0, ROLE_PREFIX + name):
                change.remove_rule("g", row)
            for pattern in dict.fromkeys(permissions):
                change.add_rule("p", [ROLE_PREFIX + name, pattern])
            for parent in dict.fromkeys(inherits):
                change.add_rule("g", [ROLE_PREFIX + name, ROLE_PREFIX + parent, ANY_TEAM])
        self.authorizer.reload()
        return self.role_info(name)

    def delete_role(self, name: str, *, by: Identity | None) -> None:
        check_role_name(name)
        self.authorizer.reload_if_changed()
        view = self.authorizer.view
        if name not in view.roles:
            raise UnknownRole(name)
        if self._builtin(name):
            raise PolicyConflict(f"role {name} is built in and cannot be deleted")
        if by is not None:
            self._require(by, ANY_TEAM, Permission.SECURITY_ADMIN, f"delete role {name}")
            self._require_superset(by, ANY_TEAM, view.role_permissions(name), f"delete role {name}")
        holders = [g for g in view.all_grants() if g.role == name]
        heirs = [r for r in view.roles if name in view.inherits(r)]
        if holders or heirs:
            who = [f"{g.subject} in {g.team}" for g in holders[:5]] + [f"role {r}" for r in heirs]
            raise PolicyConflict(
                f"role {name} is still granted or inherited ({', '.join(who)}); revoke it first"
            )
        with self.authorizer.store.change(by.subject if by else None) as change:
            change.remove_rules("p", 0, ROLE_PREFIX + name)
            change.remove_rules("g", 0, ROLE_PREFIX + name)
            change.delete_role(name)
        self.authorizer.reload()

    def _ancestors(self, role: str) -> set[str]:
        seen: set[str] = set()
        todo = [role]
        while todo:
            for parent in self.authorizer.view.inherits(todo.pop()):
                if parent not in seen:
                    seen.add(parent)
                    todo.append(parent)
        return seen


def _covers(pattern: str, permission: str) -> bool:
    from casbin.util import key_match

    return bool(key_match(permission, pattern))
