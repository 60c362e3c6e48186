"""Editing the policy: grants need security:admin in the team and a role no larger than the
granter's own; unknown roles are refused by name; revocations and removed users stop counting
even where an identity still carries the role; custom roles follow the same rules."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from loomos.security.authz.administration import (
    NotPermitted,
    PolicyAdmin,
    PolicyConflict,
    PolicyInputError,
    UnknownRole,
)
from loomos.security.authz.authorizer import Authorizer
from loomos.security.authz.settings import Constraints
from tests.security.authz.conftest import ROOT, identity


@pytest.fixture
def admin(authorizer: Authorizer) -> PolicyAdmin:
    return PolicyAdmin(authorizer)


def test_a_platform_admin_grants_and_revokes(admin: PolicyAdmin, authorizer: Authorizer) -> None:
    assert admin.grant("alice", "ml_engineer", "vision", by=ROOT) is True
    assert admin.grant("alice", "ml_engineer", "vision", by=ROOT) is False  # already there
    assert authorizer.roles_of("alice") == {"vision": ["ml_engineer"]}
    assert admin.revoke("alice", "ml_engineer", "vision", by=ROOT) is True
    assert authorizer.roles_of("alice") == {}


def test_a_grant_of_an_unknown_role_is_refused_by_name(admin: PolicyAdmin) -> None:
    with pytest.raises(UnknownRole, match="unknown role 'wizard'"):
        admin.grant("alice", "wizard", "vision", by=ROOT)
    with pytest.raises(UnknownRole):
        admin.grant("alice", "wizard", "vision", by=None)  # not even LoomOS itself


@pytest.mark.parametrize(
    ("subject", "role", "team"),
    [("al ice", "ml_engineer", "vision"), ("alice", "ML!", "vision"), ("alice", "ml_engineer", "vi*"),
     ("alice", "ml_engineer", ""), ("a" * 200, "ml_engineer", "vision")],
)  # fmt: skip
def test_bad_names_are_refused(admin: PolicyAdmin, subject: str, role: str, team: str) -> None:
    with pytest.raises(PolicyInputError):
        admin.grant(subject, role, team, by=ROOT)


def test_only_a_security_admin_of_the_team_grants_there(admin: PolicyAdmin) -> None:
    engineer = identity("erin", "vision", {"vision": ["ml_engineer"]})
    with pytest.raises(NotPermitted, match="missing permission security:admin in team vision"):
        admin.grant("bob", "data_scientist", "vision", by=engineer)
    vision_admin = identity("vic", "vision", {"vision": ["platform_admin"]})
    assert admin.grant("bob", "data_scientist", "vision", by=vision_admin)
    with pytest.raises(NotPermitted, match="in team nlp"):
        admin.grant("bob", "data_scientist", "nlp", by=vision_admin)
    with pytest.raises(NotPermitted, match="in team \\*"):
        admin.grant("bob", "data_scientist", "*", by=vision_admin)  # a team admin is not a global one


def test_nobody_grants_a_role_above_their_own(admin: PolicyAdmin) -> None:
    # A custom role with security:admin but not everything else: it may grant data_scientist
    # (a subset of what it holds) and not ml_engineer (data:write, jobs:delete, models:* ...).
    admin.put_role(
        "team_lead",
        ["security:admin", "jobs:*", "cluster:read", "models:read", "data:read:*"],
        description="grants within a team",
        by=ROOT,
    )
    lead = identity("lee", "vision", {"vision": ["team_lead"]})
    assert admin.grant("dan", "data_scientist", "vision", by=lead)
    with pytest.raises(NotPermitted, match="data:write, models:deploy, models:update"):
        admin.grant("dan", "ml_engineer", "vision", by=lead)
    with pytest.raises(NotPermitted):
        admin.grant("lee", "platform_admin", "vision", by=lead)  # not even to themselves
    # ...nor take a larger role away from someone.
    admin.grant("sam", "ml_engineer", "vision", by=ROOT)
    with pytest.raises(NotPermitted):
        admin.revoke("sam", "ml_engineer", "vision", by=lead)


def test_an_api_token_scope_limits_what_its_holder_grants(admin: PolicyAdmin) -> None:
    scoped = identity("root", "vision", {"*": ["platform_admin"]}, permissions=["security:admin", "jobs:*"])
    with pytest.raises(NotPermitted, match="cluster:read"):
        admin.grant("bob", "data_scientist", "vision", by=scoped)


def test_a_revoked_role_stops_counting_where_an_identity_still_carries_it(
    admin: PolicyAdmin, authorizer: Authorizer
) -> None:
    admin.grant("alice", "ml_engineer", "vision", by=ROOT)
    session = {"vision": ["ml_engineer"]}  # what a session made before the revocation carries
    assert authorizer.decide("alice", "vision", "jobs:delete", session).allowed
    admin.revoke("alice", "ml_engineer", "vision", by=ROOT)
    assert not authorizer.decide("alice", "vision", "jobs:delete", session).allowed
    # A role from a directory (never stored) can be revoked the same way...
    directory = {"nlp": ["data_scientist"]}
    assert authorizer.decide("alice", "nlp", "jobs:read", directory).allowed
    assert admin.revoke("alice", "data_scientist", "nlp", by=ROOT) is False  # nothing stored
    assert not authorizer.decide("alice", "nlp", "jobs:read", directory).allowed
    # ...and a fresh grant makes it count again.
    admin.grant("alice", "ml_engineer", "vision", by=ROOT)
    assert authorizer.decide("alice", "vision", "jobs:delete", session).allowed


def test_a_removed_user_loses_every_grant_and_every_carried_role(
    admin: PolicyAdmin, authorizer: Authorizer
) -> None:
    admin.grant("gone", "ml_engineer", "vision", by=ROOT)
    admin.grant("gone", "data_scientist", "*", by=ROOT)
    carried = {"vision": ["ml_engineer"], "*": ["data_scientist"], "nlp": ["platform_admin"]}
    assert authorizer.decide("gone", "nlp", "security:admin", carried).allowed
    with pytest.raises(NotPermitted):
        admin.remove_subject("gone", by=identity("vic", "vision", {"vision": ["platform_admin"]}))
    assert admin.remove_subject("gone", by=ROOT) == 2
    assert authorizer.roles_of("gone") == {}
    for team, permission in (("vision", "jobs:read"), ("nlp", "security:admin"), ("audio", "jobs:read")):
        assert not authorizer.decide("gone", team, permission, carried).allowed
    assert [g for g in authorizer.grants() if g.subject == "gone"] == []


def test_custom_roles(admin: PolicyAdmin, authorizer: Authorizer) -> None:
    info = admin.put_role(
        "auditor",
        ["security:audit", "cluster:read"],
        description="reads the trail",
        constraints=Constraints(max_concurrent_jobs=0),
        by=ROOT,
    )
    assert info.permissions == ["cluster:read", "security:audit"] and not info.builtin
    assert authorizer.decide("ann", "vision", "security:audit", {"vision": ["auditor"]}).allowed
    # Inheritance: everything a data_scientist has, plus the auditor's.
    info = admin.put_role("senior_scientist", ["security:audit"], inherits=["data_scientist"], by=ROOT)
    assert "jobs:create" in info.permissions and info.inherits == ["data_scientist"]
    admin.put_role("staff", ["jobs:read"], inherits=["senior_scientist"], by=ROOT)
    with pytest.raises(PolicyInputError, match="cycle"):
        admin.put_role("senior_scientist", ["security:audit"], inherits=["staff"], by=ROOT)
    with pytest.raises(PolicyInputError, match="unknown permission 'jobs:fly'"):
        admin.put_role("pilot", ["jobs:fly"], by=ROOT)
    with pytest.raises(UnknownRole):
        admin.put_role("child", [], inherits=["nonexistent"], by=ROOT)
    with pytest.raises(PolicyConflict, match="built in"):
        admin.put_role("data_scientist", ["*"], by=ROOT)
    with pytest.raises(PolicyConflict, match="built in"):
        admin.delete_role("ml_engineer", by=ROOT)
    # A role nobody holds can go; one still granted cannot.
    admin.grant("ann", "auditor", "vision", by=ROOT)
    with pytest.raises(PolicyConflict, match="ann in vision"):
        admin.delete_role("auditor", by=ROOT)
    admin.revoke("ann", "auditor", "vision", by=ROOT)
    admin.delete_role("auditor", by=ROOT)
    with pytest.raises(UnknownRole):
        admin.grant("ann", "auditor", "vision", by=ROOT)
    assert not authorizer.decide("ann", "vision", "security:audit", {"vision": ["auditor"]}).allowed


def test_defining_a_role_needs_a_global_security_admin_holding_its_permissions(admin: PolicyAdmin) -> None:
    team_admin = identity("vic", "vision", {"vision": ["platform_admin"]})
    with pytest.raises(NotPermitted, match="in team \\*"):
        admin.put_role("x", ["jobs:read"], by=team_admin)
    admin.put_role("global_lead", ["security:admin", "jobs:read"], by=ROOT)
    lead = identity("gil", "vision", {"*": ["global_lead"]})
    with pytest.raises(NotPermitted, match="cluster:admin"):
        admin.put_role("escalator", ["cluster:admin"], by=lead)
    assert admin.put_role("reader", ["jobs:read"], by=lead).permissions == ["jobs:read"]


@pytest.mark.parametrize(
    "limits",
    [{"max_concurrent_jobs": -1}, {"max_gpus_per_job": 10**9}, {"max_gpu_hours_per_month": -5},
     {"cost_limit_per_month": float("nan")}, {"allowed_datasets": ["ok", "not ok"]}, {"max_jobs": 3}],
)  # fmt: skip
def test_limits_out_of_range_are_refused(limits: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        Constraints.model_validate(limits)


def test_constraints_combine_to_the_most_permissive_and_settings_override(
    make_authorizer, sqlite_url: str
) -> None:
    authorizer = make_authorizer(
        sqlite_url, role_constraints={"data_scientist": {"max_concurrent_jobs": 3, "max_gpus_per_job": 8}}
    )
    ds = authorizer.constraints_for(["data_scientist"])
    assert (ds.max_concurrent_jobs, ds.max_gpus_per_job, ds.cost_limit_per_month) == (3, 8, 5000)
    both = authorizer.constraints_for(["data_scientist", "ml_engineer"])
    assert both.max_concurrent_jobs == 25 and both.max_gpus_per_job is None  # ml_engineer has no such limit
    assert both.cost_limit_per_month is None and both.allowed_datasets is None
    assert authorizer.constraints_for(["platform_admin", "data_scientist"]).max_concurrent_jobs is None
    assert authorizer.constraints_for([]).model_dump(exclude_none=True) == {}
