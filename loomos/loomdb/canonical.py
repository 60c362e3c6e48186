"""Canonical text of the values LoomDB stores and hashes.

Two JSON forms live here:

- `json_text`: what is stored (SQLite's TEXT columns, the jsonb text sent to Postgres) and what
  hash version 1 hashed: compact JSON with keys sorted by code point, integral floats written as
  the integer their text denotes (jsonb gives 3.0 back as 3, 1e16 as 10**16), ints exact at any
  size, other floats in Python's shortest round-trip form.
- `jcs_text`: RFC 8785 (JSON Canonicalization Scheme), what hash version 2 hashes, so that any
  JCS implementation can re-derive a hash. For the values an event holds it differs from
  json_text only in small floats (Python writes 1e-07, JCS 1e-7) and in the order of keys that
  hold characters beyond U+FFFF (JCS sorts by UTF-16 code units), so appends derive it from the
  json_text they make anyway, with two substring tests (`jcs_from_json_text`).

Timestamps are ISO 8601 in UTC with microseconds and "+00:00" (`iso`), UUIDs lowercase text.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import rfc8785


def iso(ts: datetime) -> str:
    return ts.astimezone(UTC).isoformat(timespec="microseconds")


# The append encoders count time in microseconds from 2000-01-01 UTC (Postgres's timestamp
# epoch, what binary COPY wants) and build iso()'s text from that count.
EPOCH_2000 = datetime(2000, 1, 1, tzinfo=UTC)
MICROSECOND = timedelta(microseconds=1)


def iso_second(second: int) -> str:
    """iso()'s text of the UTC time `second` seconds after EPOCH_2000, up to the decimal point:
    iso() of that second plus microseconds is this + the six digits + "+00:00". The encoders
    make it once per distinct second of a batch."""
    text = (EPOCH_2000 + timedelta(seconds=second)).isoformat(timespec="microseconds")
    assert text.endswith(".000000+00:00")
    return text[:-12]


# One encoder, built once: json.dumps with non-default options builds a new one per call.
_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)
canonical_json_reference: Callable[[Any], str] = _ENCODER.encode


def _build_fast_encoder() -> Callable[[Any], str] | None:
    """JSONEncoder.encode builds a new C encoder for every call (most of its cost on small
    values); this builds the same C encoder once, with exactly the arguments encode() passes
    it, so the text is identical by construction (tests compare it with encode() on every
    kind of value). Cycle detection is off: validated events are trees (depth-limited)."""
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:
        return None
    enc = _ENCODER
    iterencode = make(
        None,
        enc.default,
        json.encoder.encode_basestring,
        None,
        enc.key_separator,
        enc.item_separator,
        enc.sort_keys,
        enc.skipkeys,
        enc.allow_nan,
    )
    basestring = json.encoder.encode_basestring
    join = "".join

    def encode(o: Any) -> str:
        if isinstance(o, str):
            return basestring(o)
        return join(iterencode(o, 0))

    return encode


# Compact JSON, keys sorted by code point: canonical_json_reference's text, faster.
canonical_json: Callable[[Any], str] = _build_fast_encoder() or canonical_json_reference


@functools.lru_cache(maxsize=4096)
def string_list_text(values: tuple[str, ...]) -> str:
    """JSON text of a roles or tags list. Events of one source repeat the same few lists, so
    the encoding is cached instead of redone for every row written."""
    return canonical_json(list(values))


def json_fragment(values: list[Any]) -> str:
    """The canonical JSON of `values` without the brackets: the text those values take inside
    a hashed array. Encoding a whole array is exactly "[" + its items' texts joined by "," +
    "]", so an append can cache the fragments of values that repeat (an event source's audit
    and security context, its tags) and join them."""
    return canonical_json(values)[1:-1]


# A number may not survive a jsonb round trip unchanged only when it is an integral float:
# compact JSON writes "1.0" followed by , } or ], and "1e+16" from 1e16 up, which jsonb (an exact
# decimal) gives back as 1.0 or 10000000000000000. Plain substring tests are much cheaper than
# a regular expression; a string that happens to contain such text only costs a second pass.


def _maybe_unstable(text: str) -> bool:
    return ".0," in text or ".0}" in text or ".0]" in text or "e+" in text


def _number(value: Any) -> Any:
    """Numbers as both backends give them back. jsonb keeps the exact decimal of the JSON text,
    so an integral float may return as an int, and 1e16 (written "1e+16") as 10000000000000000.
    An integral float is therefore written as the exact integer its JSON text denotes; ints stay
    exact at any size (never rounded through a float: 2**60 + 1 must not hash like 2**60) and
    other floats keep their shortest round-trip form, which jsonb returns unchanged."""
    if isinstance(value, float) and value.is_integer():
        return int(Decimal(repr(value)))
    return value


def json_normal(value: Any) -> Any:
    """`value` as it reads back from either backend: integral floats as ints (see _number)."""
    if isinstance(value, dict):
        return {k: json_normal(v) for k, v in value.items()}
    if isinstance(value, list):
        return [json_normal(v) for v in value]
    if isinstance(value, float):
        return _number(value)
    return value


def json_text(value: Any) -> str:
    """Canonical JSON of a data or metadata value: sorted keys, compact, numbers normalised. The
    same text is stored (and was hashed by hash version 1), so it is serialised once per event."""
    if not value and isinstance(value, dict):
        return "{}"  # most events' metadata: skip the encoder
    text = canonical_json(value)
    if _maybe_unstable(text):
        text = canonical_json(json_normal(value))
    return text


# --- RFC 8785 (JCS) --------------------------------------------------------------------------
# JCS writes numbers as ECMAScript writes IEEE doubles. An event's ints are exact at any size,
# which no double holds beyond 2**53 (rfc8785 refuses such ints): those are written with all
# their decimal digits, as json_text writes them. No JCS output is affected (JCS has no form for
# such a value), and no two values share a text: every other number JCS writes is either an
# int within +-(2**53 - 1) or a non-integral float, which has a "." or an "e".
_EXPONENT = re.compile(r"\de-")
_BEYOND_BMP = re.compile("[\U00010000-\U0010ffff]")


def jcs_from_json_text(text: str, value: Any) -> str:
    """jcs_text(value), given json_text(value) (`text`). json_text's ints and integral floats
    are already JCS's digits (or the exact digits above), its strings are escaped exactly as JCS
    escapes them and its keys are in JCS's order unless a key holds a character beyond U+FFFF;
    what remains is a float Python writes with an exponent (below 1e-4; larger exponents only
    come from integral floats, which json_text writes as ints). Both show in the text; when
    either does (or a string merely looks like it), the value is encoded again by jcs_text.

    The append encoders call this for every event: `"e-" in text` is a C search and isascii
    reads a flag of the string, so for nearly every event that is the whole cost."""
    if ("e-" in text and _EXPONENT.search(text)) or (not text.isascii() and _BEYOND_BMP.search(text)):
        return jcs_text(value)
    return text


def jcs_text(value: Any) -> str:
    """RFC 8785 canonical JSON of a data or metadata value as the backends give it back
    (json_normal: integral floats as ints), by the rfc8785 package; ints beyond
    +-(2**53 - 1), which it refuses, are written with all their digits (see above)."""
    normal = json_normal(value)
    try:
        return rfc8785.dumps(normal).decode()
    except rfc8785.IntegerDomainError:
        return _jcs_exact_ints(normal)


def _utf16_key(item: tuple[str, Any]) -> bytes:
    return item[0].encode("utf-16-be")


def _jcs_exact_ints(value: Any) -> str:
    """jcs_text for a value holding ints rfc8785 refuses: rfc8785 writes every other scalar;
    objects are ordered as RFC 8785 section 3.2.3 orders them (by UTF-16 code units)."""
    if isinstance(value, dict):
        items = sorted(value.items(), key=_utf16_key)
        return "{" + ",".join(f"{_jcs_exact_ints(k)}:{_jcs_exact_ints(v)}" for k, v in items) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(_jcs_exact_ints(v) for v in value) + "]"
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return rfc8785.dumps(value).decode()
