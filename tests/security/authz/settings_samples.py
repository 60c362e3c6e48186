"""A value for each `security.authz` key's variable and what the key reads then, for
tests/settings' check that every variable sets its key."""

from __future__ import annotations

from loomos.security.authz.settings import Constraints

SAMPLES: dict[str, tuple[str, object]] = {
    "security.authz.policy_dir": ("/etc/loomos/policies", "/etc/loomos/policies"),
    "security.authz.reload_interval_s": ("0.5", 0.5),
    "security.authz.full_reload_interval_s": ("60", 60),
    "security.authz.role_constraints": (
        '{"data_scientist": {"max_concurrent_jobs": 5}}',
        {"data_scientist": Constraints(max_concurrent_jobs=5)},
    ),
    "security.authz.team_quotas": (
        '{"vision": {"max_gpu_hours_per_month": 5000}}',
        {"vision": Constraints(max_gpu_hours_per_month=5000)},
    ),
    "security.authz.bootstrap_admins": ('["root"]', ["root"]),
}
