"""WebAuthn (py_webauthn): security keys and platform authenticators as a second factor.

Registration and assertion each answer a challenge LoomCtl made and stored (in an MFA
challenge row), so a response cannot be replayed against another ceremony; the signature
counter is kept and a counter that does not move forward (a cloned key) is refused by the
library. The relying party is `mfa.webauthn_rp_id` and responses must come from one of
`mfa.webauthn_origins`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.engine import Engine
from webauthn import (
    generate_authentication_options,
    generate_registration_options,
    options_to_json,
    verify_authentication_response,
    verify_registration_response,
)
from webauthn.helpers import bytes_to_base64url, parse_authentication_credential_json
from webauthn.helpers.exceptions import (
    InvalidAuthenticationResponse,
    InvalidJSONStructure,
    InvalidRegistrationResponse,
)
from webauthn.helpers.structs import PublicKeyCredentialDescriptor

from loomos.security.authn import tables as t
from loomos.security.authn.settings import MfaSettings

Clock = Callable[[], datetime]
MAX_CREDENTIALS = 20


class WebAuthn:
    def __init__(self, engine: Engine, settings: MfaSettings, clock: Clock) -> None:
        self.engine = engine
        self.settings = settings
        self.clock = clock

    def credential_ids(self, user_id: str) -> list[str]:
        with self.engine.connect() as conn:
            return list(
                conn.execute(
                    select(t.webauthn_credentials.c.id).where(t.webauthn_credentials.c.user_id == user_id)
                ).scalars()
            )

    def registration_options(
        self, user_id: str, username: str, display_name: str | None
    ) -> tuple[bytes, dict[str, Any]]:
        """(challenge, options for navigator.credentials.create) for a new credential."""
        existing = self.credential_ids(user_id)
        if len(existing) >= MAX_CREDENTIALS:
            raise ValueError(f"at most {MAX_CREDENTIALS} WebAuthn credentials per user")
        options = generate_registration_options(
            rp_id=self.settings.webauthn_rp_id,
            rp_name=self.settings.webauthn_rp_name,
            user_name=username,
            user_id=user_id.encode(),
            user_display_name=display_name or username,
            exclude_credentials=[PublicKeyCredentialDescriptor(id=_b64(c)) for c in existing],
        )
        return options.challenge, json.loads(options_to_json(options))

    def register(self, user_id: str, challenge: bytes, credential: dict[str, Any], name: str) -> str | None:
        """Store the new credential; None if done, else why not."""
        try:
            verified = verify_registration_response(
                credential=credential,
                expected_challenge=challenge,
                expected_rp_id=self.settings.webauthn_rp_id,
                expected_origin=self.settings.webauthn_origins,
            )
        except (InvalidRegistrationResponse, InvalidJSONStructure, ValueError, KeyError, TypeError) as err:
            return f"WebAuthn registration refused: {err}"
        with self.engine.begin() as conn:
            conn.execute(
                t.webauthn_credentials.insert().values(
                    id=bytes_to_base64url(verified.credential_id),
                    user_id=user_id,
                    name=(name or "security key")[:100],
                    public_key=verified.credential_public_key,
                    sign_count=verified.sign_count,
                    transports=credential.get("response", {}).get("transports")
                    if isinstance(credential, dict)
                    else None,
                    created_at=self.clock(),
                )
            )
        return None

    def authentication_options(self, user_id: str) -> tuple[bytes, dict[str, Any]]:
        options = generate_authentication_options(
            rp_id=self.settings.webauthn_rp_id,
            allow_credentials=[
                PublicKeyCredentialDescriptor(id=_b64(c)) for c in self.credential_ids(user_id)
            ],
        )
        return options.challenge, json.loads(options_to_json(options))

    def verify(self, user_id: str, challenge: bytes, credential: dict[str, Any]) -> str | None:
        """None if the assertion is good for one of the user's credentials, else why not."""
        try:
            parsed = parse_authentication_credential_json(json.dumps(credential))
        except (InvalidJSONStructure, ValueError, TypeError) as err:
            return f"malformed WebAuthn assertion: {err}"
        credential_id = bytes_to_base64url(parsed.raw_id)
        with self.engine.connect() as conn:
            row = (
                conn.execute(
                    select(t.webauthn_credentials).where(
                        t.webauthn_credentials.c.id == credential_id,
                        t.webauthn_credentials.c.user_id == user_id,
                    )
                )
                .mappings()
                .first()
            )
        if row is None:
            return "unknown WebAuthn credential"
        try:
            verified = verify_authentication_response(
                credential=parsed,
                expected_challenge=challenge,
                expected_rp_id=self.settings.webauthn_rp_id,
                expected_origin=self.settings.webauthn_origins,
                credential_public_key=row["public_key"],
                credential_current_sign_count=row["sign_count"],
            )
        except (InvalidAuthenticationResponse, ValueError) as err:
            return f"WebAuthn assertion refused: {err}"
        with self.engine.begin() as conn:
            conn.execute(
                update(t.webauthn_credentials)
                .where(t.webauthn_credentials.c.id == credential_id)
                .values(sign_count=verified.new_sign_count, last_used_at=self.clock())
            )
        return None


def _b64(credential_id: str) -> bytes:
    from webauthn import base64url_to_bytes

    return base64url_to_bytes(credential_id)
