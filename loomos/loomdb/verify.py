"""Verification: walk the chain from the genesis hash through the archive manifests and every
stored event, and name the first event that was altered, inserted or deleted behind LoomDB's
back (ChainWalker), then check the end of the chain against the head row.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from loomos.loomdb.archives import ArchiveMissing, deep_archive
from loomos.loomdb.errors import LoomDBError
from loomos.loomdb.hashchain import UnknownHashVersion, event_hash
from loomos.models.events import GENESIS_HASH

if TYPE_CHECKING:
    from loomos.loomdb.store import EventStore


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
        try:
            own = event_hash(row)
        except UnknownHashVersion as exc:
            r.fail(pos, "altered", f"position {pos}: {exc}")
            return False
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


def verify_store(store: EventStore, deep_archives: bool = False) -> VerifyReport:
    """EventStore.verify: the archive manifests in chain order (with `deep_archives`, every
    archived event re-hashed), then the table in position order from one snapshot that also
    gives the head."""
    report = VerifyReport()
    expected_pos, expected_prev = 1, GENESIS_HASH
    for m in store.archives():
        if m["first_position"] != expected_pos or m["first_prev_hash"] != expected_prev:
            return report.fail(
                expected_pos,
                "deleted",
                f"archive {m['period']} does not continue the chain at position {expected_pos}",
            )
        if deep_archives:
            # A purged (or expired and gone) archive has no events left to re-hash: its
            # manifest's hashes link the chain. An object missing before its expiry is a
            # deletion.
            try:
                found = deep_archive(store, m)
            except LoomDBError as exc:
                kind = "deleted" if isinstance(exc, ArchiveMissing) else "altered"
                return report.fail(expected_pos, kind, f"archive {m['period']}: {exc}")
            if found.note is not None:
                report.notes.append(f"archive {m['period']}: {found.note}")
            if found.rows is not None:
                walker = ChainWalker(report, expected_pos, expected_prev)
                if not walker.feed_all(found.rows):
                    return report
                if walker.prev_hash != m["last_hash"] or walker.next_position != m["last_position"] + 1:
                    return report.fail(
                        m["last_position"],
                        "deleted",
                        f"archive {m['period']} ends before its manifest says",
                    )
        report.archives_checked += 1
        expected_pos, expected_prev = m["last_position"] + 1, m["last_hash"]
    walker = ChainWalker(report, expected_pos, expected_prev)
    with store.backend.verify_rows() as (head, rows):
        if not walker.feed_all(rows):
            return report
    last_pos = walker.next_position - 1
    report.head_hash = walker.prev_hash
    if last_pos < head.position:
        return report.fail(
            last_pos + 1,
            "deleted",
            f"the head says {head.position} events, the table ends at position {last_pos}",
        )
    if last_pos > head.position:
        return report.fail(
            head.position + 1,
            "inserted",
            f"positions after the head ({head.position}) were written behind LoomDB's back",
        )
    if walker.prev_hash != head.hash:
        return report.fail(last_pos, "altered", "the last event's hash differs from the recorded head")
    return report
