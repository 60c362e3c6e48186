"""User accounts: local ones (created here, with a password) and those a directory vouches for
(LDAP, OIDC), recorded at their first login so that they can own tokens, have a default team,
and be disabled here. A deleted user is kept, marked, so that its tokens and sessions stop
working and its name stays in the audit trail's past.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.engine import Engine, RowMapping
from sqlalchemy.exc import IntegrityError

from loomos.security.authn import tables as t
from loomos.security.authn.passwords import MAX_USERNAME_LENGTH, USERNAME_PATTERN, Passwords

Clock = Callable[[], datetime]
_USERNAME = re.compile(USERNAME_PATTERN)


class AccountError(ValueError):
    """A request about an account that cannot be carried out (bad name, name taken)."""


@dataclass(frozen=True)
class User:
    id: str
    username: str
    display_name: str | None
    email: str | None
    source: str
    default_team: str | None
    disabled: bool
    deleted_at: datetime | None
    password_hash: str | None
    phone: str | None = None

    @property
    def active(self) -> bool:
        return not self.disabled and self.deleted_at is None

    @classmethod
    def from_row(cls, row: RowMapping) -> User:
        return cls(
            id=row["id"],
            username=row["username"],
            display_name=row["display_name"],
            email=row["email"],
            source=row["source"],
            default_team=row["default_team"],
            disabled=bool(row["disabled"]),
            deleted_at=t.as_utc(row["deleted_at"]),
            password_hash=row["password_hash"],
            phone=row["phone"],
        )


def check_username(username: str) -> str:
    if len(username) > MAX_USERNAME_LENGTH or not _USERNAME.match(username):
        raise AccountError(
            f"a username is 1-{MAX_USERNAME_LENGTH} letters, digits and . _ @ + - (a letter or digit first)"
        )
    return username


class Accounts:
    def __init__(self, engine: Engine, passwords: Passwords, clock: Clock = t.utcnow) -> None:
        self.engine = engine
        self.passwords = passwords
        self.clock = clock

    def get(self, username: str) -> User | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(t.users).where(t.users.c.username == username)).mappings().first()
        return User.from_row(row) if row else None

    def get_by_id(self, user_id: str) -> User | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(t.users).where(t.users.c.id == user_id)).mappings().first()
        return User.from_row(row) if row else None

    def create_local(
        self,
        username: str,
        password: str,
        *,
        display_name: str | None = None,
        default_team: str | None = None,
    ) -> User:
        check_username(username)
        password_hash = self.passwords.hash(password)
        return self._insert(username, "local", password_hash, display_name, None, default_team)

    def ensure_external(
        self,
        username: str,
        source: str,
        *,
        display_name: str | None = None,
        email: str | None = None,
        default_team: str | None = None,
    ) -> User:
        """The account a directory vouched for, created on first sight; name and email follow
        the directory, while disabled/deleted here stay as they are."""
        existing = self.get(username)
        if existing is None:
            try:
                return self._insert(username[:128], source, None, display_name, email, default_team)
            except AccountError:
                existing = self.get(username)  # created by a concurrent first login
                if existing is None:
                    raise
        changes = {
            k: v
            for k, v in (("display_name", display_name), ("email", email))
            if v is not None and getattr(existing, k) != v
        }
        if changes:
            with self.engine.begin() as conn:
                conn.execute(
                    update(t.users)
                    .where(t.users.c.id == existing.id)
                    .values(**changes, updated_at=self.clock())
                )
            existing = self.get(username) or existing
        return existing

    def _insert(
        self,
        username: str,
        source: str,
        password_hash: str | None,
        display_name: str | None,
        email: str | None,
        default_team: str | None,
    ) -> User:
        now = self.clock()
        values = dict(
            id=str(uuid.uuid4()),
            username=username,
            display_name=display_name,
            email=email,
            source=source,
            password_hash=password_hash,
            phone=None,
            default_team=default_team,
            disabled=False,
            created_at=now,
            updated_at=now,
            deleted_at=None,
        )
        try:
            with self.engine.begin() as conn:
                conn.execute(t.users.insert().values(**values))
        except IntegrityError:
            raise AccountError(f"user {username} already exists") from None
        return User(**{k: values[k] for k in User.__dataclass_fields__})  # type: ignore[arg-type]

    def set_password(self, user: User, password: str) -> None:
        self._update(user, password_hash=self.passwords.hash(password))

    def rehash(self, user: User, password: str) -> None:
        """Store a fresh hash when the parameters changed since it was made (after a good login)."""
        if user.password_hash and self.passwords.needs_rehash(user.password_hash):
            self._update(user, password_hash=self.passwords.hasher.hash(password))

    def set_phone(self, user: User, phone: str | None) -> None:
        self._update(user, phone=phone)

    def set_default_team(self, user: User, team: str | None) -> None:
        self._update(user, default_team=team)

    def set_disabled(self, user: User, disabled: bool) -> None:
        self._update(user, disabled=disabled)

    def delete(self, user: User) -> None:
        self._update(user, deleted_at=self.clock(), password_hash=None)

    def _update(self, user: User, **values: object) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                update(t.users).where(t.users.c.id == user.id).values(**values, updated_at=self.clock())
            )
