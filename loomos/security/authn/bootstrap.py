"""Dev mode only (`security.authn.dev_bootstrap`, set by loomos.devstack for its own stack):
a local admin with a random password and an API token, so `loomos dev` and `loomos demo`
work with no set-up while LoomCtl still refuses anonymous requests.

The admin is named after the OS user (else `admin`). Its password and token are written, mode
0600, into the stack's state folder: `dev-admin.json`, and `credentials.json` keyed by the
stack's endpoint, where the CLI and the SDK look when nothing else is configured. The
platform_admin role comes from authorization's role store (loomos.security.authn.roles);
without one, the admin has no role and a warning says so.

Outside dev mode this refuses to run: no default credentials exist anywhere else.
"""

from __future__ import annotations

import getpass
import json
import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import structlog

from loomos.security.authn import credentials
from loomos.security.authn.accounts import AccountError
from loomos.security.authn.authenticator import Authenticator
from loomos.security.authn.roles import ANY_TEAM, PLATFORM_ADMIN, RoleStoreUnavailable, open_role_store

if TYPE_CHECKING:
    from loomos.settings import Settings

log = structlog.get_logger()
DEV_TOKEN_NAME = "loomos dev stack"
ADMIN_FILE = "dev-admin.json"
CREDENTIALS_FILE = "credentials.json"


class DevBootstrapRefused(RuntimeError):
    pass


@dataclass(frozen=True)
class DevAdmin:
    username: str
    password: str
    token: str
    credentials_path: Path
    admin_file: Path
    role_granted: bool


def dev_username() -> str:
    try:
        name = getpass.getuser()
    except (KeyError, OSError):
        return "admin"
    return name if re.match(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$", name or "") else "admin"


def bootstrap_dev_admin(settings: Settings, endpoint: str, state_dir: Path) -> DevAdmin:
    """Create (or refresh) the stack's admin, its token and the credentials files."""
    if not settings.security.authn.dev_bootstrap:
        raise DevBootstrapRefused(
            "the dev admin is only made when security.authn.dev_bootstrap is on (loomos dev)"
        )
    from loomos.security.db import open_security_db

    engine = open_security_db(settings.loomdb.url)
    try:
        authn = Authenticator(settings.security.authn, engine)
        username = dev_username()
        password = secrets.token_urlsafe(18)
        user = authn.accounts.get(username)
        if user is None:
            user = authn.accounts.create_local(username, password, display_name="LoomOS dev admin")
        else:
            if user.source != "local" or not user.active:
                raise AccountError(f"user {username} exists and is not an active local account")
            authn.accounts.set_password(user, password)
        for old in authn.tokens.list_for(user.id):
            if old.name == DEV_TOKEN_NAME:
                authn.tokens.revoke(old.id)
        token, _ = authn.tokens.create(user.id, DEV_TOKEN_NAME, None, 30)
        granted = grant_platform_admin(settings, engine, username)
    finally:
        engine.dispose()
    state_dir.mkdir(parents=True, exist_ok=True)
    admin_file = state_dir / ADMIN_FILE
    fd = os.open(admin_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump({"endpoint": endpoint, "username": username, "password": password}, out, indent=2)
    os.chmod(admin_file, 0o600)
    path = credentials.save(
        endpoint,
        credentials.StoredCredential(token=token, kind="api_token", username=username),
        path=state_dir / CREDENTIALS_FILE,
    )
    return DevAdmin(username, password, token, path, admin_file, granted)


def grant_platform_admin(settings: Settings, engine: object, username: str) -> bool:
    """THE one place the dev admin is made platform_admin, through authorization's role store."""
    try:
        open_role_store(settings, engine).grant_role(username, ANY_TEAM, PLATFORM_ADMIN)  # type: ignore[arg-type]
    except RoleStoreUnavailable as err:
        log.warning("dev admin has no platform_admin role", reason=str(err))
        return False
    return True
