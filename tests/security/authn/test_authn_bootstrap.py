"""Dev mode's admin (loomos dev, loomos demo): made only when security.authn.dev_bootstrap is
on, with its secrets in 0600 files in the stack's state folder, where the SDK finds them."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from loomos.security.authn.authenticator import Authenticator
from loomos.security.authn.bootstrap import DevBootstrapRefused, bootstrap_dev_admin, dev_username
from loomos.security.authn.errors import NotAuthenticated
from loomos.security.authn.resolver import resolve
from loomos.security.db import open_security_db
from loomos.settings import Settings
from tests.security.authn.conftest import CTX

ENDPOINT = "http://127.0.0.1:18080"


def test_refused_outside_dev_mode(tmp_path: Path) -> None:
    settings = Settings.model_validate({"loomdb": {"url": f"sqlite:///{tmp_path}/db.sqlite"}})
    with pytest.raises(DevBootstrapRefused):
        bootstrap_dev_admin(settings, ENDPOINT, tmp_path)
    assert not (tmp_path / "credentials.json").exists()


def test_dev_admin_token_and_files(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/db.sqlite"
    settings = Settings.model_validate(
        {"loomdb": {"url": url}, "security": {"authn": {"dev_bootstrap": True}}}
    )
    first = bootstrap_dev_admin(settings, ENDPOINT, tmp_path)
    assert first.username == dev_username()
    for path in (first.admin_file, first.credentials_path):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    stored = json.loads(first.credentials_path.read_text())["endpoints"][ENDPOINT]
    assert stored == {"token": first.token, "kind": "api_token", "username": first.username}

    authn = Authenticator(settings.security.authn, open_security_db(url))
    assert resolve(authn, first.token, CTX).subject == first.username
    assert authn.login(first.username, first.password, CTX).session.auth_method == "local"  # type: ignore[union-attr]

    second = bootstrap_dev_admin(settings, ENDPOINT, tmp_path)  # a restart: new secrets
    authn.cache.clear()
    with pytest.raises(NotAuthenticated, match="token revoked"):
        resolve(authn, first.token, CTX)
    assert resolve(authn, second.token, CTX).subject == first.username
    assert second.password != first.password
