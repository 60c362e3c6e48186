"""LDAP logins against a real OpenLDAP: a `slapd` this module starts on a free loopback port
with a temporary config and directory (Debian's slapd; .ci/run installs it). A service bind
finds the user, a bind as the user checks the password, groups map to roles."""

from __future__ import annotations

import shutil
import socket
import subprocess
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from loomos.security.authn.authenticator import Authenticator, SessionGrant
from loomos.security.authn.errors import LoginFailed
from loomos.security.authn.resolver import resolve
from loomos.security.authn.settings import AuthnSettings
from tests.security.authn.conftest import CTX, PASSWORD

SLAPD = shutil.which("slapd") or "/usr/sbin/slapd"
SLAPADD = shutil.which("slapadd") or "/usr/sbin/slapadd"
SUFFIX = "dc=loomos,dc=test"
ADMIN_PW = "admin-secret"

pytestmark = pytest.mark.skipif(
    not Path(SLAPD).exists() or not Path("/etc/ldap/schema/core.schema").exists(),
    reason="OpenLDAP's slapd is not installed (apt-get install slapd ldap-utils; .ci/run does)",
)

DIRECTORY = f"""
dn: {SUFFIX}
objectClass: dcObject
objectClass: organization
o: LoomOS test
dc: loomos

dn: ou=people,{SUFFIX}
objectClass: organizationalUnit
ou: people

dn: ou=groups,{SUFFIX}
objectClass: organizationalUnit
ou: groups

dn: uid=dana,ou=people,{SUFFIX}
objectClass: inetOrgPerson
uid: dana
cn: Dana Scully
sn: Scully
mail: dana@loomos.test
userPassword: {PASSWORD}

dn: uid=eve,ou=people,{SUFFIX}
objectClass: inetOrgPerson
uid: eve
cn: Eve
sn: Eve
userPassword: other-password-123

dn: cn=ml-engineers,ou=groups,{SUFFIX}
objectClass: groupOfNames
cn: ml-engineers
member: uid=dana,ou=people,{SUFFIX}

dn: cn=admins,ou=groups,{SUFFIX}
objectClass: groupOfNames
cn: admins
member: uid=eve,ou=people,{SUFFIX}
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ldap_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("slapd")
    (root / "data").mkdir()
    config = root / "slapd.conf"
    config.write_text(textwrap.dedent(f"""\
        include /etc/ldap/schema/core.schema
        include /etc/ldap/schema/cosine.schema
        include /etc/ldap/schema/inetorgperson.schema
        modulepath /usr/lib/ldap
        moduleload back_mdb
        pidfile {root}/slapd.pid
        database mdb
        maxsize 10485760
        suffix "{SUFFIX}"
        rootdn "cn=admin,{SUFFIX}"
        rootpw {ADMIN_PW}
        directory {root}/data
        """))  # fmt: skip
    (root / "directory.ldif").write_text(DIRECTORY)
    subprocess.run(
        [SLAPADD, "-f", str(config), "-l", str(root / "directory.ldif")], check=True, capture_output=True
    )
    port = _free_port()
    url = f"ldap://127.0.0.1:{port}"
    proc = subprocess.Popen([SLAPD, "-f", str(config), "-h", url + "/", "-d", "0"], stderr=subprocess.PIPE)
    deadline = time.monotonic() + 15
    while True:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                break
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"slapd did not start: {proc.stderr.read().decode() if proc.stderr else ''}")
        time.sleep(0.05)
    yield url
    proc.terminate()
    proc.wait(10)


def ldap_settings(url: str, **extra: object) -> AuthnSettings:
    return AuthnSettings.model_validate(
        {
            "primary_provider": "ldap",
            "fallback_providers": ["local"],
            "ldap": {
                "url": url,
                "bind_dn": f"cn=admin,{SUFFIX}",
                "bind_password": ADMIN_PW,
                "user_base_dn": f"ou=people,{SUFFIX}",
                "group_base_dn": f"ou=groups,{SUFFIX}",
                "group_roles": {"ml-engineers": ["vision:ml_engineer"], "admins": ["*:platform_admin"]},
                **extra,
            },
        }
    )


def test_ldap_login_binds_as_the_user_and_maps_groups(
    ldap_url: str, make_authn: Callable[..., Authenticator]
) -> None:
    authn = make_authn(ldap_settings(ldap_url))
    grant = authn.login("dana", PASSWORD, CTX)
    assert isinstance(grant, SessionGrant) and grant.session.auth_method == "ldap"
    assert grant.user.display_name == "Dana Scully" and grant.user.email == "dana@loomos.test"
    who = resolve(authn, grant.token, CTX)
    assert who.roles == {"vision": ["ml_engineer"]}


def test_ldap_refusals(ldap_url: str, make_authn: Callable[..., Authenticator]) -> None:
    authn = make_authn(ldap_settings(ldap_url))
    for username, password in [
        ("dana", "wrong-password"),
        ("dana", ""),
        ("*", PASSWORD),
        ("dana)(uid=*", PASSWORD),
    ]:
        with pytest.raises(LoginFailed, match="invalid username or password"):
            authn.login(username, password, CTX)
    # An admin group member without MFA: the role is withheld until MFA (the admin rule).
    grant = authn.login("eve", "other-password-123", CTX)
    assert resolve(authn, grant.token, CTX).admin_needs_mfa  # type: ignore[union-attr]


def test_local_fallback_when_ldap_does_not_know_the_user_or_is_down(
    ldap_url: str, make_authn: Callable[..., Authenticator]
) -> None:
    authn = make_authn(ldap_settings(ldap_url))
    authn.accounts.create_local("breakglass", PASSWORD)
    assert authn.login("breakglass", PASSWORD, CTX).session.auth_method == "local"  # type: ignore[union-attr]
    down = make_authn(ldap_settings(f"ldap://127.0.0.1:{_free_port()}", timeout_s=1))
    assert down.login("breakglass", PASSWORD, CTX).session.auth_method == "local"  # type: ignore[union-attr]
