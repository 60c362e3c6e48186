"""The permissions of the product documents (LoomOSPermissions) and the built-in roles' names.
Casbin policies (policies/) grant them; routes and the admission activity require them."""

from __future__ import annotations

from enum import StrEnum


class Permission(StrEnum):
    JOBS_CREATE = "jobs:create"
    JOBS_READ = "jobs:read"
    JOBS_UPDATE = "jobs:update"
    JOBS_DELETE = "jobs:delete"
    JOBS_ADMIN = "jobs:admin"
    MODELS_DEPLOY = "models:deploy"
    MODELS_READ = "models:read"
    MODELS_UPDATE = "models:update"
    MODELS_DELETE = "models:delete"
    DATA_READ_PUBLIC = "data:read:public"
    DATA_READ_INTERNAL = "data:read:internal"
    DATA_READ_CONFIDENTIAL = "data:read:confidential"
    DATA_WRITE = "data:write"
    CLUSTER_READ = "cluster:read"
    CLUSTER_ADMIN = "cluster:admin"
    SECURITY_AUDIT = "security:audit"
    SECURITY_ADMIN = "security:admin"


class BuiltinRole(StrEnum):
    DATA_SCIENTIST = "data_scientist"
    ML_ENGINEER = "ml_engineer"
    PLATFORM_ADMIN = "platform_admin"
