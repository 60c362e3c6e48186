"""The policy in the database: seeded once from policies/, stored through the Casbin SQLAlchemy
adapter, and reloaded by every process (enforcer) when its version moves, or at the periodic
full reload when someone edited the tables by hand."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from collections.abc import Callable

from sqlalchemy import func, insert, select, text

from loomos.security.authz import tables as t
from loomos.security.authz.administration import PolicyAdmin
from loomos.security.authz.authorizer import Authorizer
from loomos.security.authz.policy_files import read_policy_files
from tests.security.authz.conftest import ROOT


def wait_for(check: Callable[[], bool], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def test_seeded_once_from_the_policy_files(make_authorizer: Callable[..., Authorizer], db_url: str) -> None:
    first = make_authorizer(db_url)
    files = read_policy_files()
    with first.engine.connect() as conn:
        rules = conn.execute(select(func.count()).select_from(t.CasbinRule.__table__)).scalar_one()
        roles = {r for (r,) in conn.execute(select(t.roles.c.name))}
    assert rules == len(files.rules) and roles == set(files.roles)
    version = first.version
    # A second process starting on the same database does not seed again.
    second = make_authorizer(db_url)
    assert second.version == version
    with second.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(t.CasbinRule.__table__)).scalar_one() == rules


def test_a_change_reaches_another_enforcer_within_its_interval(
    make_authorizer: Callable[..., Authorizer], db_url: str
) -> None:
    here = make_authorizer(db_url, watch=True, reload_interval_s=0.05)
    there = make_authorizer(db_url, watch=True, reload_interval_s=0.05)
    PolicyAdmin(here).grant("alice", "ml_engineer", "vision", by=ROOT)
    assert here.roles_of("alice") == {"vision": ["ml_engineer"]}  # at once where it was made
    wait_for(lambda: there.roles_of("alice") == {"vision": ["ml_engineer"]})
    assert there.version == here.version
    # A revocation reaches the other one too, and it stops honouring the role at once.
    claimed = {"vision": ["ml_engineer"]}
    assert there.decide("alice", "vision", "jobs:delete", claimed).allowed
    PolicyAdmin(here).revoke("alice", "ml_engineer", "vision", by=ROOT)
    wait_for(lambda: not there.decide("alice", "vision", "jobs:delete", claimed).allowed)


def test_a_hand_edit_arrives_with_the_full_reload(
    make_authorizer: Callable[..., Authorizer], db_url: str
) -> None:
    watcher = make_authorizer(db_url, watch=True, reload_interval_s=0.05, full_reload_interval_s=0.3)
    with watcher.engine.begin() as conn:  # no version bump: an operator's SQL
        conn.execute(
            insert(t.CasbinRule.__table__).values(ptype="g", v0="user:zed", v1="role:ml_engineer", v2="nlp")
        )
    wait_for(lambda: watcher.roles_of("zed") == {"nlp": ["ml_engineer"]})


def test_a_change_reaches_another_process(make_authorizer: Callable[..., Authorizer], db_url: str) -> None:
    """A second OS process (its own interpreter, engine and watcher) sees a grant made here."""
    here = make_authorizer(db_url)
    child = textwrap.dedent(
        """
        import sys, time
        from loomos.security.authz.authorizer import open_authorizer
        from loomos.settings import Settings
        settings = Settings.model_validate(
            {"loomdb": {"url": sys.argv[1]}, "security": {"authz": {"reload_interval_s": 0.05}}}
        )
        authorizer = open_authorizer(settings)
        print("ready", authorizer.version, flush=True)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            roles = authorizer.roles_of("carol")
            if roles:
                print("saw", roles, authorizer.version, flush=True)
                break
            time.sleep(0.02)
        """
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", child, db_url], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().startswith("ready")
        PolicyAdmin(here).grant("carol", "data_scientist", "nlp", by=ROOT)
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert f"saw {{'nlp': ['data_scientist']}} {here.version}" in out, out + err


def test_a_failed_change_leaves_nothing(authorizer: Authorizer) -> None:
    version = authorizer.version
    try:
        with authorizer.store.change("root") as change:
            change.add_rule("g", ["user:x", "role:ml_engineer", "vision"])
            raise RuntimeError("boom")
    except RuntimeError:
        pass
    assert authorizer.store.version() == version
    authorizer.reload()
    assert authorizer.roles_of("x") == {}
    with authorizer.engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM authz_casbin_rule WHERE v0 = 'user:x'")).scalar() == 0
