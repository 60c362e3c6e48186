"""Who may do what to which job, beyond the route's own check in the caller's team.

- Submitting: the job's user and team come from the caller's identity. A spec may name its
  team (the caller must then hold jobs:create there too) and another user (submitting on
  someone's behalf needs jobs:admin in the job's team); anything else is a 403. The spec is
  rewritten with both, so what the workflow, search attributes and audit trail record is who
  was authenticated, never what the body claimed.
- Listing: the caller's team unless they ask for another (jobs:read there) or hold jobs:admin
  in every team (a platform_admin), who see all teams when they name none.
- One job: its team is its `LoomTeam` search attribute. A job the caller may not read in that
  team is answered like a job that does not exist (404: no leaking which ids exist); cancelling
  needs jobs:delete there (403 names it).
"""

from __future__ import annotations

from loomos.api.errors import NotFound
from loomos.models.permissions import Permission
from loomos.models.spec import JobSpec
from loomos.security.authz.access import Authorized

ALL_TEAMS = "*"


def as_caller(spec: JobSpec, caller: Authorized) -> JobSpec:
    identity = caller.identity
    given = spec.model_fields_set
    team = spec.team if "team" in given else identity.team
    user = spec.user if "user" in given else identity.subject
    if team != identity.team:
        caller.require(Permission.JOBS_CREATE, team, obj=f"team:{team}")
    if user != identity.subject:
        caller.require(Permission.JOBS_ADMIN, team, obj=f"jobs of user {user}")
    return spec.model_copy(update={"user": user, "team": team})


def list_scope(caller: Authorized, team: str | None) -> str | None:
    """The team to list (None: every team)."""
    if team is None:
        sees_all = caller.allowed(
            Permission.JOBS_ADMIN, ALL_TEAMS, obj="jobs of every team", record_denial=False
        )
        return None if sees_all else caller.identity.team
    if team != caller.identity.team:
        caller.require(Permission.JOBS_READ, team, obj=f"jobs of team {team}")
    return team


def require_job(caller: Authorized, permission: Permission, job_id: str, team: str | None) -> None:
    """`permission` on the job (in its team); an unreadable job does not exist for the caller."""
    team = team or "default"
    obj = f"job:{job_id}"
    if not caller.allowed(Permission.JOBS_READ, team, obj=obj):
        raise NotFound(f"no job {job_id!r}")
    if permission != Permission.JOBS_READ:
        caller.require(permission, team, obj=obj)
