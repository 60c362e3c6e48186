"""Alembic environment for the security tables (users, tokens, sessions, policies, quotas).
Migrations run when loomos.security.db opens the database: the caller passes its connection in
`config.attributes["connection"]`. Each concern's migrations are an Alembic branch of their own
(branch label authn, authz, ...), all upgraded together to `heads`."""

from alembic import context

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    version_table="loomos_security_alembic_version",
    transactional_ddl=connection.dialect.name == "postgresql",
)
with context.begin_transaction():
    context.run_migrations()
