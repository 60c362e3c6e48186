"""Events record the version of the canonical form their hash was made with (`hash_version`).

Hash version 2 hashes RFC 8785 (JCS) JSON (loomos/loomdb/hashchain.py). Events stored before
this revision were hashed with version 1 and keep verifying under it: the column's default, 1,
is what every existing row reads (on Postgres a constant default fills existing rows without
rewriting the table, partitions included); appends write 2 explicitly.

The downgrade drops the column. LoomDB before this revision hashes every event as version 1, so
events appended since no longer verify with it: downgrade only a store that has none (or
archive them first).

Revision ID: 0004
Revises: 0003
"""

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    kind = "smallint" if op.get_bind().dialect.name == "postgresql" else "INTEGER"
    op.execute(f"ALTER TABLE loomdb_events ADD COLUMN hash_version {kind} NOT NULL DEFAULT 1")


def downgrade() -> None:
    op.execute("ALTER TABLE loomdb_events DROP COLUMN hash_version")
