"""The policy as shipped (loomos.policies) or as an operator's folder (security.authz.policy_dir):
the Casbin model, the first rules and the roles' descriptions and constraints.

The model is read by every process (it is the shape of a decision, not data); the rules and
roles only seed a database that has none yet (loomos.security.authz.store.seed).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import yaml
from pydantic import ValidationError

from loomos.models.permissions import Permission
from loomos.security.authz.settings import ROLE_NAME_PATTERN, Constraints

MODEL_FILE = "model.conf"
POLICY_FILE = "policy.csv"
ROLES_FILE = "roles.yaml"
USER_PREFIX = "user:"
ROLE_PREFIX = "role:"
ANY_TEAM = "*"
_ROLE = re.compile(ROLE_NAME_PATTERN)


class PolicyFileError(ValueError):
    """A policy folder that cannot seed a database: says which file and line."""


@dataclass(frozen=True)
class RoleDefinition:
    name: str
    description: str
    constraints: Constraints = field(default_factory=Constraints)


@dataclass(frozen=True)
class PolicyFiles:
    model_text: str
    # ("p", "role:x", "jobs:create") and ("g", "role:a", "role:b", "*") rows, in file order.
    rules: list[tuple[str, ...]]
    roles: dict[str, RoleDefinition]
    source: str


def is_permission_pattern(value: str) -> bool:
    """A permission of the catalog, `*`, or a prefix pattern such as `data:read:*` that covers
    at least one permission of the catalog (keyMatch semantics)."""
    if value == "*" or value in Permission._value2member_map_:
        return True
    if value.endswith(":*"):
        prefix = value[:-1]
        return any(p.value.startswith(prefix) for p in Permission)
    return False


def _read(policy_dir: str | None, name: str) -> tuple[str, str]:
    if policy_dir is None:
        ref = resources.files("loomos.policies") / name
        return ref.read_text(encoding="utf-8"), f"loomos.policies/{name}"
    path = Path(policy_dir) / name
    try:
        return path.read_text(encoding="utf-8"), str(path)
    except OSError as exc:
        raise PolicyFileError(f"{path}: cannot read ({exc.strerror})") from None


def read_model(policy_dir: str | None = None) -> str:
    return _read(policy_dir, MODEL_FILE)[0]


def parse_rules(text: str, where: str) -> list[tuple[str, ...]]:
    rules: list[tuple[str, ...]] = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = tuple(p.strip() for p in line.split(","))
        at = f"{where}:{number}"
        if parts[0] == "p":
            if len(parts) != 3 or not parts[1].startswith(ROLE_PREFIX) or not is_permission_pattern(parts[2]):
                raise PolicyFileError(f"{at}: expected `p, role:<name>, <permission>`, got {line!r}")
        elif parts[0] == "g":
            if len(parts) != 4 or not all(x.startswith((ROLE_PREFIX, USER_PREFIX)) for x in parts[1:3]):
                raise PolicyFileError(f"{at}: expected `g, user:<name>|role:<name>, role:<name>, <team>|*`")
            if not parts[2].startswith(ROLE_PREFIX):
                raise PolicyFileError(f"{at}: the second name of a g row is a role: {line!r}")
        else:
            raise PolicyFileError(f"{at}: only p and g rows are allowed, got {line!r}")
        rules.append(parts)
    return rules


def parse_roles(text: str, where: str) -> dict[str, RoleDefinition]:
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise PolicyFileError(f"{where}: not valid YAML: {exc}") from None
    entries = data.get("roles") if isinstance(data, dict) else None
    if not isinstance(entries, dict) or not entries:
        raise PolicyFileError(f"{where}: expected `roles:` mapping role names to their description")
    roles = {}
    for name, body in entries.items():
        if not isinstance(name, str) or not _ROLE.match(name):
            raise PolicyFileError(f"{where}: {name!r} is not a role name ({ROLE_NAME_PATTERN})")
        body = body or {}
        try:
            constraints = Constraints.model_validate(body.get("constraints") or {})
        except ValidationError as exc:
            raise PolicyFileError(f"{where}: role {name}: {exc.errors()[0]['msg']}") from None
        roles[name] = RoleDefinition(name, str(body.get("description", "")), constraints)
    return roles


def read_policy_files(policy_dir: str | None = None) -> PolicyFiles:
    model_text, model_where = _read(policy_dir, MODEL_FILE)
    rules_text, rules_where = _read(policy_dir, POLICY_FILE)
    roles_text, roles_where = _read(policy_dir, ROLES_FILE)
    rules = parse_rules(rules_text, rules_where)
    roles = parse_roles(roles_text, roles_where)
    for rule in rules:
        for name in rule[1:3] if rule[0] == "g" else rule[1:2]:
            if name.startswith(ROLE_PREFIX) and name.removeprefix(ROLE_PREFIX) not in roles:
                raise PolicyFileError(
                    f"{rules_where}: role {name.removeprefix(ROLE_PREFIX)!r} is not in {roles_where}"
                )
    source = model_where.rsplit("/", 1)[0]
    return PolicyFiles(model_text, rules, roles, source)
