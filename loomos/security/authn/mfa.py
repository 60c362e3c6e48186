"""MFA challenges: a password login that still needs its second factor, a WebAuthn
registration in progress, an SMS number being confirmed.

A challenge id is a bearer secret (`loomos_mfa_...`, stored hashed) that is good for
`challenge_ttl_s`, for one successful answer, and for at most MAX_ATTEMPTS wrong ones. SMS
codes are sent by POSTing {"to", "message"} to `mfa.sms_gateway_url`; without one the sms
method is refused when LoomCtl starts.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import httpx
from sqlalchemy import select, update
from sqlalchemy.engine import Engine

from loomos.security.authn import tables as t
from loomos.security.authn.audit import RequestContext
from loomos.security.authn.errors import AuthnConfigError, LoginFailed
from loomos.security.authn.secrets_format import CHALLENGE_PREFIX, SecretHasher, new_secret
from loomos.security.authn.settings import MfaSettings

Clock = Callable[[], datetime]
MAX_ATTEMPTS = 5


def check_sms_config(settings: MfaSettings) -> None:
    if "sms" in settings.methods and not settings.sms_gateway_url:
        raise AuthnConfigError(
            "security.authn.mfa.methods includes sms but no SMS gateway configured "
            "(set security.authn.mfa.sms_gateway_url, LOOMOS_AUTHN_MFA_SMS_GATEWAY_URL)"
        )


@dataclass(frozen=True)
class Challenge:
    id_hash: str
    user_id: str
    purpose: str
    auth_method: str | None
    webauthn_challenge: bytes | None
    sms_code_hash: str | None
    phone: str | None
    directory_roles: dict[str, list[str]] | None


class Challenges:
    def __init__(self, engine: Engine, hasher: SecretHasher, settings: MfaSettings, clock: Clock) -> None:
        self.engine = engine
        self.hash = hasher
        self.settings = settings
        self.clock = clock

    def create(
        self,
        user_id: str,
        purpose: str,
        ctx: RequestContext,
        *,
        auth_method: str | None = None,
        webauthn_challenge: bytes | None = None,
        sms_code: str | None = None,
        phone: str | None = None,
        directory_roles: dict[str, list[str]] | None = None,
    ) -> str:
        ctx = ctx.bounded()
        secret = new_secret(CHALLENGE_PREFIX)
        now = self.clock()
        with self.engine.begin() as conn:
            conn.execute(
                t.mfa_challenges.insert().values(
                    id_hash=self.hash(secret),
                    user_id=user_id,
                    purpose=purpose,
                    auth_method=auth_method,
                    webauthn_challenge=webauthn_challenge,
                    sms_code_hash=_code_hash(sms_code) if sms_code else None,
                    phone=phone,
                    directory_roles=directory_roles,
                    source_ip=ctx.source_ip,
                    user_agent=ctx.user_agent,
                    attempts=0,
                    created_at=now,
                    expires_at=now + timedelta(seconds=self.settings.challenge_ttl_s),
                )
            )
        return secret

    def open(self, challenge_id: str, purpose: str) -> Challenge:
        """The live challenge `challenge_id`, counting this attempt; LoginFailed if there is
        none (unknown, expired, used, or too many wrong answers)."""
        if not challenge_id.startswith(CHALLENGE_PREFIX) or len(challenge_id) > 100:
            raise LoginFailed("unknown or expired MFA challenge")
        key = self.hash(challenge_id)
        with self.engine.begin() as conn:
            row = (
                conn.execute(
                    select(t.mfa_challenges).where(t.mfa_challenges.c.id_hash == key).with_for_update()
                )
                .mappings()
                .first()
            )
            if (
                row is None
                or row["purpose"] != purpose
                or row["consumed_at"] is not None
                or t.as_utc(row["expires_at"]) <= self.clock()  # type: ignore[operator]
                or row["attempts"] >= MAX_ATTEMPTS
            ):
                raise LoginFailed("unknown or expired MFA challenge")
            conn.execute(
                update(t.mfa_challenges)
                .where(t.mfa_challenges.c.id_hash == key)
                .values(attempts=row["attempts"] + 1)
            )
        return Challenge(
            id_hash=key,
            user_id=row["user_id"],
            purpose=row["purpose"],
            auth_method=row["auth_method"],
            webauthn_challenge=row["webauthn_challenge"],
            sms_code_hash=row["sms_code_hash"],
            phone=row["phone"],
            directory_roles=row["directory_roles"],
        )

    def consume(self, challenge: Challenge) -> bool:
        """Mark it answered; False if another request got there first."""
        with self.engine.begin() as conn:
            done = conn.execute(
                update(t.mfa_challenges)
                .where(
                    t.mfa_challenges.c.id_hash == challenge.id_hash, t.mfa_challenges.c.consumed_at.is_(None)
                )
                .values(consumed_at=self.clock())
            )
        return done.rowcount == 1


def _code_hash(code: str) -> str:
    return hashlib.sha256(code.encode()).hexdigest()


def sms_code_matches(challenge: Challenge, code: str) -> bool:
    return challenge.sms_code_hash is not None and hmac.compare_digest(
        challenge.sms_code_hash, _code_hash(code)
    )


def new_sms_code() -> str:
    return f"{secrets.randbelow(10**6):06d}"


def send_sms(settings: MfaSettings, phone: str, code: str, http: httpx.Client | None = None) -> None:
    check_sms_config(settings)
    client = http or httpx.Client(timeout=10)
    try:
        response = client.post(
            settings.sms_gateway_url,  # type: ignore[arg-type]
            json={"to": phone, "message": f"Your {settings.totp_issuer} code is {code}"},
        )
        response.raise_for_status()
    except httpx.HTTPError as err:
        raise LoginFailed(f"the SMS gateway did not accept the message: {err}") from err
    finally:
        if http is None:
            client.close()
