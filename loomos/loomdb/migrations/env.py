"""Alembic environment for LoomDB. Migrations run programmatically when a store is opened: the
caller passes its connection in `config.attributes["connection"]`."""

from alembic import context

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    version_table="loomdb_alembic_version",
    transactional_ddl=connection.dialect.name == "postgresql",
)
with context.begin_transaction():
    context.run_migrations()
