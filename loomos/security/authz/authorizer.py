"""The authorizer of one process: the current PolicyView, kept current by a watcher thread, and
the questions LoomCtl, the workers and authentication ask of it.

    authorizer = shared_authorizer(settings)          # one policy source per process and database
    authorizer.roles_of("alice")                      # {"vision": ["ml_engineer"]}: stored grants
    identity = ...                                    # authentication puts them in Identity.roles
    decision = authorizer.decide(identity.subject, "vision", "jobs:create", identity.roles)

Keeping every process current: each change (loomos.security.authz.administration) bumps the
policy's version row in its own transaction. The watcher reads that one row every
`reload_interval_s` and reloads when it moved; it also reloads everything every
`full_reload_interval_s`, changed or not, so an edit made to the tables by hand (which bumps
nothing) still arrives. A reload builds a new view off the lock and swaps it in.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import structlog
from sqlalchemy.engine import Engine

from loomos.security.authz.engine import Decision, Grant, PolicyView
from loomos.security.authz.policy_files import ANY_TEAM, read_model, read_policy_files
from loomos.security.authz.settings import AuthzSettings, Constraints
from loomos.security.authz.store import PolicyStore

if TYPE_CHECKING:
    from loomos.settings import Settings

log = structlog.get_logger()

PLATFORM_ADMIN = "platform_admin"


class PolicySource:
    """The policy of one database in this process: the current view and the thread that keeps
    it current. Shared by every Authorizer on that database (see shared_authorizer)."""

    def __init__(
        self, engine: Engine, policy_dir: str | None, settings: AuthzSettings, *, watch: bool = True
    ):
        self.engine = engine
        self.reload_interval_s = settings.reload_interval_s
        self.full_reload_interval_s = settings.full_reload_interval_s
        self.store = PolicyStore(engine, read_model(policy_dir))
        self.store.seed_if_empty(read_policy_files(policy_dir))
        self._view = self.store.load()
        self._reload_lock = threading.Lock()
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None
        if watch:
            self._watcher = threading.Thread(target=self._watch, name="authz-policy-watcher", daemon=True)
            self._watcher.start()

    @property
    def view(self) -> PolicyView:
        return self._view

    def reload(self) -> PolicyView:
        """Read the whole policy now and use it from the next decision on."""
        with self._reload_lock:
            view = self.store.load()
            if view.version >= self._view.version:
                self._view = view
            return self._view

    def reload_if_changed(self) -> bool:
        if self.store.version() != self._view.version:
            self.reload()
            return True
        return False

    def _watch(self) -> None:
        last_full = time.monotonic()
        while not self._stop.wait(self.reload_interval_s):
            try:
                if time.monotonic() - last_full >= self.full_reload_interval_s:
                    self.reload()
                    last_full = time.monotonic()
                elif self.reload_if_changed():
                    log.info("authorization policy reloaded", version=self._view.version)
            except Exception as err:  # a database hiccup: keep deciding from the last view
                log.warning("authorization policy reload failed", error=str(err))

    def close(self) -> None:
        self._stop.set()
        if self._watcher is not None:
            self._watcher.join(5)
            self._watcher = None


class Authorizer:
    """Decisions, grants and constraints over a PolicySource, with one settings section's
    overrides and quotas. Thread-safe; cheap to construct."""

    def __init__(self, source: PolicySource, settings: AuthzSettings) -> None:
        self.source = source
        self.settings = settings
        self.engine = source.engine
        self.store = source.store

    @property
    def view(self) -> PolicyView:
        return self.source.view

    @property
    def version(self) -> int:
        return self.source.view.version

    def reload(self) -> PolicyView:
        return self.source.reload()

    def reload_if_changed(self) -> bool:
        return self.source.reload_if_changed()

    def close(self) -> None:
        self.source.close()

    def bootstrap_admins(self) -> None:
        """Grant platform_admin everywhere to the settings' bootstrap admins (if they lack it)."""
        from loomos.security.authz.administration import PolicyAdmin

        for subject in self.settings.bootstrap_admins:
            if PLATFORM_ADMIN not in self.roles_of(subject).get(ANY_TEAM, []):
                PolicyAdmin(self).grant(subject, PLATFORM_ADMIN, ANY_TEAM, by=None)

    # --- decisions -------------------------------------------------------------------------

    def decide(
        self,
        subject: str,
        team: str,
        permission: str,
        claimed: Mapping[str, Sequence[str]] | None = None,
        scope: Sequence[str] | None = None,
    ) -> Decision:
        return self.source.view.decide(subject, team, permission, claimed, scope)

    def allowed(self, subject: str, team: str, permission: str) -> bool:
        return self.decide(subject, team, permission).allowed

    # --- reading ---------------------------------------------------------------------------

    def roles_of(self, subject: str) -> dict[str, list[str]]:
        """Team -> role names stored for `subject` (team "*": every team). Authentication's
        RoleStore interface (loomos.security.authn.roles)."""
        return self.source.view.roles_of(subject)

    def grant_role(self, subject: str, team: str, role: str) -> None:
        """Grant `role` in `team` (idempotent), as LoomOS itself: authentication's RoleStore
        interface, for the dev stack's bootstrap admin. Unknown roles are refused."""
        from loomos.security.authz.administration import PolicyAdmin

        PolicyAdmin(self).grant(subject, role, team, by=None)

    def grants(self, subject: str | None = None, team: str | None = None) -> list[Grant]:
        return [
            g
            for g in self.source.view.all_grants()
            if (subject is None or g.subject == subject) and (team is None or g.team == team)
        ]

    def constraints_for(self, roles: Sequence[str]) -> Constraints:
        """The constraints of holding `roles` (in one team): the most permissive of them, each
        role's database constraints with the operators' overrides (settings) on top. No role:
        nothing to be constrained by (and nothing permitted either)."""
        merged: list[Constraints] = []
        for role in roles:
            definition = self.source.view.roles.get(role)
            if definition is None:
                continue
            data = definition.constraints.model_dump(exclude_none=True)
            override = self.settings.role_constraints.get(role)
            if override is not None:
                data.update(override.model_dump(exclude_none=True))
            merged.append(Constraints.model_validate(data))
        return most_permissive(merged)

    def team_quota(self, team: str) -> Constraints:
        quotas = self.settings.team_quotas
        return quotas.get(team) or quotas.get(ANY_TEAM) or Constraints()


def most_permissive(items: Sequence[Constraints]) -> Constraints:
    """Several roles' constraints as one: a limit only where every role has one (the highest),
    allow-lists joined. Holding a second role never takes anything away."""
    if not items:
        return Constraints()
    out: dict[str, object] = {}
    for name in Constraints.model_fields:
        values = [getattr(c, name) for c in items]
        if any(v is None for v in values):
            continue
        if isinstance(values[0], list):
            out[name] = sorted({x for v in values for x in v})
        else:
            out[name] = max(values)  # type: ignore[type-var]
    return Constraints.model_validate(out)


# --- one per process ---------------------------------------------------------------------------

_sources: dict[tuple[str, str | None], PolicySource] = {}
_sources_lock = threading.Lock()


def open_authorizer(settings: Settings, *, watch: bool = True) -> Authorizer:
    """A new authorizer with a policy source of its own on the settings' database (migrated and
    seeded if need be), its bootstrap admins granted."""
    from loomos.security.db import open_security_db

    authz = settings.security.authz
    source = PolicySource(open_security_db(settings.loomdb.url), authz.policy_dir, authz, watch=watch)
    authorizer = Authorizer(source, authz)
    authorizer.bootstrap_admins()
    return authorizer


def shared_authorizer(settings: Settings, engine: Engine | None = None) -> Authorizer:
    """An authorizer over this process's one policy source for the settings' database (LoomCtl
    and a control worker in one process share it and its watcher thread). `engine`: the
    security database's, if the caller has it open already."""
    from loomos.security.db import open_security_db

    authz = settings.security.authz
    key = (settings.loomdb.url, authz.policy_dir)
    with _sources_lock:
        source = _sources.get(key)
        if source is None:
            engine = engine or open_security_db(settings.loomdb.url)
            source = _sources[key] = PolicySource(engine, authz.policy_dir, authz)
    authorizer = Authorizer(source, authz)
    authorizer.bootstrap_admins()
    return authorizer
