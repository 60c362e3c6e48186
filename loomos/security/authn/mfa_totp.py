"""TOTP (RFC 6238, pyotp): 30 s steps, 6 digits, one step of drift either way.

A code is accepted at most once: the step it matched is stored, and a code of that step or an
earlier one is refused as reused, even within its window (the update is conditional, so two
requests racing with one code cannot both pass). The secret stays on the server; enrolment
returns it once, inside the otpauth:// URI and its QR code (SVG, segno), and stays pending
beside any confirmed secret until a first code confirms it.
"""

from __future__ import annotations

import hmac
import io
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import pyotp
import segno
from sqlalchemy import or_, select, update
from sqlalchemy.engine import Engine

from loomos.security.authn import tables as t

Clock = Callable[[], datetime]
STEP_S = 30
WINDOW = 1
_CODE = re.compile(r"^\d{6}$")


@dataclass(frozen=True)
class TotpEnrolment:
    uri: str
    qr_svg: str


class Totp:
    def __init__(self, engine: Engine, issuer: str, clock: Clock) -> None:
        self.engine = engine
        self.issuer = issuer
        self.clock = clock

    def enrolled(self, user_id: str) -> bool:
        with self.engine.connect() as conn:
            secret = conn.execute(
                select(t.totp_secrets.c.secret).where(t.totp_secrets.c.user_id == user_id)
            ).scalar()
        return secret is not None

    def begin(self, user_id: str, username: str) -> TotpEnrolment:
        secret = pyotp.random_base32()
        uri = pyotp.TOTP(secret, interval=STEP_S).provisioning_uri(name=username, issuer_name=self.issuer)
        with self.engine.begin() as conn:
            found = conn.execute(
                update(t.totp_secrets)
                .where(t.totp_secrets.c.user_id == user_id)
                .values(pending_secret=secret)
            )
            if found.rowcount == 0:
                conn.execute(
                    t.totp_secrets.insert().values(
                        user_id=user_id, pending_secret=secret, created_at=self.clock()
                    )
                )
        buffer = io.BytesIO()
        segno.make(uri, error="m").save(buffer, kind="svg", scale=4, xmldecl=False)
        return TotpEnrolment(uri=uri, qr_svg=buffer.getvalue().decode())

    def confirm(self, user_id: str, code: str) -> str | None:
        """Make the pending secret the user's; None if done, else why not."""
        with self.engine.connect() as conn:
            pending = conn.execute(
                select(t.totp_secrets.c.pending_secret).where(t.totp_secrets.c.user_id == user_id)
            ).scalar()
        if pending is None:
            return "no TOTP enrolment is pending"
        step = self._matching_step(pending, code)
        if step is None:
            return "invalid code"
        with self.engine.begin() as conn:
            conn.execute(
                update(t.totp_secrets)
                .where(t.totp_secrets.c.user_id == user_id, t.totp_secrets.c.pending_secret == pending)
                .values(secret=pending, pending_secret=None, confirmed_at=self.clock(), last_used_step=step)
            )
        return None

    def verify(self, user_id: str, code: str) -> str | None:
        """None if `code` is a current, unused code of the user's secret, else why not."""
        with self.engine.connect() as conn:
            row = conn.execute(
                select(t.totp_secrets.c.secret, t.totp_secrets.c.last_used_step).where(
                    t.totp_secrets.c.user_id == user_id
                )
            ).first()
        if row is None or row.secret is None:
            return "no TOTP enrolled"
        step = self._matching_step(row.secret, code)
        if step is None:
            return "invalid code"
        if row.last_used_step is not None and step <= row.last_used_step:
            return "code already used"
        with self.engine.begin() as conn:
            done = conn.execute(
                update(t.totp_secrets)
                .where(
                    t.totp_secrets.c.user_id == user_id,
                    or_(t.totp_secrets.c.last_used_step.is_(None), t.totp_secrets.c.last_used_step < step),
                )
                .values(last_used_step=step)
            )
        return None if done.rowcount == 1 else "code already used"

    def remove(self, user_id: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(t.totp_secrets.delete().where(t.totp_secrets.c.user_id == user_id))

    def _matching_step(self, secret: str, code: str) -> int | None:
        if not _CODE.match(code or ""):
            return None
        totp = pyotp.TOTP(secret, interval=STEP_S)
        now_step = int(self.clock().timestamp()) // STEP_S
        for step in range(now_step - WINDOW, now_step + WINDOW + 1):
            if hmac.compare_digest(totp.at(step * STEP_S), code):
                return step
        return None
