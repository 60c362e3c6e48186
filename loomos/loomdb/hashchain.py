"""The hash chain: every event carries the SHA-256 of its own canonical form, which includes
its position and its predecessor's hash. Editing, inserting or deleting a row behind LoomDB's
back breaks the chain at that row, and `verify_chain` names the first row where it breaks.

The canonical form is compact JSON with sorted keys, timestamps as UTC with microseconds and
UUIDs as lowercase text, so both backends (and archive files) hash identically.
"""

from __future__ import annotations

import functools
import hashlib
import json
import operator
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from loomos.models.events import GENESIS_HASH

# Every stored column except `hash` itself, in a fixed order.
HASHED_COLUMNS: tuple[str, ...] = (
    "position",
    "event_id",
    "event_type",
    "schema_version",
    "stream_id",
    "stream_version",
    "occurred_at",
    "recorded_at",
    "correlation_id",
    "causation_id",
    "user_id",
    "session_id",
    "request_id",
    "source_ip",
    "user_agent",
    "compliance_level",
    "cost_center",
    "project_id",
    "authentication_method",
    "roles",
    "access_level",
    "data_classification",
    "geographic_restriction",
    "tags",
    "priority",
    "data",
    "metadata",
    "retention_days",
    "prev_hash",
)
EVENT_COLUMNS: tuple[str, ...] = (*HASHED_COLUMNS, "hash")


@functools.lru_cache(maxsize=4096)
def string_list_text(values: tuple[str, ...]) -> str:
    """JSON text of a roles or tags list. Events of one source repeat the same few lists, so
    the encoding is cached instead of redone for every row written."""
    return _canonical_json(list(values))


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
_canonical_json_reference = _ENCODER.encode


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


_canonical_json: Callable[[Any], str] = _build_fast_encoder() or _canonical_json_reference
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


def _json_normal(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _json_normal(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_normal(v) for v in value]
    if isinstance(value, float):
        return _number(value)
    return value


def json_text(value: Any) -> str:
    """Canonical JSON of a data or metadata value: sorted keys, compact, numbers normalised. The
    same text is hashed and stored, so it is serialised once per event."""
    if not value and isinstance(value, dict):
        return "{}"  # most events' metadata: skip the encoder
    text = _canonical_json(value)
    if _maybe_unstable(text):
        text = _canonical_json(_json_normal(value))
    return text


SCALAR_COLUMNS = tuple(c for c in HASHED_COLUMNS if c not in ("data", "metadata"))
# The audit and security context: a run of SCALAR_COLUMNS that both append paths (the row
# path and the cached COPY fragments) take from context_key, so their order is defined once.
CONTEXT_COLUMNS = SCALAR_COLUMNS[
    SCALAR_COLUMNS.index("user_id") : SCALAR_COLUMNS.index("geographic_restriction") + 1
]
_I_ROLES = CONTEXT_COLUMNS.index("roles")


def context_key(e: Any) -> tuple[Any, ...]:
    """An event's CONTEXT_COLUMNS values, roles as a tuple (hashable: a cache key)."""
    ctx, sec = e.context, e.security
    return (
        ctx.user_id,
        ctx.session_id,
        ctx.request_id,
        ctx.source_ip,
        ctx.user_agent,
        ctx.compliance_level,
        ctx.cost_center,
        ctx.project_id,
        sec.authentication_method,
        tuple(sec.roles),
        sec.access_level,
        sec.data_classification,
        sec.geographic_restriction,
    )


def context_values(key: tuple[Any, ...]) -> list[Any]:
    """context_key's values as they are hashed (roles as a JSON list)."""
    values = list(key)
    values[_I_ROLES] = list(key[_I_ROLES])
    return values


_I_EVENT_ID = SCALAR_COLUMNS.index("event_id")
_I_OCCURRED = SCALAR_COLUMNS.index("occurred_at")
_I_RECORDED = SCALAR_COLUMNS.index("recorded_at")
_SCALARS = operator.itemgetter(*SCALAR_COLUMNS)


def canonical_bytes(row: dict[str, Any]) -> bytes:
    """The hashed form: a JSON array of the scalar columns (roles and tags are lists of strings),
    then data and metadata as canonical JSON, separated by U+001E, which JSON text never holds
    unescaped."""
    values = list(_SCALARS(row))
    values[_I_EVENT_ID] = str(values[_I_EVENT_ID])
    values[_I_OCCURRED] = iso(values[_I_OCCURRED])
    values[_I_RECORDED] = row.get("recorded_iso") or iso(values[_I_RECORDED])
    head = _canonical_json(values)
    data = row.get("data_json") or json_text(row["data"])
    metadata = row.get("metadata_json") or json_text(row["metadata"])
    return f"{head}\x1e{data}\x1e{metadata}".encode()


def event_hash(row: dict[str, Any]) -> str:
    return hashlib.sha256(canonical_bytes(row)).hexdigest()


def hash_values(scalars: list[Any], data_json: str, metadata_json: str) -> str:
    """event_hash for an append that already holds the scalar columns in SCALAR_COLUMNS order
    (event_id and timestamps as the text canonical_bytes makes of them) and the canonical JSON
    of data and metadata: the same bytes, without building and re-reading a row first."""
    head = _canonical_json(scalars)
    return hashlib.sha256(f"{head}\x1e{data_json}\x1e{metadata_json}".encode()).hexdigest()


def json_fragment(values: list[Any]) -> str:
    """The canonical JSON of `values` without the brackets: the text those values take inside
    the hashed scalar array. Encoding the whole array is exactly "[" + its items' texts joined
    by "," + "]", so an append can cache the fragments of values that repeat (an event source's
    audit and security context, its tags) and join them: the same bytes as hash_values."""
    return _canonical_json(values)[1:-1]


def hash_text(head: str, data_json: str, metadata_json: str) -> str:
    """hash_values for a scalar array already encoded (`head`, brackets included)."""
    return hashlib.sha256(f"{head}\x1e{data_json}\x1e{metadata_json}".encode()).hexdigest()


@dataclass
class ChainProblem:
    position: int
    kind: str  # altered | inserted | deleted | reordered | truncated
    detail: str


@dataclass
class VerifyReport:
    ok: bool = True
    checked: int = 0
    first_position: int | None = None
    last_position: int | None = None
    head_hash: str = GENESIS_HASH
    archives_checked: int = 0
    problem: ChainProblem | None = None
    notes: list[str] = field(default_factory=list)

    def fail(self, position: int, kind: str, detail: str) -> VerifyReport:
        if self.problem is None:
            self.ok = False
            self.problem = ChainProblem(position, kind, detail)
        return self

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "checked": self.checked,
            "first_position": self.first_position,
            "last_position": self.last_position,
            "head_hash": self.head_hash,
            "archives_checked": self.archives_checked,
            "problem": None if self.problem is None else vars(self.problem),
            "notes": self.notes,
        }


class ChainWalker:
    """Walks rows in position order and stops at the first break.

    Classifies the break so an auditor knows where to look: a row whose own hash does not match
    its content was *altered*; a row whose prev_hash does not link to the row before it, while
    the row after it links to that earlier row, was *inserted*; a missing position means a row
    was *deleted*. Since the position is hashed, an attacker who makes room for a forged row (or
    closes the gap after a deletion) by renumbering later rows breaks the first renumbered row's
    hash; the walker then re-hashes that row at nearby positions, and when it matches at an
    earlier (later) position that links to a row it has seen, reports the rows in between as
    inserted (deleted) instead of calling the renumbered row altered.
    """

    # How far a renumbering is traced back; beyond it the break is still found, as "altered".
    MAX_SHIFT = 64

    def __init__(self, report: VerifyReport, expected_position: int, expected_prev: str):
        self.report = report
        self.next_position = expected_position
        self.prev_hash = expected_prev
        self.prev_prev_hash: str | None = None
        # hash -> position of the last MAX_SHIFT accepted rows (and the chain's starting point).
        self._recent: dict[str, int] = {expected_prev: expected_position - 1}
        self._recent_order: deque[str] = deque([expected_prev])

    def _remember(self, h: str, pos: int) -> None:
        self._recent[h] = pos
        self._recent_order.append(h)
        if len(self._recent_order) > self.MAX_SHIFT + 1:
            self._recent.pop(self._recent_order.popleft(), None)

    def _renumbered(self, row: dict[str, Any], pos: int) -> bool:
        """Report an insertion or deletion hidden by renumbering, if re-hashing `row` at another
        position proves one; False when it does not."""
        r = self.report
        for delta in range(1, self.MAX_SHIFT + 1):
            earlier = pos - delta
            linked = self._recent.get(row["prev_hash"])
            if linked == earlier - 1 and event_hash({**row, "position": earlier}) == row["hash"]:
                if earlier == self.next_position:
                    # Nothing was slipped in: the rows were only moved up, leaving a gap.
                    r.fail(
                        earlier,
                        "altered",
                        f"events from position {earlier} on were renumbered: the event now at "
                        f"position {pos} was written at position {earlier}",
                    )
                    return True
                # The row was at `earlier`; positions earlier..pos-1 were slipped in before it.
                # The slipped-in rows were accepted on the way: they no longer count as verified.
                r.checked -= pos - earlier
                r.last_position = earlier - 1 if r.checked else None
                r.first_position = r.first_position if r.checked else None
                r.fail(
                    earlier,
                    "inserted",
                    f"positions {earlier}..{pos - 1} are not part of the chain: the event now at "
                    f"position {pos} was written at position {earlier}",
                )
                return True
            later = pos + delta
            if row["prev_hash"] != self.prev_hash and event_hash({**row, "position": later}) == row["hash"]:
                r.fail(
                    pos,
                    "deleted",
                    f"positions {pos}..{later - 1} are missing: the event now at position {pos} was "
                    f"written at position {later} and later events were renumbered",
                )
                return True
        return False

    def feed(self, row: dict[str, Any]) -> bool:
        """Check one row; False once a problem was found (the report holds it)."""
        r = self.report
        pos = int(row["position"])
        own = event_hash(row)
        if own != row["hash"]:
            if not self._renumbered(row, pos):
                r.fail(pos, "altered", f"position {pos}: stored hash does not match the event's content")
            return False
        if pos < self.next_position:
            r.fail(pos, "inserted", f"position {pos} appears twice or out of order")
            return False
        if pos > self.next_position:
            if row["prev_hash"] == self.prev_hash:
                r.fail(
                    self.next_position,
                    "inserted",
                    f"position {pos} claims to follow position {self.next_position - 1} directly",
                )
            else:
                r.fail(
                    self.next_position, "deleted", f"positions {self.next_position}..{pos - 1} are missing"
                )
            return False
        if row["prev_hash"] != self.prev_hash:
            r.fail(
                pos,
                "inserted" if self.prev_prev_hash == row["prev_hash"] else "altered",
                f"position {pos}: prev_hash does not link to position {pos - 1}",
            )
            return False
        if r.first_position is None:
            r.first_position = pos
        r.last_position = pos
        r.checked += 1
        self.prev_prev_hash = self.prev_hash
        self.prev_hash = row["hash"]
        self.next_position = pos + 1
        self._remember(row["hash"], pos)
        return True

    def feed_all(self, rows: Iterable[dict[str, Any]]) -> bool:
        return all(self.feed(row) for row in rows)
