"""LDAP accounts (ldap3): a service bind (or an anonymous one) searches the user's entry, then
LoomOS binds as that DN with the password given, so the directory checks it (a password never
goes into a filter and is never compared here). The user's groups come from a second search,
mapped to roles by `ldap.group_roles`.

Every value typed by a user is escaped before it enters a filter (RFC 4515), so `*` or `)(`
in a username cannot widen the search.
"""

from __future__ import annotations

import ssl

from ldap3 import NONE, SUBTREE, Connection, Server, Tls
from ldap3.core.exceptions import LDAPBindError, LDAPException, LDAPSocketOpenError
from ldap3.utils.conv import escape_filter_chars

from loomos.security.authn.external import BadCredentials, ExternalUser, ProviderUnavailable, UnknownUser
from loomos.security.authn.settings import LdapSettings


class LdapProvider:
    def __init__(self, settings: LdapSettings) -> None:
        self.settings = settings
        tls = (
            Tls(validate=ssl.CERT_REQUIRED)
            if settings.url.startswith("ldaps") or settings.start_tls
            else None
        )
        self.server = Server(settings.url, get_info=NONE, connect_timeout=settings.timeout_s, tls=tls)

    def _connection(self, user: str | None, password: str | None) -> Connection:
        conn = Connection(
            self.server,
            user=user,
            password=password,
            receive_timeout=self.settings.timeout_s,
            raise_exceptions=False,
            read_only=True,
        )
        if self.settings.start_tls and not self.settings.url.startswith("ldaps"):
            conn.open()
            conn.start_tls()
        return conn

    def authenticate(self, username: str, password: str) -> ExternalUser:
        s = self.settings
        if not password:
            # An empty password is an unauthenticated bind that many servers accept: never.
            raise BadCredentials("empty password")
        bind_password = s.bind_password.get_secret_value() if s.bind_password else None
        try:
            service = self._connection(s.bind_dn, bind_password)
            if not service.bind():
                raise ProviderUnavailable(
                    f"LDAP service bind as {s.bind_dn or 'anonymous'} failed: "
                    + str(service.result.get("description"))
                )
            try:
                user_filter = s.user_filter.format(username=escape_filter_chars(username))
                service.search(
                    s.user_base_dn or "",
                    user_filter,
                    search_scope=SUBTREE,
                    attributes=[s.display_name_attribute, "mail"],
                    size_limit=2,
                )
                entries = list(service.entries)
                if not entries:
                    raise UnknownUser("no such LDAP user")
                if len(entries) > 1:
                    raise BadCredentials("the LDAP user filter matches more than one entry")
                entry = entries[0]
                user_dn = entry.entry_dn
                display = _first(entry, s.display_name_attribute)
                email = _first(entry, "mail")
                user = self._connection(user_dn, password)
                try:
                    if not user.bind():
                        raise BadCredentials("wrong password")
                finally:
                    user.unbind()
                groups = self._groups(service, user_dn, username)
            finally:
                service.unbind()
        except (LDAPSocketOpenError, LDAPBindError) as err:
            raise ProviderUnavailable(f"LDAP server {s.url} unavailable: {err}") from err
        except LDAPException as err:
            raise ProviderUnavailable(f"LDAP error: {err}") from err
        return ExternalUser(username=username, display_name=display, email=email, groups=groups)

    def _groups(self, service: Connection, user_dn: str, username: str) -> list[str]:
        s = self.settings
        if not s.group_base_dn:
            return []
        group_filter = s.group_filter.format(
            user_dn=escape_filter_chars(user_dn), username=escape_filter_chars(username)
        )
        service.search(
            s.group_base_dn, group_filter, search_scope=SUBTREE, attributes=[s.group_name_attribute]
        )
        return sorted({name for e in service.entries if (name := _first(e, s.group_name_attribute))})


def _first(entry: object, attribute: str) -> str | None:
    try:
        values = getattr(entry, attribute).values
    except (AttributeError, LDAPException):
        return None
    return str(values[0]) if values else None
