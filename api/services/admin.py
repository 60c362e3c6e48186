"""The admin API's logic: roles, grants and users, over loomos.security.authz.

The route checked the caller's permission in their own team (security:audit to read,
security:admin to change); the checks that depend on the object (security:admin in the grant's
team, the granted role no larger than the granter's, a global security:admin for roles and for
removing users) are PolicyAdmin's, and every one of them is audited like the route's.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

from sqlalchemy import text

from loomos.api.errors import Conflict, Forbidden, InvalidInput, NotFound
from loomos.models import authz as m
from loomos.security.authz.access import Access
from loomos.security.authz.administration import (
    NotPermitted,
    PolicyAdmin,
    PolicyConflict,
    PolicyInputError,
    RoleInfo,
    UnknownRole,
)
from loomos.security.authz.audit import access_event
from loomos.security.authz.authorizer import Authorizer
from loomos.security.authz.engine import Decision
from loomos.security.authz.ledger import QuotaLedger


def _admin(access: Access) -> PolicyAdmin:
    def audit(decision: Decision, what: str) -> None:
        access.recorder.record(access_event(decision, what, access.context))

    return PolicyAdmin(access.authorizer, on_decision=audit)


@contextmanager
def _domain_errors() -> Iterator[None]:
    try:
        yield
    except UnknownRole as err:
        raise InvalidInput(str(err)) from None
    except PolicyInputError as err:
        raise InvalidInput(str(err)) from None
    except NotPermitted as err:
        raise Forbidden(str(err)) from None
    except PolicyConflict as err:
        raise Conflict(str(err)) from None


def _role(info: RoleInfo) -> m.Role:
    return m.Role(
        name=info.name,
        description=info.description,
        builtin=info.builtin,
        permissions=info.permissions,
        rules=info.rules,
        inherits=info.inherits,
        constraints=info.constraints,
    )


# --- roles -------------------------------------------------------------------------------------


def list_roles(authorizer: Authorizer) -> m.RoleList:
    return m.RoleList(
        roles=[_role(r) for r in PolicyAdmin(authorizer).roles()], policy_version=authorizer.version
    )


def get_role(authorizer: Authorizer, name: str) -> m.Role:
    try:
        return _role(PolicyAdmin(authorizer).role_info(name))
    except UnknownRole as err:
        raise NotFound(str(err)) from None


def put_role(access: Access, name: str, body: m.RoleDefinition) -> m.Role:
    with _domain_errors():
        info = _admin(access).put_role(
            name,
            body.permissions,
            description=body.description,
            constraints=body.constraints,
            inherits=body.inherits,
            by=access.identity,
        )
    return _role(info)


def delete_role(access: Access, name: str) -> None:
    with _domain_errors():
        _admin(access).delete_role(name, by=access.identity)


# --- grants ------------------------------------------------------------------------------------


def list_grants(authorizer: Authorizer, subject: str | None, team: str | None) -> m.GrantList:
    grants = [m.Grant(subject=g.subject, role=g.role, team=g.team) for g in authorizer.grants(subject, team)]
    return m.GrantList(grants=grants, policy_version=authorizer.version)


def grant(access: Access, body: m.Grant) -> m.GrantChange:
    with _domain_errors():
        added = _admin(access).grant(body.subject, body.role, body.team, by=access.identity)
    return m.GrantChange(grant=body, changed=added, policy_version=access.authorizer.version)


def revoke(access: Access, body: m.Grant) -> m.GrantChange:
    with _domain_errors():
        removed = _admin(access).revoke(body.subject, body.role, body.team, by=access.identity)
    return m.GrantChange(grant=body, changed=removed, policy_version=access.authorizer.version)


# --- users -------------------------------------------------------------------------------------


def _accounts(authorizer: Authorizer) -> dict[str, str]:
    """Local account states by user name, when authentication's table is there (read only)."""
    try:
        with authorizer.engine.connect() as conn:
            rows = conn.execute(text("SELECT username, disabled, deleted_at FROM authn_users")).all()
    except Exception:  # authentication not installed on this database: no account states
        return {}
    return {
        u: "deleted" if deleted else "disabled" if disabled else "active" for u, disabled, deleted in rows
    }


def list_users(authorizer: Authorizer) -> m.UserList:
    accounts = _accounts(authorizer)
    subjects = sorted(
        set(authorizer.view.grants) | {u for u, state in accounts.items() if state != "deleted"}
    )
    return m.UserList(
        users=[
            m.User(subject=s, roles=authorizer.roles_of(s), account=accounts.get(s, "unknown"))
            for s in subjects
        ]
    )


def remove_user(access: Access, subject: str) -> m.UserRemoval:
    with _domain_errors():
        removed = _admin(access).remove_subject(subject, by=access.identity)
    return m.UserRemoval(subject=subject, grants_removed=removed, policy_version=access.authorizer.version)


def policy_state(authorizer: Authorizer, team: str | None) -> m.PolicyState:
    view = authorizer.view
    usage = QuotaLedger(authorizer.engine).summary(team, datetime.now(UTC)) if team else None
    return m.PolicyState(
        version=view.version, roles=len(view.roles), grants=len(view.all_grants()), usage=usage
    )
