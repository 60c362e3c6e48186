"""Authentication: local accounts, LDAP, OIDC, API tokens, sessions, MFA."""
