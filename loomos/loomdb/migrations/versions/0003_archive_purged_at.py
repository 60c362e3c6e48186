"""Archive manifests record when retention deleted their archive object (`purged_at`).

A manifest outlives its archive object: it keeps the first prev_hash and last hash, so `verify`
still links the chain across a purged period, and deep verification knows not to look for the
object. NULL means the object is (supposed to be) there.

Revision ID: 0003
Revises: 0002
"""

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    ts = "timestamptz" if op.get_bind().dialect.name == "postgresql" else "TEXT"
    op.execute(f"ALTER TABLE loomdb_archives ADD COLUMN purged_at {ts}")


def downgrade() -> None:
    # SQLite 3.35+ drops columns in place. The purges stay recorded as
    # compliance.retention.purged events.
    op.execute("ALTER TABLE loomdb_archives DROP COLUMN purged_at")
