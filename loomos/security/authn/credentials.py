"""Where the CLI and the SDK keep and find credentials (standard library only: a core install
of loomos reads it).

    LOOMOS_API_TOKEN                  a token for scripts, used as is
    $LOOMOS_CREDENTIALS               else this file, if set
    ~/.config/loomos/credentials.json else this one ($XDG_CONFIG_HOME respected)

    <state folder>/credentials.json   else the one `loomos dev` wrote (dev mode; the
                                      folder of temporal.db_file, .loomos by default)

The file maps each LoomCtl endpoint to its credential, so a token is only ever sent to the
server that issued it. It is written with mode 0600 (created so, never widened afterwards),
replaced atomically, and a file that others can read is refused rather than used.
"""

from __future__ import annotations

import json
import os
import stat
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

TOKEN_ENV = "LOOMOS_API_TOKEN"
CREDENTIALS_ENV = "LOOMOS_CREDENTIALS"
FILE_VERSION = 1


class CredentialsError(RuntimeError):
    pass


@dataclass
class StoredCredential:
    token: str
    kind: str  # session | api_token | oidc
    username: str | None = None
    expires_at: str | None = None
    refresh_token: str | None = None


def default_path() -> Path:
    explicit = os.environ.get(CREDENTIALS_ENV)
    if explicit:
        return Path(explicit).expanduser()
    config_home = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(config_home) / "loomos" / "credentials.json"


def dev_stack_path() -> Path | None:
    """Where `loomos dev` (loomos.security.authn.bootstrap) leaves its admin's token."""
    try:
        from loomos.settings import ConfigError, load_settings

        settings = load_settings()
    except (ConfigError, OSError):
        return None
    return Path(settings.temporal.db_file or ".loomos/temporal.db").parent / "credentials.json"


def _key(endpoint: str) -> str:
    return endpoint.rstrip("/")


def read_file(path: Path) -> dict[str, Any]:
    try:
        info = path.stat()
    except FileNotFoundError:
        return {"version": FILE_VERSION, "endpoints": {}}
    if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise CredentialsError(
            f"{path} can be read by others (mode {stat.S_IMODE(info.st_mode):o}): chmod 600 it"
        )
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise CredentialsError(f"{path}: unreadable credentials file ({err})") from err
    if not isinstance(data, dict) or not isinstance(data.get("endpoints"), dict):
        raise CredentialsError(f"{path}: not a LoomOS credentials file")
    return data


def load(endpoint: str, path: Path | None = None) -> StoredCredential | None:
    entry = read_file(path or default_path())["endpoints"].get(_key(endpoint))
    if not isinstance(entry, dict) or not isinstance(entry.get("token"), str):
        return None
    fields = StoredCredential.__dataclass_fields__
    return StoredCredential(**{k: v for k, v in entry.items() if k in fields})


def save(endpoint: str, credential: StoredCredential, path: Path | None = None) -> Path:
    path = path or default_path()
    data = read_file(path)
    data["endpoints"][_key(endpoint)] = {k: v for k, v in asdict(credential).items() if v is not None}
    _write(path, data)
    return path


def forget(endpoint: str, path: Path | None = None) -> bool:
    path = path or default_path()
    data = read_file(path)
    if data["endpoints"].pop(_key(endpoint), None) is None:
        return False
    _write(path, data)
    return True


def _write(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(prefix=".credentials-", dir=path.parent)  # created 0600
    try:
        with os.fdopen(fd, "w") as out:
            json.dump(data, out, indent=2)
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
