"""The `security.authz` section of LoomOS's settings (pure pydantic: loomos.settings imports it).

Every key here needs its environment variable in VARIABLES (loomos.settings reads, documents
and passes them on to `loomos dev`'s children from that one list).

The policy itself (roles, permissions, grants) lives in the database and is edited through the
admin API; these settings only say where its first version comes from, how quickly every
process notices a change, and the limits an operator sets outside it (role constraint
overrides, team quotas).
"""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field, field_validator

from loomos.settings_vars import EnvVar

ROLE_NAME_PATTERN = r"^[a-z][a-z0-9_]{0,62}$"
TEAM_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$"
SUBJECT_PATTERN = r"^[A-Za-z0-9._@-]{1,128}$"
_ROLE = re.compile(ROLE_NAME_PATTERN)
_TEAM = re.compile(TEAM_NAME_PATTERN)
_SUBJECT = re.compile(SUBJECT_PATTERN)
_LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class Constraints(BaseModel):
    """Limits on what a role's holder (or a whole team) may run. None: no limit.

    The product documents' role constraints, plus max_gpus_per_job, which their
    `submit_job_with_rbac` reads. Ranges refuse nonsense (negative limits, absurd values)
    wherever constraints are set: roles.yaml, the admin API, these settings."""

    model_config = ConfigDict(extra="forbid")

    max_concurrent_jobs: int | None = Field(None, ge=0, le=100_000)
    max_gpus_per_job: int | None = Field(None, ge=0, le=16_384)
    max_gpu_hours_per_month: float | None = Field(None, ge=0, le=1e9)
    cost_limit_per_month: float | None = Field(None, ge=0, le=1e12, description="USD")
    allowed_datasets: list[str] | None = Field(None, max_length=1000)
    allowed_environments: list[str] | None = Field(None, max_length=1000)

    @field_validator("allowed_datasets", "allowed_environments")
    @classmethod
    def _labels(cls, v: list[str] | None) -> list[str] | None:
        for item in v or ():
            if not _LABEL.match(item):
                raise ValueError(f"{item!r}: letters, digits and . _ - only (at most 128)")
        return v


def _check_names(names: list[str], pattern: re.Pattern[str], what: str) -> list[str]:
    for name in names:
        if not pattern.match(name):
            raise ValueError(f"{name!r} is not a valid {what}")
    return names


class AuthzSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # Where the first policy comes from (model.conf, policy.csv, roles.yaml); None: the
    # shipped loomos.policies. Read once, when the database has no policy yet.
    policy_dir: str | None = None
    # How often every process checks the policy's version row, and reloads everything anyway
    # (a backstop for edits made to the tables by hand).
    reload_interval_s: float = Field(2.0, gt=0, le=3600)
    full_reload_interval_s: float = Field(300.0, gt=0, le=86400)
    # Operators' overrides of roles' constraints, by role name (merged key by key over the
    # database's), and quotas for whole teams (team "*": every team without its own).
    role_constraints: dict[str, Constraints] = Field(default_factory=dict)
    team_quotas: dict[str, Constraints] = Field(default_factory=dict)
    # Users granted platform_admin in every team whenever a process opens the policy: the
    # first administrator of a fresh installation (then grant the rest through the API).
    bootstrap_admins: list[str] = Field(default_factory=list)

    @field_validator("role_constraints")
    @classmethod
    def _role_names(cls, v: dict[str, Constraints]) -> dict[str, Constraints]:
        _check_names(list(v), _ROLE, "role name")
        return v

    @field_validator("team_quotas")
    @classmethod
    def _team_names(cls, v: dict[str, Constraints]) -> dict[str, Constraints]:
        _check_names([t for t in v if t != "*"], _TEAM, "team name")
        return v

    @field_validator("bootstrap_admins")
    @classmethod
    def _subjects(cls, v: list[str]) -> list[str]:
        return _check_names(v, _SUBJECT, "user name")


def _var(name: str, key: str, description: str) -> EnvVar:
    return EnvVar(f"LOOMOS_AUTHZ_{name}", f"security.authz.{key}", description)


VARIABLES: tuple[EnvVar, ...] = (
    _var("POLICY_DIR", "policy_dir", "folder with model.conf, policy.csv, roles.yaml seeding a new database"),
    _var("RELOAD_INTERVAL_S", "reload_interval_s", "how often each process checks for policy changes"),
    _var(
        "FULL_RELOAD_INTERVAL_S", "full_reload_interval_s",
        "each process reloads the whole policy this often, changed or not",
    ),
    _var(
        "ROLE_CONSTRAINTS", "role_constraints",
        'role constraint overrides as JSON {"data_scientist": {"max_concurrent_jobs": 5}}',
    ),
    _var(
        "TEAM_QUOTAS", "team_quotas",
        'team quotas as JSON {"vision": {"max_gpu_hours_per_month": 5000}} ("*": every other team)',
    ),
    _var("BOOTSTRAP_ADMINS", "bootstrap_admins", 'users made platform_admin everywhere, as JSON ["root"]'),
)  # fmt: skip
