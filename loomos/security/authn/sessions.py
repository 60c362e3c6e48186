"""Sessions: what a password (or OIDC) login turns into, for the CLI (bearer `loomos_sess_...`)
and browsers (the same token in an HttpOnly cookie).

A session lives `timeout_minutes`; with sliding expiration each use moves the end (written at
most once a minute, so a busy client does not write on every request). Past
`concurrent_sessions_limit` live sessions, the oldest is revoked. MFA is recorded as the time
it was last passed, which the admin rule compares with its grace period.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.engine import Engine, RowMapping

from loomos.security.authn import tables as t
from loomos.security.authn.audit import RequestContext
from loomos.security.authn.secrets_format import SESSION_PREFIX, SecretHasher, new_secret
from loomos.security.authn.settings import SessionSettings

Clock = Callable[[], datetime]
TOUCH_EVERY = timedelta(minutes=1)


@dataclass(frozen=True)
class Session:
    id: str
    user_id: str
    auth_method: str
    created_at: datetime
    last_seen_at: datetime
    expires_at: datetime
    source_ip: str | None
    user_agent: str | None
    mfa_verified_at: datetime | None
    revoked_at: datetime | None
    revoke_reason: str | None = None
    # Roles a directory granted at login (LDAP groups, OIDC groups claim): team -> roles.
    directory_roles: Mapping[str, Sequence[str]] = field(default_factory=dict)

    @classmethod
    def from_row(cls, row: RowMapping) -> Session:
        return cls(
            id=row["id"],
            user_id=row["user_id"],
            auth_method=row["auth_method"],
            created_at=t.as_utc(row["created_at"]),  # type: ignore[arg-type]
            last_seen_at=t.as_utc(row["last_seen_at"]),  # type: ignore[arg-type]
            expires_at=t.as_utc(row["expires_at"]),  # type: ignore[arg-type]
            source_ip=row["source_ip"],
            user_agent=row["user_agent"],
            mfa_verified_at=t.as_utc(row["mfa_verified_at"]),
            revoked_at=t.as_utc(row["revoked_at"]),
            revoke_reason=row["revoke_reason"],
            directory_roles=row["directory_roles"] or {},
        )


class Sessions:
    def __init__(self, engine: Engine, hasher: SecretHasher, settings: SessionSettings, clock: Clock) -> None:
        self.engine = engine
        self.hash = hasher
        self.settings = settings
        self.clock = clock

    @property
    def lifetime(self) -> timedelta:
        return timedelta(minutes=self.settings.timeout_minutes)

    def create(
        self,
        user_id: str,
        auth_method: str,
        ctx: RequestContext,
        *,
        mfa_verified_at: datetime | None = None,
        directory_roles: Mapping[str, Sequence[str]] | None = None,
    ) -> tuple[str, Session, list[str]]:
        """The session token (shown once), its record, and the ids of sessions revoked to stay
        within the concurrent limit."""
        ctx = ctx.bounded()
        secret = new_secret(SESSION_PREFIX)
        now = self.clock()
        session = Session(
            id=str(uuid.uuid4()),
            user_id=user_id,
            auth_method=auth_method,
            created_at=now,
            last_seen_at=now,
            expires_at=now + self.lifetime,
            source_ip=ctx.source_ip,
            user_agent=ctx.user_agent,
            mfa_verified_at=mfa_verified_at,
            revoked_at=None,
            directory_roles=dict(directory_roles or {}),
        )
        revoked: list[str] = []
        with self.engine.begin() as conn:
            values = {k: v for k, v in session.__dict__.items()}
            values["directory_roles"] = {k: list(v) for k, v in session.directory_roles.items()}
            conn.execute(t.sessions.insert().values(token_hash=self.hash(secret), **values))
            limit = self.settings.concurrent_sessions_limit
            if limit:
                live = (
                    conn.execute(
                        select(t.sessions.c.id)
                        .where(
                            t.sessions.c.user_id == user_id,
                            t.sessions.c.revoked_at.is_(None),
                            t.sessions.c.expires_at > now,
                        )
                        .order_by(t.sessions.c.created_at.desc(), t.sessions.c.id)
                    )
                    .scalars()
                    .all()
                )
                revoked = [sid for sid in live if sid != session.id][max(limit - 1, 0) :]
                if revoked:
                    conn.execute(
                        update(t.sessions)
                        .where(t.sessions.c.id.in_(revoked))
                        .values(revoked_at=now, revoke_reason="concurrent_sessions_limit")
                    )
        return secret, session, revoked

    def lookup(self, secret: str) -> Session | None:
        with self.engine.connect() as conn:
            row = (
                conn.execute(select(t.sessions).where(t.sessions.c.token_hash == self.hash(secret)))
                .mappings()
                .first()
            )
        return Session.from_row(row) if row else None

    def get(self, session_id: str) -> Session | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(t.sessions).where(t.sessions.c.id == session_id)).mappings().first()
        return Session.from_row(row) if row else None

    def touch(self, session: Session) -> Session:
        """Record a use; with sliding expiration, move the end. Writes at most once a minute."""
        now = self.clock()
        if now - session.last_seen_at < TOUCH_EVERY:
            return session
        values: dict[str, datetime] = {"last_seen_at": now}
        if self.settings.sliding_expiration:
            values["expires_at"] = now + self.lifetime
        with self.engine.begin() as conn:
            conn.execute(
                update(t.sessions)
                .where(t.sessions.c.id == session.id, t.sessions.c.revoked_at.is_(None))
                .values(**values)
            )
        return Session(**{**session.__dict__, **values})

    def mark_mfa(self, session_id: str, when: datetime) -> None:
        with self.engine.begin() as conn:
            conn.execute(update(t.sessions).where(t.sessions.c.id == session_id).values(mfa_verified_at=when))

    def revoke(self, session_id: str, reason: str) -> bool:
        with self.engine.begin() as conn:
            done = conn.execute(
                update(t.sessions)
                .where(t.sessions.c.id == session_id, t.sessions.c.revoked_at.is_(None))
                .values(revoked_at=self.clock(), revoke_reason=reason)
            )
        return done.rowcount == 1

    def revoke_all(self, user_id: str, reason: str) -> list[str]:
        with self.engine.begin() as conn:
            ids = (
                conn.execute(
                    select(t.sessions.c.id).where(
                        t.sessions.c.user_id == user_id, t.sessions.c.revoked_at.is_(None)
                    )
                )
                .scalars()
                .all()
            )
            if ids:
                conn.execute(
                    update(t.sessions)
                    .where(t.sessions.c.id.in_(ids))
                    .values(revoked_at=self.clock(), revoke_reason=reason)
                )
        return list(ids)
