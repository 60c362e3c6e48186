"""LoomDB initial schema: events (time-partitioned on Postgres), chain head, streams, schemas,
consumers, archive manifests; triggers that refuse UPDATE and DELETE of events.

Revision ID: 0001
Revises:
"""

from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

GENESIS = "0" * 64

PG_EVENTS = """
CREATE TABLE loomdb_events (
    position bigint NOT NULL,
    event_id uuid NOT NULL,
    event_type text NOT NULL,
    schema_version text,
    stream_id text NOT NULL,
    stream_version bigint NOT NULL,
    occurred_at timestamptz NOT NULL,
    recorded_at timestamptz NOT NULL,
    correlation_id text,
    causation_id text,
    user_id text,
    session_id text,
    request_id text,
    source_ip text,
    user_agent text,
    compliance_level text,
    cost_center text,
    project_id text,
    authentication_method text,
    roles jsonb NOT NULL,
    access_level text,
    data_classification text,
    geographic_restriction text,
    tags jsonb NOT NULL,
    priority text NOT NULL,
    data jsonb NOT NULL,
    metadata jsonb NOT NULL,
    retention_days integer,
    prev_hash text NOT NULL,
    hash text NOT NULL,
    PRIMARY KEY (position, recorded_at)
) PARTITION BY RANGE (recorded_at)
"""

# Row triggers on the partitioned parent apply to every partition. Deletes are allowed only
# inside a retention transaction that set loomdb.retention_cutoff, and only for older rows;
# archiving normally drops whole partitions, which fires no row trigger.
PG_TRIGGER = """
CREATE FUNCTION loomdb_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    cutoff text := current_setting('loomdb.retention_cutoff', true);
BEGIN
    IF TG_OP = 'DELETE' AND cutoff IS NOT NULL AND cutoff <> ''
       AND OLD.recorded_at < cutoff::timestamptz THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION 'loomdb: events are immutable; % of position % refused', TG_OP, OLD.position
        USING ERRCODE = 'insufficient_privilege';
END
$$;
CREATE TRIGGER loomdb_events_immutable BEFORE UPDATE OR DELETE ON loomdb_events
    FOR EACH ROW EXECUTE FUNCTION loomdb_refuse_change();
CREATE FUNCTION loomdb_refuse_truncate() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'loomdb: events are immutable; TRUNCATE refused' USING ERRCODE = 'insufficient_privilege';
END
$$;
CREATE TRIGGER loomdb_events_no_truncate BEFORE TRUNCATE ON loomdb_events
    FOR EACH STATEMENT EXECUTE FUNCTION loomdb_refuse_truncate();
"""

SQLITE_EVENTS = """
CREATE TABLE loomdb_events (
    position INTEGER PRIMARY KEY,
    event_id TEXT NOT NULL UNIQUE,
    event_type TEXT NOT NULL,
    schema_version TEXT,
    stream_id TEXT NOT NULL,
    stream_version INTEGER NOT NULL,
    occurred_at TEXT NOT NULL,
    recorded_at TEXT NOT NULL,
    correlation_id TEXT,
    causation_id TEXT,
    user_id TEXT,
    session_id TEXT,
    request_id TEXT,
    source_ip TEXT,
    user_agent TEXT,
    compliance_level TEXT,
    cost_center TEXT,
    project_id TEXT,
    authentication_method TEXT,
    roles TEXT NOT NULL,
    access_level TEXT,
    data_classification TEXT,
    geographic_restriction TEXT,
    tags TEXT NOT NULL,
    priority TEXT NOT NULL,
    data TEXT NOT NULL,
    metadata TEXT NOT NULL,
    retention_days INTEGER,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL,
    UNIQUE (stream_id, stream_version)
)
"""

SQLITE_TRIGGERS = [
    "CREATE TABLE loomdb_retention_window (cutoff TEXT NOT NULL)",
    """CREATE TRIGGER loomdb_events_no_update BEFORE UPDATE ON loomdb_events
       BEGIN SELECT RAISE(ABORT, 'loomdb: events are immutable; UPDATE refused'); END""",
    """CREATE TRIGGER loomdb_events_no_delete BEFORE DELETE ON loomdb_events
       WHEN NOT EXISTS (SELECT 1 FROM loomdb_retention_window w WHERE OLD.recorded_at < w.cutoff)
       BEGIN SELECT RAISE(ABORT, 'loomdb: events are immutable; DELETE refused'); END""",
]


def upgrade() -> None:
    pg = op.get_bind().dialect.name == "postgresql"
    big = "bigint" if pg else "INTEGER"
    ts = "timestamptz" if pg else "TEXT"
    js = "jsonb" if pg else "TEXT"
    if pg:
        op.execute(PG_EVENTS)
        op.execute("CREATE INDEX loomdb_events_event_id ON loomdb_events (event_id)")
        # Type + time range + order: recorded_at never decreases with position, so this index
        # also serves "ORDER BY position" within a type (query.py orders by both).
        op.execute(
            "CREATE INDEX loomdb_events_type_time ON loomdb_events (event_type, recorded_at, position)"
        )
        op.execute("CREATE INDEX loomdb_events_stream ON loomdb_events (stream_id, stream_version)")
        op.execute("CREATE INDEX loomdb_events_position ON loomdb_events (position)")
        op.execute(PG_TRIGGER)
    else:
        op.execute(SQLITE_EVENTS)
        op.execute(
            "CREATE INDEX loomdb_events_type_time ON loomdb_events (event_type, recorded_at, position)"
        )
        op.execute("CREATE INDEX loomdb_events_recorded ON loomdb_events (recorded_at)")
        for stmt in SQLITE_TRIGGERS:
            op.execute(stmt)
    op.execute(
        f"CREATE TABLE loomdb_head (id INTEGER PRIMARY KEY CHECK (id = 1), position {big} NOT NULL, "
        f"hash TEXT NOT NULL, recorded_at {ts} NOT NULL)"
    )
    epoch = "'1970-01-01T00:00:00+00:00'" if pg else "'1970-01-01T00:00:00.000000Z'"
    op.execute(
        f"INSERT INTO loomdb_head (id, position, hash, recorded_at) VALUES (1, 0, '{GENESIS}', {epoch})"
    )
    op.execute(
        f"CREATE TABLE loomdb_streams (stream_id TEXT PRIMARY KEY, version {big} NOT NULL, "
        f"last_position {big} NOT NULL)"
    )
    op.execute(
        "CREATE TABLE loomdb_schemas (event_type TEXT NOT NULL, version TEXT NOT NULL, "
        f"schema {js} NOT NULL, "
        f"registered_at {ts} NOT NULL, PRIMARY KEY (event_type, version))"
    )
    op.execute(
        f"CREATE TABLE loomdb_consumers (name TEXT PRIMARY KEY, position {big} NOT NULL, "
        f"updated_at {ts} NOT NULL)"
    )
    serial = "bigserial PRIMARY KEY" if pg else "INTEGER PRIMARY KEY AUTOINCREMENT"
    op.execute(
        f"CREATE TABLE loomdb_archives (id {serial}, period TEXT NOT NULL UNIQUE, "
        f"first_position {big} NOT NULL, last_position {big} NOT NULL, first_prev_hash TEXT NOT NULL, "
        f"last_hash TEXT NOT NULL, event_count INTEGER NOT NULL, uri TEXT NOT NULL, sha256 TEXT NOT NULL, "
        f"period_start {ts} NOT NULL, period_end {ts} NOT NULL, archived_at {ts} NOT NULL, "
        f"expires_at {ts} NOT NULL)"
    )


def downgrade() -> None:
    """Drops the whole store, audit trail included: for a fresh database only. Archive first."""
    pg = op.get_bind().dialect.name == "postgresql"
    for table in (
        "loomdb_archives",
        "loomdb_consumers",
        "loomdb_schemas",
        "loomdb_streams",
        "loomdb_head",
        "loomdb_events",
    ):
        op.execute(f"DROP TABLE IF EXISTS {table}" + (" CASCADE" if pg else ""))
    if pg:
        op.execute("DROP FUNCTION IF EXISTS loomdb_refuse_change()")
        op.execute("DROP FUNCTION IF EXISTS loomdb_refuse_truncate()")
    else:
        op.execute("DROP TABLE IF EXISTS loomdb_retention_window")
