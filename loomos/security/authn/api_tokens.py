"""Personal API tokens for automation and workers: created by a user for themselves, scoped
to a subset of the Permission values (the scope narrows what the owner may do, never widens
it), with an expiry, stored hashed, listed by prefix and name, revoked at will.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.engine import Engine, RowMapping

from loomos.models.permissions import Permission
from loomos.security.authn import tables as t
from loomos.security.authn.secrets_format import API_TOKEN_PREFIX, SecretHasher, new_secret, shown_prefix
from loomos.security.authn.settings import TokenSettings

Clock = Callable[[], datetime]
MAX_TOKENS_PER_USER = 100


class TokenRequestError(ValueError):
    """A token that cannot be issued as asked (unknown scope, expiry too far, too many)."""


@dataclass(frozen=True)
class ApiToken:
    id: str
    user_id: str
    name: str
    prefix: str
    scopes: list[str] | None
    created_at: datetime
    expires_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None

    @classmethod
    def from_row(cls, row: RowMapping) -> ApiToken:
        return cls(
            id=row["id"],
            user_id=row["user_id"],
            name=row["name"],
            prefix=row["prefix"],
            scopes=list(row["scopes"]) if row["scopes"] is not None else None,
            created_at=t.as_utc(row["created_at"]),  # type: ignore[arg-type]
            expires_at=t.as_utc(row["expires_at"]),  # type: ignore[arg-type]
            last_used_at=t.as_utc(row["last_used_at"]),
            revoked_at=t.as_utc(row["revoked_at"]),
        )


def check_scopes(scopes: Iterable[str] | None) -> list[str] | None:
    if scopes is None:
        return None
    known = {p.value for p in Permission}
    wanted = list(dict.fromkeys(scopes))
    unknown = [s for s in wanted if s not in known]
    if unknown:
        raise TokenRequestError(f"unknown permission(s) {unknown}; known: {sorted(known)}")
    return wanted


class ApiTokens:
    def __init__(self, engine: Engine, hasher: SecretHasher, settings: TokenSettings, clock: Clock) -> None:
        self.engine = engine
        self.hash = hasher
        self.settings = settings
        self.clock = clock

    def create(
        self, user_id: str, name: str, scopes: Iterable[str] | None, expires_in_days: int | None
    ) -> tuple[str, ApiToken]:
        """The token (shown once) and its record."""
        days = self.settings.default_expiry_days if expires_in_days is None else expires_in_days
        if not 1 <= days <= self.settings.max_expiry_days:
            raise TokenRequestError(f"expiry must be 1 to {self.settings.max_expiry_days} days, got {days}")
        scope_list = check_scopes(scopes)
        if not name.strip() or len(name) > 100:
            raise TokenRequestError("a token's name is 1-100 characters")
        secret = new_secret(API_TOKEN_PREFIX)
        now = self.clock()
        record = ApiToken(
            id=str(uuid.uuid4()),
            user_id=user_id,
            name=name.strip(),
            prefix=shown_prefix(secret),
            scopes=scope_list,
            created_at=now,
            expires_at=now + timedelta(days=days),
            last_used_at=None,
            revoked_at=None,
        )
        with self.engine.begin() as conn:
            live = conn.execute(
                select(t.api_tokens.c.id).where(
                    t.api_tokens.c.user_id == user_id, t.api_tokens.c.revoked_at.is_(None)
                )
            ).all()
            if len(live) >= MAX_TOKENS_PER_USER:
                raise TokenRequestError(f"at most {MAX_TOKENS_PER_USER} tokens per user: revoke some first")
            conn.execute(t.api_tokens.insert().values(token_hash=self.hash(secret), **record.__dict__))
        return secret, record

    def lookup(self, secret: str) -> ApiToken | None:
        with self.engine.connect() as conn:
            row = (
                conn.execute(select(t.api_tokens).where(t.api_tokens.c.token_hash == self.hash(secret)))
                .mappings()
                .first()
            )
        return ApiToken.from_row(row) if row else None

    def list_for(self, user_id: str, include_revoked: bool = False) -> list[ApiToken]:
        query = select(t.api_tokens).where(t.api_tokens.c.user_id == user_id)
        if not include_revoked:
            query = query.where(t.api_tokens.c.revoked_at.is_(None))
        with self.engine.connect() as conn:
            rows = conn.execute(query.order_by(t.api_tokens.c.created_at)).mappings().all()
        return [ApiToken.from_row(r) for r in rows]

    def get(self, token_id: str) -> ApiToken | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(t.api_tokens).where(t.api_tokens.c.id == token_id)).mappings().first()
        return ApiToken.from_row(row) if row else None

    def revoke(self, token_id: str) -> bool:
        """True if it was live until now."""
        with self.engine.begin() as conn:
            done = conn.execute(
                update(t.api_tokens)
                .where(t.api_tokens.c.id == token_id, t.api_tokens.c.revoked_at.is_(None))
                .values(revoked_at=self.clock())
            )
        return done.rowcount == 1

    def touch(self, token_id: str, when: datetime) -> None:
        with self.engine.begin() as conn:
            conn.execute(update(t.api_tokens).where(t.api_tokens.c.id == token_id).values(last_used_at=when))
