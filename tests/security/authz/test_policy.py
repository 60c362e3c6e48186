"""The shipped policy (policies/): the product documents' roles with their exact permission
lists, teams as domains, global roles, and default deny for everyone else (SkyPilot's block-list
model let a user with no role, or an unknown one, do everything: skypilot-org/skypilot #10482)."""

from __future__ import annotations

from pathlib import Path

import pytest

from loomos.models.permissions import Permission
from loomos.security.authz.authorizer import Authorizer
from loomos.security.authz.engine import ALL_PERMISSIONS
from loomos.security.authz.policy_files import PolicyFileError, read_policy_files

# LoomOSPermissions and the three roles of the product documents (RBACManager), verbatim.
PRODUCT_ROLES = {
    "data_scientist": {
        "jobs:create", "jobs:read", "jobs:update", "models:read", "data:read:public",
        "data:read:internal", "cluster:read",
    },
    "ml_engineer": {
        "jobs:create", "jobs:read", "jobs:update", "jobs:delete", "models:deploy", "models:read",
        "models:update", "data:read:public", "data:read:internal", "data:write", "cluster:read",
    },
    "platform_admin": set(ALL_PERMISSIONS),
}  # fmt: skip
PRODUCT_CONSTRAINTS = {
    "data_scientist": {
        "max_concurrent_jobs": 10,
        "max_gpu_hours_per_month": 1000,
        "allowed_datasets": ["internal", "public"],
        "cost_limit_per_month": 5000,
    },
    "ml_engineer": {
        "max_concurrent_jobs": 25,
        "max_gpu_hours_per_month": 2500,
        "allowed_environments": ["development", "production", "staging"],
    },
    "platform_admin": {},
}


def test_catalog_is_the_product_documents() -> None:
    assert len(ALL_PERMISSIONS) == 17
    assert {p.value for p in Permission} == set(ALL_PERMISSIONS)


@pytest.mark.parametrize("role", sorted(PRODUCT_ROLES))
def test_builtin_roles_have_exactly_the_documented_permissions(authorizer: Authorizer, role: str) -> None:
    assert authorizer.view.role_permissions(role) == PRODUCT_ROLES[role]
    assert authorizer.constraints_for([role]).model_dump(exclude_none=True) == PRODUCT_CONSTRAINTS[role]


def test_ml_engineer_inherits_data_scientist_once_for_every_team(authorizer: Authorizer) -> None:
    # The hierarchy is one grouping row in team "*", not a copy per team.
    view = authorizer.view
    assert view.inherits("ml_engineer") == ["data_scientist"]
    assert "jobs:create" not in view.direct_rules("ml_engineer")
    for team in ("vision", "nlp", "a-team-nobody-mentioned"):
        assert authorizer.decide("eve", team, "jobs:create", {team: ["ml_engineer"]}).allowed


def test_every_role_in_its_own_team_only(authorizer: Authorizer) -> None:
    roles = {"vision": ["ml_engineer"], "nlp": ["data_scientist"]}
    assert authorizer.decide("alice", "vision", "jobs:delete", roles).allowed
    nlp = authorizer.decide("alice", "nlp", "jobs:delete", roles)
    assert not nlp.allowed
    assert nlp.reason == "missing permission jobs:delete in team nlp (roles data_scientist)"
    assert not authorizer.decide("alice", "audio", "jobs:read", roles).allowed


def test_a_global_role_holds_in_every_team(authorizer: Authorizer) -> None:
    roles = {"*": ["platform_admin"]}
    for team in ("vision", "nlp", "*"):
        decision = authorizer.decide("root", team, "security:admin", roles)
        assert decision.allowed and decision.matched_rule == "p, role:platform_admin, *"
    # Team "*" asks about every team: only a role held in "*" answers it.
    assert not authorizer.decide("alice", "*", "jobs:read", {"vision": ["platform_admin"]}).allowed


@pytest.mark.parametrize("permission", ALL_PERMISSIONS)
def test_no_role_can_do_nothing(authorizer: Authorizer, permission: str) -> None:
    decision = authorizer.decide("newcomer", "vision", permission, {})
    assert not decision.allowed
    assert decision.reason == f"missing permission {permission} in team vision (no role)"


@pytest.mark.parametrize("permission", ALL_PERMISSIONS)
def test_an_unknown_role_can_do_nothing(authorizer: Authorizer, permission: str) -> None:
    """skypilot-org/skypilot #10482: a role the policy does not know grants nothing."""
    for roles in (
        {"vision": ["superuser"]},
        {"*": ["admin"]},
        {"vision": ["*"]},
        {"*": ["role:platform_admin"]},
    ):
        assert not authorizer.decide("mallory", "vision", permission, roles).allowed


def test_a_user_named_like_a_role_is_not_that_role(authorizer: Authorizer) -> None:
    # Subjects and roles live in separate namespaces (user:..., role:...).
    assert not authorizer.decide("platform_admin", "vision", "security:admin", {}).allowed
    assert not authorizer.decide("role:platform_admin", "vision", "jobs:read", {}).allowed


def test_an_api_token_scope_narrows_but_never_widens(authorizer: Authorizer) -> None:
    roles = {"vision": ["data_scientist"]}
    assert authorizer.decide("alice", "vision", "jobs:read", roles, ["jobs:read"]).allowed
    narrowed = authorizer.decide("alice", "vision", "jobs:create", roles, ["jobs:read", "cluster:*"])
    assert not narrowed.allowed and "not in the API token's scope" in narrowed.reason
    assert not authorizer.decide("alice", "vision", "jobs:delete", roles, ["*"]).allowed
    assert authorizer.decide("alice", "vision", "jobs:update", roles, None).allowed


def test_roles_of_reads_the_stored_grants(authorizer: Authorizer) -> None:
    authorizer.grant_role("alice", "vision", "ml_engineer")
    authorizer.grant_role("alice", "*", "data_scientist")
    assert authorizer.roles_of("alice") == {"vision": ["ml_engineer"], "*": ["data_scientist"]}
    assert authorizer.roles_of("nobody") == {}


def write_policy(folder: Path, policy: str, roles: str = "roles:\n  r:\n    description: x\n") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.conf").write_text(read_policy_files().model_text)
    (folder / "policy.csv").write_text(policy)
    (folder / "roles.yaml").write_text(roles)
    return folder


@pytest.mark.parametrize(
    ("policy", "roles", "message"),
    [
        ("p, role:r, jobs:fly\n", None, "expected `p, role:<name>, <permission>`"),
        ("p, alice, jobs:read\n", None, "expected `p, role:<name>, <permission>`"),
        ("p, role:ghost, jobs:read\n", None, "role 'ghost' is not in"),
        ("x, role:r, jobs:read\n", None, "only p and g rows"),
        ("g, user:a, user:b, *\n", None, "the second name of a g row is a role"),
        ("p, role:r, jobs:read\n", "roles:\n  R!: {}\n", "is not a role name"),
        ("p, role:r, jobs:read\n", "roles:\n  r:\n    constraints: {max_concurrent_jobs: -1}\n", "role r"),
    ],
)
def test_a_bad_policy_folder_is_refused_with_where(
    tmp_path: Path, policy: str, roles: str | None, message: str
) -> None:
    folder = write_policy(tmp_path / "p", policy, roles or "roles:\n  r:\n    description: x\n")
    with pytest.raises(PolicyFileError, match=message):
        read_policy_files(str(folder))
