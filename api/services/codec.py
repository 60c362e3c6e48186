"""The codec server behind /api/v1/codec: the Temporal UI sends the payloads it shows, LoomCtl
answers them decrypted (decode) or encrypted (encode), with the keyring every LoomOS process uses.

The UI's protocol: POST {endpoint}/decode or /encode, body {"payloads": [<Payload as proto3
JSON: metadata values and data base64>]}, header X-Namespace, the answer in the same shape. The
UI calls it from the browser, across origins (UI and LoomCtl are different origins), so CORS
is answered here for the codec routes only: the exact origins of security.crypto
.codec_cors_origins (default: the dev stack's UI), credentials allowed, never "*".

Decoding is cleartext leaving the cluster, so it is fail-closed: every decode is a LoomDB
event (`security.codec.decoded`: who, namespace, how many payloads) written before the answer
leaves; if the event cannot be written, nothing is decoded for the caller.
"""

from __future__ import annotations

import asyncio
from typing import Any

from pydantic import BaseModel, Field

from loomos.api.errors import InvalidInput, LoomCtlError, ServiceUnavailable
from loomos.loomdb import EventStore, NewEvent
from loomos.models.events import AuditContext, SecurityContext
from loomos.models.identity import Identity
from loomos.settings import Settings

DECODED_EVENT = "security.codec.decoded"
ALLOWED_HEADERS = "content-type, x-namespace, authorization, authorization-extras"
PREFLIGHT_MAX_AGE_S = 600


class CodecPayloads(BaseModel):
    """The Temporal UI's codec body: payloads as proto3 JSON."""

    payloads: list[dict[str, Any]] = Field(
        description='each {"metadata": {"encoding": "<base64>", ...}, "data": "<base64>"}'
    )


class NamespaceNotServed(LoomCtlError):
    """The X-Namespace is missing or is not the namespace this LoomCtl serves (403)."""

    status_code = 403


def allowed_origins(settings: Settings) -> set[str]:
    """The origins that may call the codec with credentials: the configured ones, else the dev
    stack's Temporal UI (under both spellings of the loopback host a browser may use)."""
    configured = settings.security.crypto.codec_cors_origins
    if configured:
        return set(configured)
    ui = settings.ui_url
    origins = {ui}
    if settings.temporal.host in ("127.0.0.1", "localhost"):
        port = settings.temporal.ui_port
        origins |= {f"http://127.0.0.1:{port}", f"http://localhost:{port}"}
    return origins


def cors_headers(settings: Settings, origin: str | None) -> dict[str, str]:
    """The CORS headers for an actual request from `origin` (none for an origin not allowed)."""
    if not origin or origin not in allowed_origins(settings):
        return {"Vary": "Origin"}
    return {
        "Access-Control-Allow-Origin": origin,
        "Access-Control-Allow-Credentials": "true",
        "Vary": "Origin",
    }


def preflight_headers(settings: Settings, origin: str | None) -> dict[str, str] | None:
    """The answer to a preflight from `origin`, or None when it may not call the codec."""
    headers = cors_headers(settings, origin)
    if "Access-Control-Allow-Origin" not in headers:
        return None
    return headers | {
        "Access-Control-Allow-Methods": "POST, OPTIONS",
        "Access-Control-Allow-Headers": ALLOWED_HEADERS,
        "Access-Control-Max-Age": str(PREFLIGHT_MAX_AGE_S),
    }


def check_namespace(settings: Settings, namespace: str | None) -> str:
    served = settings.temporal.namespace
    if not namespace:
        raise NamespaceNotServed("the X-Namespace header is missing (the Temporal UI sends it)")
    if namespace != served:
        raise NamespaceNotServed(f"namespace {namespace!r} is not the one this LoomCtl serves ({served!r})")
    return namespace


def payload_codec(state: Any, settings: Settings) -> Any:
    """The app's EncryptionCodec (one per LoomCtl, on app.state), over security.crypto's keyring."""
    codec = getattr(state, "payload_codec", None)
    if codec is None:
        from loomos.security.crypto.codec import EncryptionCodec
        from loomos.security.crypto.keys import key_provider_from_settings

        codec = state.payload_codec = EncryptionCodec(key_provider_from_settings(settings.security.crypto))
    return codec


async def _run(codec_call: Any, body: CodecPayloads) -> tuple[list[Any], int]:
    from loomos.security.crypto.codec import ENCODING, payloads_from_json
    from loomos.security.crypto.errors import IntegrityError, KeyUnavailable

    try:
        payloads = payloads_from_json(body.model_dump())
    except Exception as exc:  # json_format.ParseError, ValueError
        raise InvalidInput(f"payloads are not Temporal Payloads in proto3 JSON: {exc}") from None
    encrypted = sum(1 for p in payloads if p.metadata.get("encoding") == ENCODING)
    try:
        return await asyncio.to_thread(codec_call, payloads), encrypted
    except KeyUnavailable as exc:
        raise ServiceUnavailable(f"cannot decode or encode: {exc}") from None
    except IntegrityError as exc:
        raise InvalidInput(str(exc)) from None


async def decode(
    codec: Any, body: CodecPayloads, namespace: str, identity: Identity, store: EventStore
) -> dict[str, Any]:
    """Decrypt the payloads for `identity`, audited first (see the module's docstring)."""
    from loomos.security.crypto.codec import payloads_to_json

    decoded, encrypted = await _run(codec.decode_sync, body)
    event = NewEvent(
        event_type=DECODED_EVENT,
        stream_id=f"security-codec:{namespace}",
        context=AuditContext(
            user_id=identity.subject[:200],
            session_id=identity.session_id,
            request_id=identity.request_id,
            source_ip=identity.source_ip,
            user_agent=identity.user_agent,
        ),
        security=SecurityContext(authentication_method=identity.auth_method.value),
        tags=["security", "codec"],
        data={
            "subject": identity.subject,
            "team": identity.team,
            "namespace": namespace,
            "payloads": len(decoded),
            "encrypted_payloads": encrypted,
        },
    )
    try:
        await asyncio.to_thread(store.append, event)
    except Exception as exc:
        raise ServiceUnavailable(f"the decode could not be audited, so nothing was decoded: {exc}") from None
    return payloads_to_json(decoded)


async def encode(codec: Any, body: CodecPayloads, settings: Settings) -> dict[str, Any]:
    """Encrypt the payloads (what the UI sends when a user starts or signals a workflow); as
    they are when payload encryption is off, which is what the workers then expect."""
    from loomos.security.crypto.codec import payloads_to_json

    if not settings.security.crypto.payload_encryption:
        return body.model_dump()
    encoded, _ = await _run(codec.encode_sync, body)
    return payloads_to_json(encoded)
