"""One consistent view of the policy (a version of it) and the decisions made from it.

pycasbin is not safe to call from several threads: `enforce` builds its matcher with
`ast.parse` on every call, and on CPython 3.11 concurrent `ast.parse` calls can fail with
`SystemError: AST constructor recursion depth mismatch` (CPython gh-106905); its role
managers and function maps are plain dicts mutated during enforcement too (FastEnforcer's
cache included). LoomCtl answers requests on a thread pool and the workers run activities in
threads, so every call into an Enforcer here holds `PolicyView.lock`. A decision takes tens of
microseconds, so the lock is never held long.

A view never changes after it is built: a reload builds a new one (off the lock) and swaps it in.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import casbin
from casbin.model import Model
from casbin.util import key_match

from loomos.models.permissions import Permission
from loomos.security.authz.policy_files import ANY_TEAM, ROLE_PREFIX, USER_PREFIX, RoleDefinition

ALL_PERMISSIONS: tuple[str, ...] = tuple(p.value for p in Permission)


@dataclass(frozen=True)
class Decision:
    """One authorization decision, with what the audit trail records about it."""

    allowed: bool
    subject: str
    team: str
    permission: str
    roles: tuple[str, ...]  # the subject's roles in the team (stored grants and honoured ones)
    matched_rule: str | None  # "p, role:ml_engineer, jobs:delete" when allowed
    policy_version: int
    reason: str

    @property
    def message(self) -> str:
        """What a 403 says."""
        return self.reason


@dataclass(frozen=True)
class Grant:
    subject: str
    role: str
    team: str


def enforcer_for(
    model_text: str, rules: Iterable[Sequence[str]] = (), adapter: object = None
) -> casbin.Enforcer:
    """An Enforcer of the model; its rules from `adapter` (loaded now) or else `rules`."""
    model = Model()
    model.load_model_from_text(model_text)
    enforcer = casbin.Enforcer(model, adapter)
    if adapter is None:
        p_rules = [list(r[1:]) for r in rules if r[0] == "p"]
        g_rules = [list(r[1:]) for r in rules if r[0] == "g"]
        if p_rules:
            enforcer.add_policies(p_rules)
        if g_rules:
            enforcer.add_grouping_policies(g_rules)
    return enforcer


def _in_scope(permission: str, scope: Sequence[str]) -> bool:
    return any(key_match(permission, allowed) for allowed in scope)


@dataclass
class PolicyView:
    """The policy at one version: a Casbin enforcer over its rules, the roles that exist, the
    grants by subject and the revocations, all read in one pass."""

    version: int
    enforcer: casbin.Enforcer
    roles: dict[str, RoleDefinition]
    grants: dict[str, dict[str, list[str]]]  # subject -> team -> roles (stored grants)
    revoked: dict[str, set[tuple[str, str]]]  # subject -> {(team, role)}; ("*", "*"): removed
    lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def build(
        cls,
        version: int,
        enforcer: casbin.Enforcer,
        roles: Mapping[str, RoleDefinition],
        revocations: Iterable[tuple[str, str, str]],
    ) -> PolicyView:
        """A view over an enforcer that has loaded its rules (through the database adapter, or
        from any list of rows: `enforcer_for`)."""
        enforcer.add_named_domain_matching_func("g", key_match)
        grants: dict[str, dict[str, list[str]]] = {}
        for who, role, team, *_ in enforcer.get_grouping_policy():
            if who.startswith(USER_PREFIX):
                names = grants.setdefault(who.removeprefix(USER_PREFIX), {}).setdefault(team, [])
                names.append(role.removeprefix(ROLE_PREFIX))
        revoked: dict[str, set[tuple[str, str]]] = {}
        for subject, team, role in revocations:
            revoked.setdefault(subject, set()).add((team, role))
        return cls(version, enforcer, dict(roles), grants, revoked)

    # --- reading ---------------------------------------------------------------------------

    def roles_of(self, subject: str) -> dict[str, list[str]]:
        """Team -> roles stored for `subject` ("*": every team)."""
        return {team: list(names) for team, names in self.grants.get(subject, {}).items()}

    def honoured(self, subject: str, claimed: Mapping[str, Sequence[str]], team: str) -> list[str]:
        """The roles an identity carries for `team` (its own and "*") that still count: roles
        that exist and were not revoked from the subject since (a removed user's count none)."""
        revoked = self.revoked.get(subject, set())
        if (ANY_TEAM, "*") in revoked:
            return []
        out = []
        for scope in (team, ANY_TEAM):
            for role in claimed.get(scope, ()):
                if role in self.roles and (scope, role) not in revoked and role not in out:
                    out.append(role)
        return out

    # --- deciding --------------------------------------------------------------------------

    def decide(
        self,
        subject: str,
        team: str,
        permission: str,
        claimed: Mapping[str, Sequence[str]] | None = None,
        scope: Sequence[str] | None = None,
    ) -> Decision:
        """May the identity `subject`, carrying the roles `claimed` (team -> roles, as
        authentication established them), use `permission` in `team`? Narrowed by an API
        token's `scope`. Team "*" asks about every team at once (only roles held in "*").

        The roles come from the identity, not straight from the stored grants: authentication
        fills them from `roles_of` plus a directory's groups, and withholds platform_admin
        without a recent MFA; deciding from the store would undo that. What the store adds is
        the revocations: a role revoked (or a user removed) since the identity was made stops
        counting at once."""
        roles = tuple(self.honoured(subject, claimed or {}, team))
        ok, explain = False, []
        with self.lock:
            for role in roles:
                ok, explain = self.enforcer.enforce_ex(ROLE_PREFIX + role, team, permission)
                if ok:
                    break
        if not ok:
            why = "no role" if not roles else f"roles {', '.join(roles)}"
            return Decision(
                False, subject, team, permission, roles, None, self.version,
                f"missing permission {permission} in team {team} ({why})",
            )  # fmt: skip
        rule = "p, " + ", ".join(explain) if explain else None
        if scope is not None and not _in_scope(permission, scope):
            return Decision(
                False, subject, team, permission, roles, rule, self.version,
                f"missing permission {permission} in team {team} (not in the API token's scope)",
            )  # fmt: skip
        return Decision(True, subject, team, permission, roles, rule, self.version, "allowed")

    def role_permissions(self, role: str) -> set[str]:
        """The catalog permissions `role` holds, its inherited ones included."""
        if role not in self.roles:
            return set()
        with self.lock:
            return {p for p in ALL_PERMISSIONS if self.enforcer.enforce(ROLE_PREFIX + role, ANY_TEAM, p)}

    def direct_rules(self, role: str) -> list[str]:
        """The permission patterns written for `role` itself (not inherited)."""
        with self.lock:
            return [rule[1] for rule in self.enforcer.get_filtered_policy(0, ROLE_PREFIX + role)]

    def inherits(self, role: str) -> list[str]:
        with self.lock:
            rows = self.enforcer.get_filtered_grouping_policy(0, ROLE_PREFIX + role)
        return [r[1].removeprefix(ROLE_PREFIX) for r in rows]

    def permissions_of(
        self,
        subject: str,
        team: str,
        claimed: Mapping[str, Sequence[str]] | None = None,
        scope: Sequence[str] | None = None,
    ) -> set[str]:
        return {p for p in ALL_PERMISSIONS if self.decide(subject, team, p, claimed, scope).allowed}

    def all_grants(self) -> list[Grant]:
        return [
            Grant(subject, role, team)
            for subject, teams in sorted(self.grants.items())
            for team, names in sorted(teams.items())
            for role in names
        ]
